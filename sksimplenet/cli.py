"""Command line interface: ``sksimplenet fit | evaluate | predict | demo``.

Examples
--------
Train on one MVTec AD category, evaluate it, and score new images (``fit``'s default
backbone, ``wide_resnet50_2``, has ImageNet weights that torchvision downloads on first
use; ``--backbone efficientnet_lite0`` runs offline)::

    sksimplenet fit /data/mvtec --layout mvtec --category bottle -o bottle.safetensors
    sksimplenet evaluate bottle.safetensors /data/mvtec --layout mvtec --category bottle --json bottle.json
    sksimplenet predict bottle.safetensors new_images/ -o predictions/

Everything offline on generated images::

    sksimplenet demo -o demo/

Results (tables, CSV) go to standard output; progress bars and notes go to standard
error, and ``--quiet`` silences both. An error is reported as one line on standard error,
with exit status 2.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["main", "evaluate_detector", "metrics_table", "load_detector"]

LAYOUTS = ("mvtec", "mtd", "visa", "folder")
METRIC_NAMES = {
    "image_auroc": "image AUROC",
    "image_f1_max": "image F1-max",
    "pixel_auroc": "pixel AUROC",
    "aupro": "AUPRO",
    "pixel_f1_max": "pixel F1-max",
}
# The demo: generated stripes, the offline ImageNet backbone, small images, the default schedule.
DEMO_DATA = dict(n_normal=30, n_anomalous=15, texture="stripes", size=96, random_state=0)
DEMO_N_TRAIN = 20
DEMO_DETECTOR = dict(backbone="efficientnet_lite0", resize=96, crop_size=None, epochs="auto", random_state=0)
# Features standardised per channel make the noise scale the same on any backbone; older
# versions of the detector without that setting use their default noise.
DEMO_SCALED = dict(feature_scaling="standardize", sigma=0.3)


_NOT_GIVEN = object()


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


def _size(text: str):
    """``"256"`` → 256, ``"256,320"`` → (256, 320), ``"none"`` → None."""
    if text.strip().lower() == "none":
        return None
    try:
        values = tuple(int(part) for part in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N, H,W or none, got {text!r}") from None
    if len(values) not in (1, 2) or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected N, H,W or none with positive sizes, got {text!r}")
    return values[0] if len(values) == 1 else values


def _image_files(folder: Path) -> list[str]:
    from .datasets import IMAGE_EXTENSIONS

    return [
        str(path)
        for path in sorted(folder.iterdir())
        if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")
    ]


def _load_split(args) -> dict:
    """The data set in ``args.dataset`` read with ``args.layout``: ``train_paths``, ``test_*``."""
    from . import datasets

    root = Path(args.dataset)
    if not root.exists():
        raise CommandError(f"dataset path {root} does not exist")
    if not root.is_dir():
        raise CommandError(f"dataset path {root} is not a folder")
    layout = args.layout
    if layout in ("mvtec", "visa") and not args.category:
        raise CommandError(f"--layout {layout} needs --category")
    if layout == "mvtec":
        return datasets.load_mvtec(root, args.category, require_masks=False)
    if layout == "visa":
        return datasets.load_visa(root, args.category, args.split_csv)
    if layout == "mtd":
        return datasets.load_mtd(root, random_state=args.split_seed)
    paths = _image_files(root)
    if not paths:
        raise CommandError(f"no image files in {root}")
    return {"train_paths": paths}


def load_detector(path: str | os.PathLike, allow_pickle: bool = False):
    """Read a detector written by ``sksimplenet fit``.

    The file's content decides how it is read, never its name: a safetensors file (the
    safe format) is read with :func:`sksimplenet.load`, which executes nothing from it.
    Anything else may be a pickle (joblib), and opening a pickle runs code stored in it: it
    is refused unless ``allow_pickle``.

    Parameters
    ----------
    path : str or path
        A model file.
    allow_pickle : bool, default=False
        Read a file that is not in the safe format with :func:`joblib.load`. Only for files
        you made yourself or otherwise trust.

    Returns
    -------
    SimpleNetDetector

    Raises
    ------
    CommandError
        The file does not exist, is not in the safe format and ``allow_pickle`` is False, or
        does not hold a SimpleNetDetector.
    """
    from .detector import SimpleNetDetector
    from .persistence import is_safetensors_file, load

    path = Path(path)
    if not path.is_file():
        raise CommandError(f"model file {path} does not exist")
    if is_safetensors_file(path):
        detector = load(path)
    elif not allow_pickle:
        raise CommandError(
            f"{path} is not a safe (safetensors) model file. If it is a joblib/pickle file, opening it "
            "runs code stored in it: pass --allow-pickle only if you trust where it came from"
        )
    else:
        import joblib

        detector = joblib.load(path)
    if not isinstance(detector, SimpleNetDetector):
        raise CommandError(f"{path} holds a {type(detector).__name__}, not a fitted SimpleNetDetector")
    return detector


def _save_detector(detector, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        if not hasattr(type(detector), "save"):
            raise CommandError("this version of sksimplenet cannot write .safetensors model files")
        detector.save(path)
    else:
        import joblib

        joblib.dump(detector, path)


def _use_device(args, detector) -> None:
    """Score on the device asked for on the command line, if any."""
    if getattr(args, "device", None):
        detector.set_params(device=args.device)


def evaluate_detector(detector, paths, labels, masks=None) -> dict[str, float]:
    """Image metrics, and pixel metrics when every anomalous image has a mask.

    Image scores are ``-detector.score_samples(paths)``; maps are
    ``detector.anomaly_map(paths)`` at the network's resolution, and the masks are brought
    there by :func:`sksimplenet.metrics.masks_at_map_resolution`.

    Parameters
    ----------
    detector : SimpleNetDetector
        Fitted.
    paths : sequence of images
        The test images.
    labels : array-like of shape (n_images,)
        +1 normal / -1 anomalous.
    masks : sequence or None, default=None
        One ground-truth mask (path or array) or None per image.

    Returns
    -------
    dict of str to float
        As :func:`sksimplenet.metrics.evaluate`.
    """
    labels = np.asarray(labels)
    scores = -np.asarray(detector.score_samples(paths), dtype=np.float64)
    if masks is None or all(mask is None for mask in masks):
        return _metrics(detector, labels, scores)
    return _metrics(detector, labels, scores, masks, detector.anomaly_map(paths))


def _metrics(detector, labels, scores, masks=None, maps=None) -> dict[str, float]:
    """:func:`sksimplenet.metrics.evaluate` with the masks brought to the maps' resolution."""
    from .metrics import evaluate, masks_at_map_resolution

    if maps is None or masks is None:
        return evaluate(labels, scores)
    pixel_masks = masks_at_map_resolution(
        masks, labels, detector.resize, detector.crop_size, [m.shape for m in maps]
    )
    if pixel_masks is None:
        return evaluate(labels, scores)
    return evaluate(labels, scores, pixel_masks, list(maps))


