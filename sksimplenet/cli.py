"""Command line interface: ``sksimplenet fit | evaluate | predict | export | demo``.

Examples
--------
Train on one MVTec AD category, evaluate it, and score new images (``fit``'s default
backbone, ``wide_resnet50_2``, has ImageNet weights that torchvision downloads on first
use; ``--backbone efficientnet_lite0`` runs offline)::

    sksimplenet fit /data/mvtec --layout mvtec --category bottle -o bottle.safetensors
    sksimplenet evaluate bottle.safetensors /data/mvtec --layout mvtec --category bottle --json bottle.json
    sksimplenet predict bottle.safetensors new_images/ -o predictions/ --masks --maps
    sksimplenet export bottle.safetensors bottle.onnx

Any estimator parameter, by name or from a file (the one ``fit`` writes beside the model
repeats a run)::

    sksimplenet fit DATA --layout folder --set batch_size=8 --set "layers=('layer2',)" -o m.safetensors
    sksimplenet fit DATA --layout folder --config m.safetensors.params.json -o again.safetensors

Everything offline on generated images::

    sksimplenet demo -o demo/

Results (tables, CSV, JSON) go to standard output; progress bars and notes go to standard
error, and ``--quiet`` (before or after the command) silences both. An error is reported
as one line on standard error, with exit status 2. ``predict`` exits with status 1 when
some images could not be read and the others were scored.

PyTorch is imported only by the commands that need it, so ``--help`` and ``--version``
answer at once.
"""

from __future__ import annotations

import argparse
import ast
import csv
import io
import json
import math
import os
import re
import sys
import tempfile
import time
from pathlib import Path

from . import __version__

__all__ = ["main", "build_parser", "evaluate_detector", "metrics_table", "load_detector"]

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
#: ``fit`` writes the effective estimator parameters to ``MODEL`` + this suffix.
PARAMS_SUFFIX = ".params.json"
#: Parameters the command line sets itself: not accepted from --set or --config.
_CLI_PARAMS = {"verbose": "--quiet"}
#: predict: exit status when some images could not be read (the others were scored).
EXIT_SOME_FAILED = 1
# predict scores this many images per call: a bad file costs its chunk a second pass,
# image by image, and full-size maps of one chunk are what is held in memory at once.
_CHUNK_WITH_MAPS = 16
_CHUNK_SCORES_ONLY = 256
# Errors of one image file (unreadable, truncated, too large, a bad mode), as image_io raises them.
_FILE_ERRORS = (ValueError, OSError)
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
    """A line on stderr that ``--quiet`` does not silence (a file that was skipped)."""
    from tqdm.auto import tqdm

    tqdm.write(f"sksimplenet: {message}", file=sys.stderr)  # above any progress bar


def _progress(args, total: int, desc: str, unit: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=args.quiet, file=sys.stderr)


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
    return datasets.load_folder(root)


def _split_settings(args) -> dict:
    """What decides which images of ``args.dataset`` train and which test (saved in the model)."""
    settings = {"layout": args.layout}
    if args.layout in ("mvtec", "visa"):
        settings["category"] = args.category
    if args.layout == "visa":
        settings["split_csv"] = args.split_csv
    if args.layout == "mtd":
        settings["split_seed"] = args.split_seed
    return settings


def _warn_if_trained_on(detector, args, test_paths: list[str]) -> None:
    """Warn when the test images include images the detector was fitted on."""
    from .provenance import files_seen_in_training

    fitted_with = (getattr(detector, "provenance_", None) or {}).get("split")
    current = _split_settings(args)
    if fitted_with is not None and fitted_with != current:
        _warn(
            f"the model was fitted on a split with {fitted_with}, this evaluation uses {current}: "
            "its test images may include training images"
        )
    seen = files_seen_in_training(detector, test_paths)
    if seen:
        shown = ", ".join(seen[:5]) + (f" and {len(seen) - 5} more" if len(seen) > 5 else "")
        _warn(
            f"{len(seen)} of the {len(test_paths)} test images were training images of this model "
            f"(same file content): {shown}. The metrics overstate what it does on new images."
        )


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
        detector.save(path)
    else:
        import joblib

        joblib.dump(detector, path)


def _use_device(args, detector) -> None:
    """Score on the device, and in the backbone precision, asked for on the command line, if any."""
    if getattr(args, "device", None):
        detector.set_params(device=args.device)
    if getattr(args, "precision", None):
        detector.set_params(precision=args.precision)


# ----------------------------------------------------------------------------- parameters
def _tuples(value):
    """Lists (from JSON, TOML or a literal) as tuples, the estimator's documented form."""
    if isinstance(value, (list, tuple)):
        return tuple(_tuples(item) for item in value)
    return value


