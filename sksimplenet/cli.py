"""Command line interface: ``sksimplenet fit | evaluate | predict | calibrate | export | demo``.

Each command parses its arguments and calls the library: ``fit`` the estimator,
``evaluate`` :func:`sksimplenet.inspection.evaluate`, ``predict``
:func:`sksimplenet.inspection.predict_files`, ``calibrate``
:meth:`~sksimplenet.SimpleNetDetector.calibrate`, ``export`` the ONNX exporter, ``demo``
:func:`sksimplenet.inspection.run_demo`; docs/cli.md shows each with its Python equivalent.
Results (tables, CSV, JSON) go to standard output; progress bars, notes and warnings go to
standard error, and ``--quiet`` (before or after the command) silences them. An error is
one line on standard error, with exit status 2; ``predict`` exits with status 1 when some
images could not be read and the others were scored. ``--help`` and ``--version`` import
no PyTorch.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

from . import __version__
from .config import parse_value

__all__ = ["main", "build_parser"]

LAYOUTS = ("mvtec", "mtd", "visa", "folder")  # sksimplenet.datasets.LAYOUTS, without importing it
#: ``fit`` writes the effective estimator parameters to ``MODEL`` + this suffix.
PARAMS_SUFFIX = ".params.json"
#: Parameters the command line sets itself: not accepted from --set or --config.
_CLI_PARAMS = {"verbose": "--quiet"}
#: predict: exit status when some images could not be read (the others were scored).
EXIT_SOME_FAILED = 1
# sksimplenet.precision.PRECISIONS, repeated so that --help imports no PyTorch (a test checks).
PRECISIONS = ("float32", "bfloat16", "float16", "auto")
PRECISION_HELP = "backbone arithmetic; auto: bfloat16 on a CPU with native bfloat16, float16 on CUDA"


class CommandError(Exception):
    """A problem with the command's input, reported as one line without a traceback."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are exceptions, so that ``main`` reports them."""

    def error(self, message):
        raise CommandError(f"{message} (see '{self.prog} --help')")


# ----------------------------------------------------------------------------- helpers
def _note(args, message: str) -> None:
    if not args.quiet:
        print(message, file=sys.stderr, flush=True)