def metrics_table(metrics: dict[str, float]) -> str:
    """A two-column markdown table of metrics, four decimals.

    Parameters
    ----------
    metrics : dict of str to float
        As returned by :func:`sksimplenet.metrics.evaluate`.

    Returns
    -------
    str
    """
    lines = ["| metric | value |", "| --- | ---: |"]
    for key, value in metrics.items():
        lines.append(f"| {METRIC_NAMES.get(key, key)} | {value:.4f} |")
    return "\n".join(lines)


def _overlay_names(paths: list[str]) -> list[str]:
    """``<stem>_overlay.png`` per image, with the index added where stems repeat."""
    stems = [Path(path).stem for path in paths]
    repeated = {stem for stem in stems if stems.count(stem) > 1}
    return [
        f"{stem}_{index}_overlay.png" if stem in repeated else f"{stem}_overlay.png"
        for index, stem in enumerate(stems)
    ]


# ----------------------------------------------------------------------------- commands
def _fit(args) -> None:
    from .detector import SimpleNetDetector

    split = _load_split(args)
    output = Path(args.output)
    if output.suffix == ".safetensors" and not hasattr(SimpleNetDetector, "save"):
        raise CommandError("this version of sksimplenet cannot write .safetensors model files")
    options = {
        "backbone": args.backbone,
        "epochs": args.epochs,
        "sigma": args.sigma,
        "resize": args.resize,
        "random_state": args.seed,
        "device": args.device,
        "feature_scaling": args.feature_scaling,
    }
    params = {key: value for key, value in options.items() if value is not None}
    if args.crop_size is not _NOT_GIVEN:
        params["crop_size"] = args.crop_size
    if params.get("feature_scaling") == "none":
        params["feature_scaling"] = None
    if "feature_scaling" in params and "feature_scaling" not in SimpleNetDetector().get_params():
        raise CommandError("this version of sksimplenet has no feature_scaling setting")
    detector = SimpleNetDetector(verbose=not args.quiet, **params)
    _note(args, f"fitting on {len(split['train_paths'])} images from {args.dataset}")
    detector.fit(split["train_paths"])
    detector.set_params(verbose=False)
    _save_detector(detector, output)
    _note(args, f"fitted in {detector.fit_time_:.1f}s; model written to {output}")