def parse_value(text: str):
    """The value of ``--set NAME=VALUE``: a Python or JSON literal when it is one, else the text.

    ``32`` → 32, ``1e-4`` → 0.0001, ``none``/``None``/``null`` → None, ``true``/``false``
    (any case) → True/False, ``(224, 224)``, ``224,224`` or ``[224, 224]`` → (224, 224),
    ``"123"`` (quoted) → the string ``"123"``; anything else, such as ``auto``, ``cuda:0``
    or ``layer2``, is the string itself. Lists become tuples.
    """
    stripped = text.strip()
    lowered = stripped.lower()
    if lowered in ("none", "null"):
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return _tuples(ast.literal_eval(stripped))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        pass
    try:
        return _tuples(json.loads(stripped))
    except ValueError:
        return text


def _parameter_names() -> list[str]:
    from .detector import SimpleNetDetector

    return sorted(SimpleNetDetector._get_param_names())


def _check_names(params: dict, source: str) -> None:
    """Refuse names the estimator does not have, and those the command line sets itself."""
    names = _parameter_names()
    for name in params:
        if name in _CLI_PARAMS:
            raise CommandError(f"{source}: {name} is set by {_CLI_PARAMS[name]}, not as a parameter")
        if name not in names:
            valid = ", ".join(n for n in names if n not in _CLI_PARAMS)
            raise CommandError(f"{source}: unknown parameter {name!r}; the parameters are: {valid}")


def read_config(path: str | os.PathLike) -> dict:
    """Estimator parameters from a ``.json`` or ``.toml`` file: one table of name = value.

    Lists become tuples. TOML has no null: set a parameter to None with JSON or ``--set
    NAME=none``.
    """
    path = Path(path)
    if not path.is_file():
        raise CommandError(f"config file {path} does not exist")
    suffix = path.suffix.lower()
    text = path.read_text(encoding="utf-8")
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise CommandError(f"config file {path} is not valid JSON: {error}") from None
    elif suffix == ".toml":
        try:
            import tomllib
        except ImportError:  # Python < 3.11
            try:
                import tomli as tomllib
            except ImportError:
                raise CommandError(
                    f"reading {path} needs Python 3.11 or later, or the package tomli "
                    "(pip install tomli); a .json config needs neither"
                ) from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise CommandError(f"config file {path} is not valid TOML: {error}") from None
    else:
        raise CommandError(f"config file {path} must end in .json or .toml")
    if not isinstance(data, dict):
        raise CommandError(f"config file {path} must hold one table of parameter names and values")
    return {name: _tuples(value) for name, value in data.items()}


def _set_options(entries: list[str]) -> dict:
    params = {}
    for entry in entries:
        name, equals, value = entry.partition("=")
        name = name.strip().replace("-", "_")
        if not equals or not name:
            raise CommandError(f"--set expects NAME=VALUE, got {entry!r}")
        params[name] = parse_value(value)
    return params


def _jsonable(value):
    """A parameter value as JSON: tuples as lists, paths as strings."""
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # NumPy scalars
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def params_path(model: str | os.PathLike) -> Path:
    """Where ``fit -o MODEL`` writes the effective parameters: ``MODEL.params.json``."""
    model = Path(model)
    return model.with_name(model.name + PARAMS_SUFFIX)


def _configured_detector(args):
    """The detector ``fit`` trains: defaults < --config < named options and --set (in order).

    Every value is checked by the estimator's own validation before any data is read.
    """
    from .detector import SimpleNetDetector, validate_params

    params = {}
    if args.config:
        config = read_config(args.config)
        _check_names(config, f"--config {args.config}")
        params.update(config)
    params.update(
        {key[len("param_") :]: value for key, value in vars(args).items() if key.startswith("param_")}
    )
    extra = _set_options(args.set or [])
    _check_names(extra, "--set")
    params.update(extra)
    detector = SimpleNetDetector(verbose=not args.quiet, **params)
    validate_params(detector.get_params(deep=False))  # InvalidParameterError naming the parameter
    return detector