def _warn(message: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(f"sksimplenet: {message}", file=sys.stderr)  # above any progress bar


def _show_warning(message, *details, **more) -> None:  # one line each; --quiet: none
    _warn(f"warning: {message}")


def _load_split(args) -> dict:
    """The data set ``args.dataset`` in ``args.layout``: ``train_paths``, ``test_*``, ``settings``."""
    from .datasets import load_layout

    root = Path(args.dataset)
    if not root.is_dir():
        raise CommandError(f"dataset path {root} {'is not a folder' if root.exists() else 'does not exist'}")
    if args.layout in ("mvtec", "visa") and not args.category:
        raise CommandError(f"--layout {args.layout} needs --category")
    options = dict(category=args.category, split_csv=args.split_csv, split_seed=args.split_seed)
    return load_layout(root, args.layout, **options, labelled_share=getattr(args, "labelled_share", 0.0))


def _load_model(args):
    """The model file ``args.model``, set to score where and how the options ask."""
    from .persistence import load

    if not Path(args.model).is_file():
        raise CommandError(f"model file {args.model} does not exist")
    detector = load(args.model, allow_pickle=args.allow_pickle)
    for name in ("device", "precision", "inference_batch_size"):
        if getattr(args, name, None):
            detector.set_params(**{name: getattr(args, name)})
    for name in ("threshold", "pixel_threshold"):  # operating points for this run only
        if getattr(args, name, None) is not None:
            setattr(detector, f"{name}_", getattr(args, name))
    return detector


def _save(detector, output: Path) -> None:
    """A .safetensors file in the safe format, anything else with joblib."""
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.suffix == ".safetensors":
        from .persistence import save

        save(detector, output)
    else:
        import joblib

        joblib.dump(detector, output)


def params_path(model) -> Path:
    """Where ``fit -o MODEL`` writes the effective parameters: ``MODEL.params.json``."""
    model = Path(model)
    return model.with_name(model.name + PARAMS_SUFFIX)


def _configured_detector(args):
    """The detector ``fit`` trains: defaults < --config < named options < --set, in that order.

    Every value is checked by the estimator's own validation before any data is read.
    """
    from .config import combined_parameters
    from .detector import SimpleNetDetector, validate_params

    named = {key[len("param_") :]: value for key, value in vars(args).items() if key.startswith("param_")}
    params = combined_parameters(args.config, named, args.set or [], reserved=_CLI_PARAMS)
    detector = SimpleNetDetector(verbose=not args.quiet, **params)
    validate_params(detector.get_params(deep=False))  # InvalidParameterError naming the parameter
    return detector


class _ListParams(argparse.Action):
    """``fit --list-params``: every estimator parameter, its default and its valid values."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        from .config import parameters_table

        print(parameters_table(), flush=True)
        parser.exit()


# ----------------------------------------------------------------------------- commands
def _fit(args) -> None:
    from .card import fit_results
    from .config import parameters_json

    detector = _configured_detector(args)
    output = Path(args.output)
    split = _load_split(args)
    if not split["train_paths"]:
        raise CommandError(f"no training images in {args.dataset} (layout {args.layout})")
    if args.anomalous:
        from .datasets import add_labelled_folder

        split = add_labelled_folder(split, args.anomalous, args.anomalous_masks)
    paths, labels, masks = split["train_paths"], split.get("train_labels"), split.get("train_masks")
    labelled = "" if labels is None else f", {int((labels == -1).sum())} of them labelled defects"
    _note(args, f"fitting on {len(paths)} images from {args.dataset}{labelled}")
    detector.fit(paths, labels, masks=masks)
    detector.provenance_["split"] = split["settings"]
    detector.set_params(verbose=False)
    _save(detector, output)
    params_file = params_path(output)
    params_file.write_text(parameters_json(detector), encoding="utf-8")
    print(fit_results(detector), flush=True)
    _note(
        args, f"fitted in {detector.fit_time_:.1f}s; model written to {output}, parameters to {params_file}"
    )


def _evaluate(args) -> None:
    from .inspection import evaluate, require_matplotlib

    if args.report:
        require_matplotlib()  # before any scoring
    detector = _load_model(args)
    from .datasets import labelled_share_of  # the images a fit moved into training stay out

    args.labelled_share = labelled_share_of(detector.provenance_.get("split"), args.split_seed)
    split = _load_split(args)
    if split.get("n_labelled"):
        _note(args, f"leaving out the {split['n_labelled']} test images trained on as labelled defects")
    if not split.get("test_paths"):
        raise CommandError(f"no test images in {args.dataset} (layout {args.layout})")
    detector.set_params(verbose=not args.quiet)
    _note(args, f"scoring {len(split['test_paths'])} test images")
    result = evaluate(
        detector,
        split["test_paths"],
        split["test_labels"],
        masks=split.get("test_masks"),
        defect_types=split.get("test_categories"),
        keep_maps=args.report is not None,
        split=split["settings"],
    )
    print(result.to_markdown(), flush=True)
    if args.json:
        _note(args, f"metrics written to {result.to_json(args.json)}")
    if args.per_image:
        _note(args, f"per-image results written to {result.to_csv(args.per_image)}")
    if args.report:
        title = f"{Path(args.model).name} on {args.dataset}"
        _note(args, f"report written to {result.to_html(args.report, title=title)}")


def _predict(args) -> int:
    from .inspection import FileError, predict_files, require_matplotlib

    outdir = Path(args.output) if args.output is not None else None
    for flag, given in (("--masks", args.masks), ("--maps", args.maps), ("--no-overlays", args.no_overlays)):
        if given and outdir is None:
            raise CommandError(f"{flag} needs -o OUTDIR")
    overlays = outdir is not None and not args.no_overlays
    if overlays:
        require_matplotlib()  # before any scoring
    detector = _load_model(args)
    detector.set_params(verbose=False)  # one progress bar, over images
    try:
        predictions = predict_files(
            detector,
            args.images,
            keep_maps=overlays or args.masks or args.maps,
            maps_dir=outdir if args.maps else None,
            fail_fast=args.fail_fast,
            recursive=args.recursive,
            progress=not args.quiet,
        )
    except FileError as error:
        raise CommandError(str(error)) from None
    with predictions:
        for record in predictions.records:
            if record.error is not None:
                _warn(f"skipped: {record.error}")
        if outdir is None:
            text = (
                predictions.to_json(model=str(args.model)) if args.format == "json" else predictions.to_csv()
            )
            sys.stdout.write(text)
            sys.stdout.flush()
        else:
            options = dict(overlays=overlays, masks=args.masks, maps=args.maps, progress=not args.quiet)
            predictions.write(outdir, format=args.format, model=str(args.model), **options)
            n_scored = len(predictions.records) - predictions.n_failed
            _note(args, f"{n_scored} images scored; results written to {outdir}")
    if predictions.n_failed:
        _warn(
            f"{predictions.n_failed} of {len(predictions.records)} images could not be read (status 'error' "
            "in the results); the others were scored"
        )
        return EXIT_SOME_FAILED
    return 0


def _calibrate(args) -> None:
    from .inspection import image_paths

    detector = _load_model(args)
    before = detector.threshold_
    if args.contamination is not None:
        detector.set_params(contamination=args.contamination)
    budget = dict(max_fpr=args.max_fpr, min_recall=args.min_recall)
    if args.dataset is None:
        detector.calibrate()
    elif args.layout:  # a labelled validation set: its test split
        split = _load_split(args)
        detector.set_params(verbose=not args.quiet)
        masks = split.get("test_masks") if args.pixel else None
        detector.calibrate(split["test_paths"], split["test_labels"], masks=masks, pixel=args.pixel, **budget)
    else:  # normal images
        if any(value is not None for value in budget.values()):
            raise CommandError("--max-fpr and --min-recall need a labelled set: give --layout")
        detector.set_params(verbose=not args.quiet)
        detector.calibrate(image_paths([args.dataset], recursive=True), pixel=args.pixel)
    detector.set_params(verbose=False)
    _save(detector, Path(args.output))
    print("| threshold | before | after |\n| --- | ---: | ---: |")
    print(f"| image | {before:.6g} | {detector.threshold_:.6g} |")
    if detector.pixel_threshold_ is not None:
        print(f"| pixel (masks) | | {detector.pixel_threshold_:.6g} |")
    _note(args, f"calibrated ({detector.calibration_['method']}); model written to {args.output}")


def _export(args) -> None:
    detector = _load_model(args)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    detector.export_onnx(output, opset=args.opset)
    height, width = detector.input_size_
    _note(
        args,
        f"ONNX graph written to {output}: input 'images' float32 (N, 3, H, W), RGB in [0, 1], trained at "
        f"{height} x {width}; "
        f"outputs 'anomaly_map' and 'score' (anomalous when score > {detector.threshold_:.6g})",
    )


def _demo(args) -> None:
    from .inspection import DEMO_DATA, DEMO_N_TRAIN, metrics_table, require_matplotlib, run_demo

    require_matplotlib()
    start = time.perf_counter()
    n_test = DEMO_DATA["n_normal"] + DEMO_DATA["n_anomalous"] - DEMO_N_TRAIN
    _note(
        args,
        f"demo: {DEMO_N_TRAIN} normal {DEMO_DATA['texture']} images to train on, {n_test} to test "
        f"({DEMO_DATA['n_anomalous']} with defects)",
    )
    result = run_demo(args.output, epochs=args.epochs, device=args.device, verbose=not args.quiet)
    print(metrics_table(result.metrics), flush=True)
    seconds = time.perf_counter() - start
    _note(args, f"overlays, grid.png and metrics.json written to {args.output} ({seconds:.0f}s)")


# ----------------------------------------------------------------------------- parser
def _names(text: str):
    """``layer2,layer3`` → ("layer2", "layer3"); ``none`` → None."""
    return None if text.strip().lower() == "none" else tuple(part.strip() for part in text.split(","))


def _option(*flags, **settings):
    return flags, settings


#: ``fit``'s named options: (flag, parameter, metavar, help); values are read by ``parse_value``.
NAMED_OPTIONS = (
    ("--backbone", "backbone", "NAME", "e.g. wide_resnet50_2 (default), resnet18, efficientnet_lite0"),
    ("--layers", "layers", "L1,L2", "backbone modules used, or none (automatic)"),
    ("--weights", "weights", "W", "DEFAULT, a torchvision weights name, a file, or none"),
    ("--epochs", "epochs", "N|auto", 'an integer or "auto" (about 1,000 steps)'),
    ("--batch-size", "batch_size", "N", "images per training step"),
    ("--patch-fraction", "patch_fraction", "F", "share of a step's patches used"),
    ("--sigma", "sigma", "S[,S...]", "noise standard deviation(s)"),
    ("--synthetic-defects", "synthetic_defects", "F", "synthetic defect images per training image (0: none)"),
    ("--feature-scaling", "feature_scaling", "standardize|none", "per-channel standardisation, or none"),
    (
        "--validation-fraction",
        "validation_fraction",
        "F",
        "share of training images held out for the threshold",
    ),
    ("--contamination", "contamination", "F|auto", "share of normal images above the threshold"),
    ("--image-score", "image_score", "F|max", "image score: mean of the map's top F share, or its maximum"),
    ("--resize", "resize", "N|H,W", "N (shorter side) or H,W"),
    ("--crop-size", "crop_size", "N|H,W|none", "centre crop, or none"),
    ("--seed", "random_state", "N", "random_state"),
    ("--device", "device", "DEVICE", "auto, cpu, cuda or cuda:N"),
    ("--precision", "precision", "|".join(PRECISIONS), PRECISION_HELP),
    ("--n-jobs", "n_jobs", "N", "processes decoding image files (-1: all cores)"),
    ("--cache-dir", "cache_dir", "DIR", "keep the training feature cache in a file there"),
)
_MODEL = (
    _option("model", metavar="MODEL"),
    _option("--allow-pickle", action="store_true", help="also read a MODEL that is not safetensors, with "
            "joblib: this runs code stored in the file, so only for files you trust"),
)  # fmt: skip
_DATASET = (
    _option("dataset", metavar="DATASET", help="data set folder"),
    _option("--layout", required=True, choices=LAYOUTS, help="how DATASET is organised"),
    _option("--category", help="category (mvtec) or object (visa)"),
    _option("--split-csv", default="split_csv/1cls.csv", help="visa: split file in DATASET (%(default)s)"),
    _option("--split-seed", type=int, default=0, help="mtd: split seed, for fit and evaluate (%(default)s)"),
)  # fmt: skip
_SCORING = (  # where, in which backbone precision and at which threshold a model scores (default: as saved)
    _option("--device", help="auto, cpu, cuda, cuda:N or mps"),
    _option("--precision", choices=PRECISIONS, help=f"{PRECISION_HELP} (default: the model's)"),
    _option(
        "--batch-size", dest="inference_batch_size", type=int, metavar="N", help="images per network pass"
    ),
    _option(
        "--threshold", type=float, metavar="T", help="image threshold for this run (default: the model's)"
    ),
)
_FIT_HELP = (
    f"Train on the normal training images of DATASET and save the detector, and its parameters as JSON "
    f"in MODEL{PARAMS_SUFFIX} (give that file to --config to repeat the run). Where the parameters come "
    "from, later ones winning: the defaults of SimpleNetDetector (print them with --list-params; "
    "docs/quality.md says where they differ from the paper's), then --config FILE, then the named options, "
    "then --set NAME=VALUE. Every value is checked before any data is read. Prints the last epoch's training "
    "loss and held-out criterion and the decision threshold. The default backbone, wide_resnet50_2, "
    "downloads its ImageNet weights on first use; efficientnet_lite0 runs offline."
)
_PREDICT_HELP = (
    "score = image anomaly score (higher = more anomalous); label = +1 normal, -1 anomalous (score > the "
    "model's threshold). An image that cannot be read gets status 'error' and its message; the others are "
    "scored, and the exit status is then 1 (--fail-fast: stop at the first, exit status 2, no results "
    "written). With -o, overlays show every map on one colour scale centred on the threshold, with a colour "
    "bar and the image's score; --masks and --maps add map >= threshold as PNG and the maps as .npy, at "
    "each image's size."
)
_CALIBRATE_HELP = (
    "Write MODEL with a new decision threshold, from normal images (the 1 - contamination quantile of "
    "their scores, as fit does), from a labelled validation set (largest F1 of the anomalous class, or "
    "--max-fpr / --min-recall), or again from the images fit held out (e.g. with a new --contamination). "
    "Calibrate on images set apart for it, never on the test images of an evaluation."
)
#: Each command: its help, its description, its options and what runs it.
COMMANDS = {
    "fit": ("train a detector on normal images (and labelled defects) and save it", _FIT_HELP, (
        *_DATASET,
        _option("-o", "--output", required=True, metavar="MODEL", help=".safetensors (safe) or joblib"),
        _option("--config", metavar="FILE", help="parameters from a .json or .toml table of name = value"),
        _option("--set", action="append", metavar="NAME=VALUE", help="set any estimator parameter; VALUE is "
                "read as a Python/JSON literal when it is one (8, 1e-4, none, 224,224), else as text"),
        _option("--list-params", action=_ListParams, help="print each parameter, default, valid values"),
        _option("--anomalous", metavar="DIR", help="also train on these defect images, masks NAME_mask.png "
                "beside them (or in --anomalous-masks DIR, NAME.png too)"),
        _option("--anomalous-masks", metavar="DIR", help="masks of --anomalous: NAME_mask.png or NAME.png"),
        _option("--labelled-share", type=float, default=0.0, metavar="F", help="move a seeded share F of "
                "each defect type from the test images into training (evaluate leaves them out)"),
    ), _fit),
    "evaluate": ("metrics of a saved detector on a labelled test set", None, (
        *_MODEL, *_DATASET, *_SCORING,
        _option("--json", metavar="OUT.json", help="the metrics (threshold-free, at threshold, per type)"),
        _option("--per-image", metavar="OUT.csv", help="a row per image: path, type, label, score, decision"),
        _option("--report", metavar="DIR", help="DIR/report.html (self-contained: the model, tables, curves, "
                "score histogram, worst false positives and negatives) and DIR/per_image.csv"),
    ), _evaluate),
    "predict": ("score images: CSV or JSON of path, score, label, status; overlays, masks, maps",
                _PREDICT_HELP, (
        *_MODEL, *_SCORING,
        _option("images", metavar="IMAGES_OR_FOLDER", nargs="+"),
        _option("-o", "--output", metavar="OUTDIR", help="write OUTDIR/predictions.csv (or .json) and an "
                "overlay per image (default: results to stdout)"),
        _option("--format", choices=("csv", "json"), default="csv", help="default: %(default)s"),
        _option("--masks", action="store_true", help="also write STEM_mask.png: map >= threshold"),
        _option("--maps", action="store_true", help="also write STEM_map.npy: the anomaly map"),
        _option("--no-overlays", action="store_true", help="write no overlay PNGs"),
        _option("--fail-fast", action="store_true", help="stop at the first unreadable image (status 2)"),
        _option("--recursive", action="store_true", help="also the images in folders' subfolders"),
        _option("--pixel-threshold", type=float, metavar="P", help="masks: map >= P (default: the model's)"),
    ), _predict),
    "calibrate": ("set a saved detector's threshold again, without retraining", _CALIBRATE_HELP, (
        *_MODEL,
        _option("dataset", metavar="SOURCE", nargs="?", help="normal images (a folder), or with --layout a "
                "labelled data set whose test split calibrates; none: the images fit held out"),
        _option("-o", "--output", required=True, metavar="OUT", help="the calibrated model"),
        _option("--layout", choices=LAYOUTS, help="how SOURCE is organised, when it is labelled"),
        _option("--category", help="category (mvtec) or object (visa)"),
        _option("--split-csv", default="split_csv/1cls.csv", help=argparse.SUPPRESS),
        _option("--split-seed", type=int, default=0, help="mtd: split seed"),
        _option("--contamination", type=float, metavar="C", help="normal images: the share to flag"),
        _option("--max-fpr", type=float, metavar="F", help="labelled: most recall with FPR <= F"),
        _option("--min-recall", type=float, metavar="R", help="labelled: fewest alarms, recall >= R"),
        _option("--pixel", action="store_true", help="also set the pixel threshold for masks"),
    ), _calibrate),
    "export": ("write a saved detector's inference graph to an ONNX file",
               "Write MODEL's whole inference path (backbone to anomaly map and image score) to an ONNX file "
               "that runs without PyTorch or this package; see docs/deployment.md. Needs onnx "
               "(pip install 'sksimplenet[export]').", (
        *_MODEL,
        _option("output", metavar="OUT.onnx"),
        _option("--opset", type=int, default=17, help="ONNX operator set version (default: %(default)s)"),
    ), _export),
    "demo": ("end to end on generated images, offline, in a minute or two on a CPU", None, (
        _option("-o", "--output", metavar="OUTDIR", default="sksimplenet_demo", help="default: %(default)s"),
        _option("--epochs", type=parse_value, default="auto", help="training epochs, or auto (default)"),
        _option("--device", default="cpu", help="default: cpu"),
    ), _demo),
}  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """The ``sksimplenet`` argument parser, one subcommand per entry of :data:`COMMANDS`.

    Building it imports neither PyTorch nor the estimator.
    """
    parser = _Parser(
        prog="sksimplenet", description=f"SimpleNet image anomaly detection: {', '.join(COMMANDS)}."
    )
    parser.add_argument("--version", action="version", version=f"sksimplenet {__version__}")
    parser.add_argument(
        "--quiet", action="store_true", default=False, help="no progress bars, notes or warnings"
    )
    parser.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="PyTorch's CPU threads (default: its own choice; on a "
        "machine shared with other work, the number of idle cores is much faster)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name, (summary, description, options, run) in COMMANDS.items():
        command = sub.add_parser(name, help=summary, description=description)
        # A subcommand's --quiet leaves the value of one given before the command as it is.
        command.add_argument(
            "--quiet", action="store_true", default=argparse.SUPPRESS, help="as before COMMAND"
        )
        for flags, settings in options:
            command.add_argument(*flags, **settings)
        command.set_defaults(run=run)
    group = sub.choices["fit"].add_argument_group(
        "estimator parameters",
        "Each sets the SimpleNetDetector parameter of the same name (--seed: random_state); not given, the "
        "parameter keeps its value from --config, else the detector's default (listed by --list-params). "
        "--set NAME=VALUE sets any parameter and is applied last.",
    )
    for flag, param, metavar, text in NAMED_OPTIONS:
        kind = _names if param == "layers" else parse_value
        group.add_argument(
            flag, dest=f"param_{param}", type=kind, metavar=metavar, help=text, default=argparse.SUPPRESS
        )
    return parser


def _one_line(error: BaseException) -> str:
    """The error as one line; its type is named unless the message is meant for users as it is."""
    message = (
        (repr(error.args[0]) if error.args else "")
        if isinstance(error, KeyError)
        else " ".join(str(error).split())
    )
    plain = (CommandError, ValueError, TypeError, FileNotFoundError, ImportError)
    if not message or not isinstance(error, plain):
        message = f"{type(error).__name__}: {message}" if message else type(error).__name__
    return message


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``sksimplenet ARGS``.

    Parameters
    ----------
    argv : list of str, default=None
        The arguments; None reads ``sys.argv[1:]``.

    Returns
    -------
    int
        0 on success; 1 when ``predict`` could not read some images (and scored the
        others); 2 on any other error (reported as one line on standard error); 130 when
        interrupted.
    """
    try:
        args = build_parser().parse_args(argv)
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning  # one line each, not Python's two with the source
            if args.quiet:
                warnings.simplefilter("ignore")
            if args.threads is not None:
                import torch

                torch.set_num_threads(args.threads)
            code = args.run(args)
    except KeyboardInterrupt:
        print("sksimplenet: interrupted", file=sys.stderr)
        return 130
    except SystemExit as exit_:  # --help, --version, --list-params
        return exit_.code if isinstance(exit_.code, int) else 0
    except Exception as error:  # every error becomes one line
        print(f"sksimplenet: error: {_one_line(error)}", file=sys.stderr, flush=True)
        return 2
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