def _evaluate(args) -> None:
    detector = load_detector(args.model, allow_pickle=args.allow_pickle)
    _use_device(args, detector)
    split = _load_split(args)
    detector.set_params(verbose=not args.quiet)
    _note(args, f"scoring {len(split['test_paths'])} test images")
    metrics = evaluate_detector(detector, split["test_paths"], split["test_labels"], split["test_masks"])
    print(metrics_table(metrics), flush=True)
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(metrics, indent=2) + "\n")
        _note(args, f"metrics written to {path}")


def _predict(args) -> None:
    detector = load_detector(args.model, allow_pickle=args.allow_pickle)
    _use_device(args, detector)
    paths = []
    for item in args.images:
        item = Path(item)
        if item.is_dir():
            found = _image_files(item)
            if not found:
                raise CommandError(f"no image files in {item}")
            paths += found
        elif item.is_file():
            paths.append(str(item))
        else:
            raise CommandError(f"image path {item} does not exist")
    detector.set_params(verbose=not args.quiet)
    decision = np.asarray(detector.decision_function(paths), dtype=np.float64)
    # score: anomaly score (higher = more anomalous); label: +1 normal, -1 anomalous.
    scores = -(decision + detector.offset_)
    labels = np.where(decision < 0, -1, 1)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "score", "label"])
    writer.writerows([path, f"{score:.6g}", int(label)] for path, score, label in zip(paths, scores, labels))
    if args.output is None:
        sys.stdout.write(buffer.getvalue())
        sys.stdout.flush()
        return
    from .plotting import save_overlay

    outdir = Path(args.output)
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "predictions.csv").write_text(buffer.getvalue())
    maps = detector.anomaly_map(paths, original_size=True)
    threshold = -float(detector.offset_)
    for path, amap, name in zip(paths, maps, _overlay_names(paths)):
        save_overlay(outdir / name, path, amap, threshold=threshold)
    _note(args, f"{len(paths)} predictions written to {outdir / 'predictions.csv'}, overlays to {outdir}")


def _demo(args) -> None:
    from .datasets import make_synthetic
    from .detector import SimpleNetDetector

    start = time.perf_counter()
    images, labels, masks = make_synthetic(**DEMO_DATA)
    train, test = images[:DEMO_N_TRAIN], images[DEMO_N_TRAIN:]
    test_labels, test_masks = labels[DEMO_N_TRAIN:], masks[DEMO_N_TRAIN:]
    params = dict(DEMO_DETECTOR, device=args.device or "cpu", verbose=not args.quiet)
    if "feature_scaling" in SimpleNetDetector().get_params():
        params.update(DEMO_SCALED)
    if args.epochs is not None:
        params["epochs"] = args.epochs
    _note(
        args,
        f"demo: {len(train)} normal {DEMO_DATA['texture']} images to train on, {len(test)} to test "
        f"({int((test_labels == -1).sum())} with defects)",
    )
    detector = SimpleNetDetector(**params).fit(train)
    scores = -detector.score_samples(test)
    maps = detector.anomaly_map(test)
    metrics = _metrics(detector, test_labels, scores, list(test_masks), maps)
    print(metrics_table(metrics), flush=True)

    from .plotting import plot_grid, save_overlay

    outdir = Path(args.output)
    outdir.mkdir(parents=True, exist_ok=True)
    threshold = -float(detector.offset_)
    for index, (image, amap) in enumerate(zip(test, maps)):
        kind = "normal" if test_labels[index] == 1 else "defect"
        save_overlay(outdir / f"test_{index:02d}_{kind}_overlay.png", image, amap, threshold=threshold)
    plot_grid(
        test, maps, scores=scores, labels=test_labels, threshold=threshold, ncols=5, path=outdir / "grid.png"
    )
    (outdir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    _note(
        args, f"overlays, grid.png and metrics.json written to {outdir} ({time.perf_counter() - start:.0f}s)"
    )


# ----------------------------------------------------------------------------- parser
def _allow_pickle_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--allow-pickle",
        action="store_true",
        help="also read MODEL when it is not a safetensors file, with joblib: this runs code stored "
        "in the file, so only for files you trust",
    )