class _ListParams(argparse.Action):
    """``fit --list-params``: every estimator parameter, its default and its valid values."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(parameters_table(), flush=True)
        parser.exit()


def parameters_table() -> str:
    """A markdown table of the estimator's parameters: name, default, valid values."""
    from sklearn.utils._param_validation import make_constraint

    from .detector import PARAMETER_CONSTRAINTS, SimpleNetDetector

    defaults = SimpleNetDetector().get_params()
    lines = ["| parameter | default | valid values |", "| --- | --- | --- |"]
    for name in SimpleNetDetector._get_param_names():
        if name in _CLI_PARAMS:
            continue
        constraints = PARAMETER_CONSTRAINTS[name]
        valid = ", ".join(str(make_constraint(constraint)) for constraint in constraints)
        lines.append(f"| {name} | {json.dumps(_jsonable(defaults[name]))} | {valid} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- evaluation
def evaluate_detector(detector, paths, labels, masks=None) -> dict[str, float]:
    """Image metrics, and pixel metrics when every anomalous image has a mask.

    One pass through the network: image scores (higher = more anomalous, ``-score_samples``)
    and, when masks are given, the maps at the network's resolution come from
    ``detector.anomaly_map(paths, return_scores=True)``; the masks are brought to the maps'
    resolution by :func:`sksimplenet.metrics.masks_at_map_resolution`.

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
    import numpy as np

    labels = np.asarray(labels)
    scores, maps = _scores_and_maps(detector, paths, keep_maps=_has_masks(masks))
    return _metrics(labels, scores, _pixel_masks(detector, labels, masks, maps), maps)


def _has_masks(masks) -> bool:
    return masks is not None and any(mask is not None for mask in masks)


def _scores_and_maps(detector, paths, keep_maps: bool):
    """Image anomaly scores ``(n,)`` float64 and, when ``keep_maps``, the maps, in one pass."""
    import numpy as np

    if keep_maps:
        maps, scores = detector.anomaly_map(paths, return_scores=True)
        return np.asarray(scores, dtype=np.float64), maps
    return -np.asarray(detector.score_samples(paths), dtype=np.float64), None


def _pixel_masks(detector, labels, masks, maps):
    """The ground-truth masks on the maps' pixel grid, or None without masks or maps."""
    from .metrics import masks_at_map_resolution

    if maps is None or masks is None:
        return None
    return masks_at_map_resolution(
        masks, labels, detector.resize, detector.crop_size, [m.shape for m in maps]
    )


def _metrics(labels, scores, pixel_masks=None, maps=None) -> dict[str, float]:
    """:func:`sksimplenet.metrics.evaluate`, with pixel metrics when there are masks on the maps' grid."""
    from .metrics import evaluate

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


def _output_stems(paths: list[str]) -> list[str]:
    """A file-name stem per image: its own, with its index added where stems repeat."""
    stems = [Path(path).stem for path in paths]
    repeated = {stem for stem in stems if stems.count(stem) > 1}
    return [f"{stem}_{index}" if stem in repeated else stem for index, stem in enumerate(stems)]


def _caption(score: float, threshold: float) -> str:
    if score > threshold:
        return f"score {score:.4g} > threshold {threshold:.4g}: anomalous"
    return f"score {score:.4g} <= threshold {threshold:.4g}: normal"


def _write_mask(path: Path, anomaly_map, threshold: float) -> None:
    """A PNG of ``anomaly_map >= threshold``: 255 there, 0 elsewhere (unseen NaN pixels too)."""
    import numpy as np
    from PIL import Image

    with np.errstate(invalid="ignore"):
        mask = np.asarray(anomaly_map) >= threshold
    Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(path)


# ----------------------------------------------------------------------------- commands
def _fit(args) -> None:
    detector = _configured_detector(args)
    output = Path(args.output)
    split = _load_split(args)
    if not split["train_paths"]:
        raise CommandError(f"no training images in {args.dataset} (layout {args.layout})")
    _note(args, f"fitting on {len(split['train_paths'])} images from {args.dataset}")
    detector.fit(split["train_paths"])
    detector.provenance_["split"] = _split_settings(args)
    detector.set_params(verbose=False)
    _save_detector(detector, output)
    params = {
        name: _jsonable(value) for name, value in detector.get_params().items() if name not in _CLI_PARAMS
    }
    params_file = params_path(output)
    params_file.write_text(json.dumps(params, indent=2) + "\n", encoding="utf-8")
    rows = [("epochs", f"{len(detector.loss_history_)}")]
    if detector.loss_history_:
        rows.append(("training loss (last epoch)", f"{detector.loss_history_[-1]:.6g}"))
    if detector.validation_history_:
        rows.append(("held-out criterion (last epoch)", f"{detector.validation_history_[-1]:.6g}"))
    rows.append(("threshold (image anomaly score)", f"{detector.threshold_:.6g}"))
    print("| result | value |\n| --- | ---: |", flush=True)
    print("\n".join(f"| {name} | {value} |" for name, value in rows), flush=True)
    _note(
        args, f"fitted in {detector.fit_time_:.1f}s; model written to {output}, parameters to {params_file}"
    )


def _evaluate(args) -> None:
    import numpy as np

    from .metrics import per_type_metrics, threshold_metrics, write_per_image_csv

    detector = load_detector(args.model, allow_pickle=args.allow_pickle)
    _use_device(args, detector)
    split = _load_split(args)
    paths, labels = split.get("test_paths", []), np.asarray(split.get("test_labels", []))
    if not paths:
        raise CommandError(f"no test images in {args.dataset} (layout {args.layout})")
    if len(np.unique(labels)) < 2:
        raise CommandError("the test set needs normal and anomalous images for its metrics")
    types = split.get("test_categories") or ["normal" if label == 1 else "anomalous" for label in labels]
    _warn_if_trained_on(detector, args, paths)
    detector.set_params(verbose=not args.quiet)
    _note(args, f"scoring {len(paths)} test images")
    masks = split.get("test_masks")
    keep_maps = args.report is not None or _has_masks(masks)  # one pass for maps and scores
    scores, maps = _scores_and_maps(detector, paths, keep_maps)
    threshold = float(detector.threshold_)
    pixel_masks = _pixel_masks(detector, labels, masks, maps)
    metrics = _metrics(labels, scores, pixel_masks, maps)
    at_threshold = threshold_metrics(labels, scores, threshold)
    per_type = per_type_metrics(labels, scores, types, threshold)

    print(metrics_table(metrics), flush=True)
    print(f"\nat the model's threshold {threshold:.6g} (anomalous = score above it)", flush=True)
    print(_threshold_table(at_threshold), flush=True)
    print("\nper defect type", flush=True)
    print(_per_type_table(per_type), flush=True)
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        document = {"metrics": metrics, "at_threshold": at_threshold, "per_type": per_type}
        path.write_text(json.dumps(document, indent=2) + "\n")
        _note(args, f"metrics written to {path}")
    if args.per_image:
        path = Path(args.per_image)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_per_image_csv(path, paths, labels, scores, threshold, types)
        _note(args, f"per-image results written to {path}")
    if args.report:
        from .report import write_report

        report = write_report(
            args.report,
            images=paths,
            labels=labels,
            scores=scores,
            threshold=threshold,
            maps=maps,
            masks=pixel_masks,
            defect_types=types,
            metrics=metrics,
            resize=detector.resize,
            crop_size=detector.crop_size,
            title=f"{Path(args.model).name} on {args.dataset}",
        )
        _note(args, f"report written to {report}")


def _threshold_table(at_threshold: dict) -> str:
    rows = [
        ("true negatives (normal, passed)", at_threshold["tn"]),
        ("false positives (normal, flagged)", at_threshold["fp"]),
        ("false negatives (anomalous, passed)", at_threshold["fn"]),
        ("true positives (anomalous, flagged)", at_threshold["tp"]),
        ("false-positive rate", f"{at_threshold['false_positive_rate']:.4f}"),
        ("recall", f"{at_threshold['recall']:.4f}"),
        ("precision", f"{at_threshold['precision']:.4f}"),
        ("F1 (anomalous class)", f"{at_threshold['f1']:.4f}"),
    ]
    return "\n".join(["| at threshold | value |", "| --- | ---: |"] + [f"| {k} | {v} |" for k, v in rows])


def _per_type_table(per_type: dict) -> str:
    def cell(value):
        return "—" if value is None else f"{value:.4f}"

    lines = [
        "| type | images | flagged | recall | false-positive rate | image AUROC |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, row in per_type.items():
        lines.append(
            f"| {name} | {row['n_images']} | {row['n_flagged']} | {cell(row['recall'])} | "
            f"{cell(row['false_positive_rate'])} | {cell(row['image_auroc'])} |"
        )
    return "\n".join(lines)


def _file_message(error: BaseException, path: str) -> str:
    """The error of one image, as one line that names its file (and not a position in a chunk)."""
    message = re.sub(r"^Image \d+: ", "", _one_line(error))
    return message if str(path) in message else f"{path}: {message}"


def _score_chunk(detector, chunk: list[str], keep_maps: bool, fail_fast: bool):
    """Yield ``(path, score, map, error)`` for each image of ``chunk``, in one pass.

    When an image of the chunk cannot be read, the chunk is scored again image by image, so
    that the others are scored and the one that failed is named.
    """
    import numpy as np

    try:
        if keep_maps:
            maps, scores = detector.anomaly_map(chunk, original_size=True, return_scores=True)
        else:
            scores, maps = -np.asarray(detector.score_samples(chunk)), [None] * len(chunk)
    except _FILE_ERRORS as error:
        if len(chunk) > 1:
            for path in chunk:
                yield from _score_chunk(detector, [path], keep_maps, fail_fast)
            return
        message = _file_message(error, chunk[0])
        if fail_fast:
            raise CommandError(message) from None
        yield chunk[0], None, None, message
        return
    for path, anomaly_map, score in zip(chunk, maps, scores):
        yield path, float(score), anomaly_map, None


def _predict_paths(items: list[str]) -> list[str]:
    from .datasets import image_files

    paths = []
    for item in items:
        item = Path(item)
        if item.is_dir():
            found = [str(path) for path in image_files(item)]
            if not found:
                raise CommandError(f"no image files in {item}")
            paths += found
        elif item.is_file():
            paths.append(str(item))
        else:
            raise CommandError(f"image path {item} does not exist")
    return paths


def _predict(args) -> int:
    import numpy as np

    outdir = Path(args.output) if args.output is not None else None
    for flag, given in (("--masks", args.masks), ("--maps", args.maps), ("--no-overlays", args.no_overlays)):
        if given and outdir is None:
            raise CommandError(f"{flag} needs -o OUTDIR")
    overlays = outdir is not None and not args.no_overlays
    if overlays:
        from .plotting import _matplotlib

        _matplotlib()  # a missing matplotlib is reported before any scoring
    detector = load_detector(args.model, allow_pickle=args.allow_pickle)
    _use_device(args, detector)
    detector.set_params(verbose=False)  # one progress bar, over images, below
    paths = _predict_paths(args.images)
    threshold = float(detector.threshold_)
    keep_maps = overlays or args.masks or args.maps
    stems = _output_stems(paths)
    chunk_size = _CHUNK_WITH_MAPS if keep_maps else _CHUNK_SCORES_ONLY
    records, low, high = [], math.inf, -math.inf
    if outdir is not None:
        outdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sksimplenet-") as scratch:
        # Full-size maps wait on disk for the colour range of the whole run: in OUTDIR when
        # asked for (--maps), else in a temporary folder.
        map_dir = outdir if args.maps else Path(scratch)
        with _progress(args, len(paths), "scoring", "image") as bar:
            for start in range(0, len(paths), chunk_size):
                chunk = paths[start : start + chunk_size]
                for path, score, anomaly_map, error in _score_chunk(
                    detector, chunk, keep_maps, args.fail_fast
                ):
                    stem = stems[len(records)]
                    record = {"path": path, "status": "ok" if error is None else "error", "error": error}
                    record.update(
                        score=score, label=None if score is None else (-1 if score > threshold else 1)
                    )
                    if error is not None:
                        _warn(f"skipped: {error}")
                    elif keep_maps:
                        np.save(map_dir / f"{stem}_map.npy", anomaly_map)
                        if args.maps:
                            record["map"] = f"{stem}_map.npy"
                        if args.masks:
                            _write_mask(outdir / f"{stem}_mask.png", anomaly_map, threshold)
                            record["mask"] = f"{stem}_mask.png"
                        if not np.isnan(anomaly_map).all():
                            low = min(low, float(np.nanmin(anomaly_map)))
                            high = max(high, float(np.nanmax(anomaly_map)))
                    records.append(record)
                    bar.update(1)
        color_range = None
        if overlays and math.isfinite(low):
            color_range = _draw_overlays(args, records, stems, map_dir, threshold, low, high)
    _write_predictions(args, records, outdir, threshold, color_range)
    failed = sum(record["status"] == "error" for record in records)
    if outdir is not None:
        _note(args, f"{len(records) - failed} images scored; results written to {outdir}")
    if failed:
        _warn(
            f"{failed} of {len(records)} images could not be read (status 'error' in the results); "
            "the others were scored"
        )
        return EXIT_SOME_FAILED
    return 0


def _draw_overlays(args, records, stems, map_dir: Path, threshold: float, low: float, high: float):
    """One overlay per scored image, all on one colour scale with the threshold at its middle."""
    import numpy as np

    from .plotting import centred_range, save_overlay

    vmin, vmax = centred_range(low, high, threshold)
    outdir = Path(args.output)
    with _progress(args, len(records), "overlays", "image") as bar:
        for record, stem in zip(records, stems):
            if record["status"] == "ok":
                name = f"{stem}_overlay.png"
                save_overlay(
                    outdir / name,
                    record["path"],
                    np.load(map_dir / f"{stem}_map.npy"),
                    threshold=threshold,
                    vmin=vmin,
                    vmax=vmax,
                    colorbar=True,
                    caption=_caption(record["score"], threshold),
                )
                record["overlay"] = name
            bar.update(1)
    return [vmin, vmax]


def _write_predictions(args, records, outdir: Path | None, threshold: float, color_range) -> None:
    """``predictions.csv`` or ``predictions.json`` in ``outdir``, or the same on stdout."""
    if args.format == "json":
        document = {
            "model": str(args.model),
            "threshold": threshold,
            "color_range": color_range,
            "images": [
                {
                    key: record.get(key)
                    for key in ("path", "status", "score", "label", "error", "overlay", "mask", "map")
                }
                for record in records
            ],
        }
        text = json.dumps(document, indent=2) + "\n"
    else:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["path", "score", "label", "status", "error"])
        for record in records:
            score, label = record["score"], record["label"]
            writer.writerow(
                [
                    record["path"],
                    "" if score is None else f"{score:.6g}",
                    "" if label is None else label,
                    record["status"],
                    record["error"] or "",
                ]
            )
        text = buffer.getvalue()
    if outdir is None:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        (outdir / f"predictions.{args.format}").write_text(text, encoding="utf-8")


def _export(args) -> None:
    detector = load_detector(args.model, allow_pickle=args.allow_pickle)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    detector.export_onnx(output, opset=args.opset)
    height, width = detector.input_size_
    _note(
        args,
        f"ONNX graph written to {output}: input 'images' float32 (N, 3, {height}, {width}), RGB in [0, 1]; "
        f"outputs 'anomaly_map' and 'score' (anomalous when score > {detector.threshold_:.6g})",
    )


def _demo(args) -> None:
    from .datasets import make_synthetic
    from .detector import SimpleNetDetector

    start = time.perf_counter()
    images, labels, masks = make_synthetic(**DEMO_DATA)
    train, test = images[:DEMO_N_TRAIN], images[DEMO_N_TRAIN:]
    test_labels, test_masks = labels[DEMO_N_TRAIN:], masks[DEMO_N_TRAIN:]
    params = dict(DEMO_DETECTOR, device=args.device or "cpu", verbose=not args.quiet)
    if args.epochs is not None:
        params["epochs"] = args.epochs
    _note(
        args,
        f"demo: {len(train)} normal {DEMO_DATA['texture']} images to train on, {len(test)} to test "
        f"({int((test_labels == -1).sum())} with defects)",
    )
    detector = SimpleNetDetector(**params).fit(train)
    maps, scores = detector.anomaly_map(test, return_scores=True)
    metrics = _metrics(test_labels, scores, _pixel_masks(detector, test_labels, list(test_masks), maps), maps)
    print(metrics_table(metrics), flush=True)

    import numpy as np

    from .plotting import centred_range, plot_grid, save_overlay

    outdir = Path(args.output)
    outdir.mkdir(parents=True, exist_ok=True)
    threshold = float(detector.threshold_)
    vmin, vmax = centred_range(float(np.min(maps)), float(np.max(maps)), threshold)
    for index, (image, anomaly_map, score) in enumerate(zip(test, maps, scores)):
        kind = "normal" if test_labels[index] == 1 else "defect"
        save_overlay(
            outdir / f"test_{index:02d}_{kind}_overlay.png",
            image,
            anomaly_map,
            threshold=threshold,
            vmin=vmin,
            vmax=vmax,
            colorbar=True,
            caption=_caption(float(score), threshold),
        )
    plot_grid(
        test,
        maps,
        scores=scores,
        labels=test_labels,
        threshold=threshold,
        ncols=5,
        path=outdir / "grid.png",
        vmin=vmin,
        vmax=vmax,
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


def _quiet_option(parser: argparse.ArgumentParser, default) -> None:
    # A subcommand's --quiet leaves the value of one given before the command as it is.
    parser.add_argument(
        "--quiet", action="store_true", default=default, help="no progress bars or notes on stderr"
    )


def _epochs(text: str) -> int | str:
    """``--epochs``: a positive integer or ``auto``."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'auto', got {text!r}") from None


def _number_or(word: str):
    """An option type: a number (int or float), or ``word``."""

    def convert(text: str):
        if text == word:
            return text
        try:
            return int(text)
        except ValueError:
            pass
        try:
            return float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number or {word!r}, got {text!r}") from None

    convert.__name__ = f"number or {word}"
    return convert


def _floats(text: str):
    """``0.3`` → 0.3, ``0.2,0.4`` → (0.2, 0.4)."""
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number or numbers separated by commas, got {text!r}"
        ) from None
    return values[0] if len(values) == 1 else values


def _names(text: str):
    """``layer2,layer3`` → ("layer2", "layer3"); ``none`` → None."""
    if text.strip().lower() == "none":
        return None
    return tuple(part.strip() for part in text.split(","))


def _none_or_text(text: str):
    return None if text.strip().lower() == "none" else text


def _parameter_options(fit: argparse.ArgumentParser) -> None:
    """Named options for the common estimator parameters (each sets the parameter of its name)."""
    group = fit.add_argument_group(
        "estimator parameters",
        "Each sets the SimpleNetDetector parameter of the same name (--seed: random_state); "
        "not given, the parameter keeps its value from --config, else the detector's default "
        "(listed by --list-params). --set NAME=VALUE sets any parameter and is applied last.",
    )

    def option(flag, param, **kwargs):
        group.add_argument(flag, dest=f"param_{param}", default=argparse.SUPPRESS, **kwargs)

    option(
        "--backbone",
        "backbone",
        metavar="NAME",
        help="e.g. wide_resnet50_2 (default), resnet18, efficientnet_lite0",
    )
    option(
        "--layers", "layers", type=_names, metavar="L1,L2", help="backbone modules used, or none (automatic)"
    )
    option(
        "--weights",
        "weights",
        type=_none_or_text,
        metavar="W",
        help="DEFAULT, a torchvision weights name, a file, or none",
    )
    option(
        "--epochs", "epochs", type=_epochs, metavar="N|auto", help='an integer or "auto" (about 1,000 steps)'
    )
    option("--batch-size", "batch_size", type=int, metavar="N", help="images per training step")
    option(
        "--patch-fraction", "patch_fraction", type=float, metavar="F", help="share of a step's patches used"
    )
    option("--sigma", "sigma", type=_floats, metavar="S[,S...]", help="noise standard deviation(s)")
    option(
        "--feature-scaling",
        "feature_scaling",
        type=_none_or_text,
        choices=("standardize", None),
        metavar="standardize|none",
        help="per-channel standardisation of the features, or none (the paper)",
    )
    option(
        "--validation-fraction",
        "validation_fraction",
        type=float,
        metavar="F",
        help="share of the training images held out to set the threshold",
    )
    option(
        "--contamination",
        "contamination",
        type=_number_or("auto"),
        metavar="F|auto",
        help="share of normal images above the threshold",
    )
    option(
        "--image-score",
        "image_score",
        type=_number_or("max"),
        metavar="F|max",
        help="image score: mean of the map's top F share, or its maximum",
    )
    option("--resize", "resize", type=_size, metavar="N|H,W", help="N (shorter side) or H,W")
    option("--crop-size", "crop_size", type=_size, metavar="N|H,W|none", help="centre crop, or none")
    option("--seed", "random_state", type=int, metavar="N", help="random_state")
    option("--device", "device", metavar="DEVICE", help="auto, cpu, cuda or cuda:N")
    option("--precision", "precision", choices=PRECISIONS, help=PRECISION_HELP)
    option("--n-jobs", "n_jobs", type=int, metavar="N", help="processes decoding image files (-1: all cores)")
    option("--cache-dir", "cache_dir", metavar="DIR", help="keep the training feature cache in a file there")


def _scoring_options(command: argparse.ArgumentParser) -> None:
    """Where, and in which backbone precision, a saved model scores (default: as saved)."""
    command.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    command.add_argument("--precision", choices=PRECISIONS, help=f"{PRECISION_HELP} (default: the model's)")


def _dataset_options(command: argparse.ArgumentParser, layouts) -> None:
    """DATASET, --layout and the options that say how it splits into training and test images."""
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


def _add_fit(sub) -> None:
    """``sksimplenet fit``: a data set, the model file, and every estimator parameter."""
    fit = sub.add_parser(
        "fit",
        help="train a detector on normal images and save it",
        description="Train on the normal training images of DATASET and save the detector, and its "
        f"parameters as JSON in MODEL{PARAMS_SUFFIX} (give that file to --config to repeat the run). "
        "Where the parameters come from, later ones winning: the defaults of SimpleNetDetector "
        "(print them with --list-params; docs/quality.md says where they differ from the paper's), "
        "then --config FILE, then the named options, then --set NAME=VALUE. Every value is checked "
        "before any data is read. Prints the last epoch's training loss and held-out criterion and "
        "the decision threshold. The default backbone, wide_resnet50_2, downloads its ImageNet "
        "weights on first use; efficientnet_lite0 runs offline.",
    )
    _quiet_option(fit, argparse.SUPPRESS)
    _dataset_options(fit, LAYOUTS)
    fit.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="MODEL",
        help="model file: .safetensors (safe format) or anything else (joblib)",
    )
    fit.add_argument(
        "--config",
        metavar="FILE",
        help="estimator parameters from a .json or .toml file of name = value (e.g. MODEL.params.json)",
    )
    fit.add_argument(
        "--set",
        action="append",
        metavar="NAME=VALUE",
        help="set any estimator parameter; VALUE is read as a Python/JSON literal when it is one "
        "(8, 1e-4, none, true, 224,224, \"('layer2',)\"), else as text; repeatable",
    )
    fit.add_argument(
        "--list-params", action=_ListParams, help="print every parameter, its default and valid values"
    )
    _parameter_options(fit)
    fit.set_defaults(run=_fit)


def _add_evaluate(sub) -> None:
    """``sksimplenet evaluate``: a model, a labelled data set, and what to write."""
    evaluate = sub.add_parser("evaluate", help="metrics of a saved detector on a labelled test set")
    _quiet_option(evaluate, argparse.SUPPRESS)
    evaluate.add_argument("model", metavar="MODEL")
    _allow_pickle_option(evaluate)
    _dataset_options(evaluate, LAYOUTS)
    evaluate.add_argument(
        "--json",
        metavar="OUT.json",
        help="also write the metrics (threshold-free, at threshold, per type) as JSON",
    )
    evaluate.add_argument(
        "--per-image",
        metavar="OUT.csv",
        help="write one row per test image: path, defect_type, label, score, predicted, correct",
    )
    evaluate.add_argument(
        "--report",
        metavar="DIR",
        help="write DIR/report.html (self-contained: tables, ROC and PRO curves, score histogram, "
        "worst false positives and negatives) and DIR/per_image.csv",
    )
    _scoring_options(evaluate)
    evaluate.set_defaults(run=_evaluate)


def _add_predict(sub) -> None:
    """``sksimplenet predict``: a model, images or folders, and the outputs."""
    predict = sub.add_parser(
        "predict",
        help="score images: CSV or JSON of path, score, label, status; overlays, masks, maps",
        description="score = image anomaly score (higher = more anomalous); label = +1 normal, -1 "
        "anomalous (score > the model's threshold). An image that cannot be read gets status 'error' "
        "and its message; the others are scored, and the exit status is then 1 (--fail-fast: stop "
        "at the first, exit status 2, no results written). With -o, overlays show every map on one "
        "colour scale centred on the threshold, with a colour bar and the image's score; "
        "--masks and --maps add map >= threshold as PNG and the maps as .npy, at each image's size.",
    )
    _quiet_option(predict, argparse.SUPPRESS)
    predict.add_argument("model", metavar="MODEL")
    _allow_pickle_option(predict)
    predict.add_argument("images", metavar="IMAGES_OR_FOLDER", nargs="+")
    predict.add_argument(
        "-o",
        "--output",
        metavar="OUTDIR",
        help="write OUTDIR/predictions.csv (or .json) and an overlay per image (default: results to stdout)",
    )
    predict.add_argument(
        "--format",
        choices=("csv", "json"),
        default="csv",
        help="results as CSV or JSON (default: %(default)s)",
    )
    predict.add_argument("--masks", action="store_true", help="also write STEM_mask.png: map >= threshold")
    predict.add_argument("--maps", action="store_true", help="also write STEM_map.npy: the anomaly map")
    predict.add_argument("--no-overlays", action="store_true", help="write no overlay PNGs")
    predict.add_argument(
        "--fail-fast", action="store_true", help="stop at the first image that cannot be read (exit status 2)"
    )
    _scoring_options(predict)
    predict.set_defaults(run=_predict)


def _add_export(sub) -> None:
    """``sksimplenet export``: a model and the ONNX file."""
    export = sub.add_parser(
        "export",
        help="write a saved detector's inference graph to an ONNX file",
        description="Write MODEL's whole inference path (backbone to anomaly map and image score) to "
        "an ONNX file that runs without PyTorch or this package; see docs/deployment.md. Needs the "
        "package onnx (pip install 'sksimplenet[export]').",
    )
    _quiet_option(export, argparse.SUPPRESS)
    export.add_argument("model", metavar="MODEL")
    export.add_argument("output", metavar="OUT.onnx")
    _allow_pickle_option(export)
    export.add_argument(
        "--opset", type=int, default=17, help="ONNX operator set version (default: %(default)s)"
    )
    export.set_defaults(run=_export)


def _add_demo(sub) -> None:
    """``sksimplenet demo``: where to write, and the few settings it takes."""
    demo = sub.add_parser("demo", help="end to end on generated images, offline, in a minute or two on a CPU")
    _quiet_option(demo, argparse.SUPPRESS)
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


def build_parser() -> argparse.ArgumentParser:
    """The ``sksimplenet`` argument parser (``fit``, ``evaluate``, ``predict``, ``export``, ``demo``).

    Building it imports neither PyTorch nor the estimator.
    """
    parser = _Parser(
        prog="sksimplenet",
        description="SimpleNet image anomaly detection: fit, evaluate, predict, export, demo.",
    )
    parser.add_argument("--version", action="version", version=f"sksimplenet {__version__}")
    _quiet_option(parser, False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for add_command in (_add_fit, _add_evaluate, _add_predict, _add_export, _add_demo):
        add_command(sub)
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
        0 on success; 1 when ``predict`` could not read some images (and scored the
        others); 2 on any other error (reported as one line on standard error); 130 when
        interrupted.
    """
    try:
        args = build_parser().parse_args(argv)
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