def _epochs(text: str) -> int | str:
    """``--epochs``: a positive integer or ``auto``."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'auto', got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    """The ``sksimplenet`` argument parser (subcommands ``fit``, ``evaluate``, ``predict``, ``demo``)."""
    parser = _Parser(
        prog="sksimplenet",
        description="SimpleNet image anomaly detection: fit, evaluate, predict, demo.",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars or notes on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def dataset_options(command, layouts):
        command.add_argument("dataset", metavar="DATASET", help="data set folder")
        command.add_argument("--layout", required=True, choices=layouts, help="how DATASET is organised")
        command.add_argument("--category", help="category (mvtec) or object (visa)")
        command.add_argument(
            "--split-csv",
            default="split_csv/1cls.csv",
            help="visa: split file relative to DATASET (default: %(default)s)",
        )
        command.add_argument(
            "--split-seed",
            type=int,
            default=0,
            help="mtd: seed of the train/test split, the same for fit and evaluate (default: %(default)s)",
        )

    fit = sub.add_parser(
        "fit",
        help="train a detector on normal images and save it",
        description="Train on the normal training images of DATASET and save the detector. "
        "Options not given take the detector's defaults (see docs/quality.md for where they differ "
        "from the paper's settings). The default backbone, wide_resnet50_2, downloads its ImageNet "
        "weights on first use; efficientnet_lite0 runs offline.",
    )
    dataset_options(fit, LAYOUTS)
    fit.add_argument("--backbone", help="e.g. wide_resnet50_2 (default), resnet18, efficientnet_lite0")
    fit.add_argument("--epochs", type=_epochs, help='an integer or "auto" (about 1,000 steps; the default)')
    fit.add_argument("--sigma", type=float, help="noise standard deviation")
    fit.add_argument("--feature-scaling", choices=("none", "standardize"))
    fit.add_argument("--resize", type=_size, help="N (shorter side) or H,W")
    fit.add_argument("--crop-size", type=_size, default=_NOT_GIVEN, help="N, H,W or none")
    fit.add_argument("--seed", type=int, help="random_state")
    fit.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    fit.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="MODEL",
        help="model file: .safetensors (safe format) or anything else (joblib)",
    )
    fit.set_defaults(run=_fit)

    evaluate = sub.add_parser("evaluate", help="metrics of a saved detector on a labelled test set")
    evaluate.add_argument("model", metavar="MODEL")
    _allow_pickle_option(evaluate)
    dataset_options(evaluate, ("mvtec", "mtd", "visa"))
    evaluate.add_argument("--json", metavar="OUT.json", help="also write the metrics as JSON")
    evaluate.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    evaluate.set_defaults(run=_evaluate)

    predict = sub.add_parser(
        "predict",
        help="score images: CSV of path, score, label, and heatmap overlays",
        description="score = anomaly score (higher = more anomalous); label = +1 normal, -1 anomalous. "
        "Overlays outline the pixels scoring above the detector's decision threshold.",
    )
    predict.add_argument("model", metavar="MODEL")
    _allow_pickle_option(predict)
    predict.add_argument("images", metavar="IMAGES_OR_FOLDER", nargs="+")
    predict.add_argument(
        "-o",
        "--output",
        metavar="OUTDIR",
        help="write OUTDIR/predictions.csv and overlays (default: CSV to stdout)",
    )
    predict.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    predict.set_defaults(run=_predict)

    demo = sub.add_parser("demo", help="end to end on generated images, offline, in a minute or two on a CPU")
    demo.add_argument(
        "-o",
        "--output",
        metavar="OUTDIR",
        default="sksimplenet_demo",
        help="where overlays go (default: %(default)s)",
    )
    demo.add_argument(
        "--epochs", type=_epochs, help=f"training epochs, or auto (default: {DEMO_DETECTOR['epochs']})"
    )
    demo.add_argument("--device", help="default: cpu")
    demo.set_defaults(run=_demo)
    return parser


def _one_line(error: BaseException) -> str:
    """The error as one line; its type is named unless the message is meant for users as it is."""
    if isinstance(error, KeyError):
        message = repr(error.args[0]) if error.args else ""
    else:
        message = " ".join(str(error).split())
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
        0 on success, 2 on any error (reported as one line on standard error), 130 when
        interrupted.
    """
    try:
        args = build_parser().parse_args(argv)
        args.run(args)
    except KeyboardInterrupt:
        print("sksimplenet: interrupted", file=sys.stderr)
        return 130
    except SystemExit as exit_:  # --help and --version
        return exit_.code if isinstance(exit_.code, int) else 0
    except Exception as error:  # every error becomes one line
        print(f"sksimplenet: error: {_one_line(error)}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
