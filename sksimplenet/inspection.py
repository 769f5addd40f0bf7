"""One Python call per inspection job: evaluate on a labelled set, score files, run the demo.

The command line's ``evaluate``, ``predict`` and ``demo`` are these functions behind an
argument parser; each returns a result object that writes what the command writes:

- :func:`evaluate` → :class:`Evaluation` (metrics, decisions at the threshold, per-type and
  per-image tables), written with :meth:`Evaluation.to_json`, :meth:`Evaluation.to_csv`
  and :meth:`Evaluation.to_html`;
- :func:`predict_files` → :class:`Predictions` (one record per file: score, decision, or
  the error that kept it from being read), written with :meth:`Predictions.write`;
- :func:`run_demo`: the whole job on generated images, offline.

Conventions are those of :mod:`sksimplenet.metrics`: scores and maps are higher = more
anomalous; an image is anomalous when its score is strictly above the detector's
``threshold_``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .metrics import (
    METRIC_LABELS,
    _defect_types,
    _is_anomalous,
    _read_mask,
    _scores,
    masks_at_map_resolution,
    per_image_table,
    per_type_metrics,
    threshold_metrics,
    write_per_image_csv,
)
from .metrics import evaluate as evaluate_metrics

__all__ = [
    "Evaluation",
    "FileError",
    "FileScore",
    "Predictions",
    "evaluate",
    "image_paths",
    "predict_files",
    "require_matplotlib",
    "run_demo",
]

# predict_files scores this many files per call: a bad file costs its chunk a second pass,
# image by image, and the maps of one chunk are what is held in memory at once.
_CHUNK_WITH_MAPS = 16
_CHUNK_SCORES_ONLY = 256
# Errors of one image file (unreadable, truncated, too large, a bad mode), as image_io raises them.
_FILE_ERRORS = (ValueError, OSError)
PREDICTION_KEYS = ("path", "status", "score", "label", "error", "overlay", "mask", "map")


def require_matplotlib() -> None:
    """Raise the ImportError that names the install, now, when matplotlib is missing: overlays,
    reports and the demo draw with it, and should fail before their work, not after."""
    from .plotting import _matplotlib

    _matplotlib()


# ----------------------------------------------------------------------------- evaluation
@dataclass
class Evaluation:
    """What an evaluation measured; every table the command line prints or writes.

    Made by :func:`evaluate` (from a fitted detector) or :meth:`from_predictions` (from
    scores and maps computed elsewhere).

    Attributes
    ----------
    names : list of str
        The images as tables show them: file paths as given, ``image <index>`` otherwise.
    images : list
        The images, for the report's pictures.
    labels : ndarray of shape (n_images,)
        +1 normal / -1 anomalous.
    scores : ndarray of shape (n_images,)
        Image anomaly scores, higher = more anomalous.
    threshold : float
        Anomalous when the score is above it (a detector's ``threshold_``).
    defect_types : list of str
        Each image's type (``"normal"`` / ``"anomalous"`` when none were given).
    metrics : dict of str to float
        Threshold-free metrics (:func:`sksimplenet.metrics.evaluate`): image AUROC and
        F1-max, and with masks pixel AUROC, AUPRO and pixel F1-max.
    at_threshold : dict
        :func:`sksimplenet.metrics.threshold_metrics` at ``threshold``.
    per_type : dict of str to dict
        :func:`sksimplenet.metrics.per_type_metrics`.
    maps : list of ndarray or None
        Anomaly maps, when kept.
    masks : list of ndarray or None
        Ground truth on the maps' grid (bool), when masks came with maps.
    pro_curve : (fpr, pro, thresholds) or None
        :func:`sksimplenet.metrics.pro_curve`, with masks.
    max_fpr : float
        AUPRO's integration limit.
    model : dict of str to str
        What the report says of the model (:func:`model_summary`); empty when unknown.
    resize, crop_size
        The detector's preprocessing, to bring images onto the maps' grid in pictures.
    """

    names: list[str]
    images: list
    labels: np.ndarray
    scores: np.ndarray
    threshold: float
    defect_types: list[str]
    metrics: dict[str, float]
    at_threshold: dict
    per_type: dict[str, dict]
    maps: list | None = None
    masks: list | None = None
    pro_curve: tuple | None = None
    max_fpr: float = 0.3
    model: dict = field(default_factory=dict)
    resize: object = None
    crop_size: object = None

    @classmethod
    def from_predictions(
        cls,
        labels,
        scores,
        threshold: float,
        *,
        images: Sequence | None = None,
        maps=None,
        masks=None,
        defect_types: Sequence[str] | None = None,
        max_fpr: float = 0.3,
        model: dict | None = None,
        resize=None,
        crop_size=None,
    ) -> Evaluation:
        """Measure scores (and maps) computed elsewhere.

        Parameters
        ----------
        labels : array-like of shape (n_images,)
            +1 normal / -1 anomalous, or bool / 0-1 with True / 1 anomalous; both classes.
        scores : array-like of shape (n_images,)
            Image anomaly scores, higher = more anomalous.
        threshold : float
            Anomalous when the score is above it.
        images : sequence of n_images images, default=None
            File paths or images, for names and pictures; None: ``image <index>``.
        maps : sequence of n_images 2-D arrays, default=None
            Anomaly maps, higher = more anomalous.
        masks : sequence of n_images items, default=None
            Ground truth on the maps' grid (arrays, mask files, or None for an image without
            defects); needs ``maps``. With at least one defect pixel, the pixel metrics and
            the PRO curve are measured.
        defect_types : sequence of str, default=None
            Each image's type; None: ``"normal"`` / ``"anomalous"`` from the labels.
        max_fpr : float, default=0.3
            AUPRO's integration limit.
        model, resize, crop_size
            Stored as they are (see the attributes).

        Raises
        ------
        ValueError
            Lengths differ, a map is not 2-D, a mask does not have its map's shape, masks
            come without maps, or the labels hold a single class.
        """
        anomalous = _is_anomalous(labels)
        scores = _scores(scores, anomalous.size)
        n = anomalous.size
        images = list(images) if images is not None else [None] * n
        if len(images) != n:
            raise ValueError(f"{n} labels but {len(images)} images")
        types = _defect_types(defect_types, anomalous)
        threshold = threshold_metrics(anomalous, scores, threshold)["threshold"]
        map_list = mask_list = None
        if masks is not None and maps is None:
            raise ValueError("masks were given without maps")
        if maps is not None:
            map_list = [np.asarray(m) for m in maps]
            if len(map_list) != n:
                raise ValueError(f"{n} labels but {len(map_list)} maps")
            for index, amap in enumerate(map_list):
                if amap.ndim != 2:
                    raise ValueError(f"map {index} must be 2-D (height, width), got shape {amap.shape}")
            if masks is not None:
                if len(masks) != n:
                    raise ValueError(f"{n} labels but {len(masks)} masks")
                mask_list = [
                    _read_mask(mask, amap.shape, i) for i, (mask, amap) in enumerate(zip(masks, map_list))
                ]
                if not any(mask.any() for mask in mask_list):
                    mask_list = None  # no defect pixel: no pixel metrics, no PRO curve
        metrics, curve = evaluate_metrics(
            anomalous,
            scores,
            mask_list,
            map_list if mask_list is not None else None,
            max_fpr=max_fpr,
            return_pro_curve=True,
        )
        names = [
            os.fspath(image) if isinstance(image, (str, os.PathLike)) else f"image {index}"
            for index, image in enumerate(images)
        ]
        return cls(
            names=names,
            images=images,
            labels=np.where(anomalous, -1, 1),
            scores=scores,
            threshold=threshold,
            defect_types=types,
            metrics=metrics,
            at_threshold=threshold_metrics(anomalous, scores, threshold),
            per_type=per_type_metrics(anomalous, scores, types, threshold),
            maps=map_list,
            masks=mask_list,
            pro_curve=curve,
            max_fpr=max_fpr,
            model=dict(model or {}),
            resize=resize,
            crop_size=crop_size,
        )

    @property
    def per_image(self) -> list[dict]:
        """One row per image: :func:`sksimplenet.metrics.per_image_table`."""
        return per_image_table(self.names, self.labels, self.scores, self.threshold, self.defect_types)

    def to_markdown(self) -> str:
        """The three tables the command line prints: metrics, at the threshold, per type."""
        return "\n".join(
            [
                metrics_table(self.metrics),
                "",
                f"at the model's threshold {self.threshold:.6g} (anomalous = score above it)",
                _threshold_table(self.at_threshold),
                "",
                "per defect type",
                _per_type_table(self.per_type),
            ]
        )

    def to_json(self, path: str | os.PathLike) -> Path:
        """Write ``{"metrics", "at_threshold", "per_type"}`` as JSON; its folder is created."""
        path = _prepared(path)
        document = {"metrics": self.metrics, "at_threshold": self.at_threshold, "per_type": self.per_type}
        path.write_text(json.dumps(document, indent=2) + "\n")
        return path

    def to_csv(self, path: str | os.PathLike) -> Path:
        """Write the per-image table (:func:`sksimplenet.metrics.write_per_image_csv`)."""
        path = _prepared(path)
        write_per_image_csv(path, self.names, self.labels, self.scores, self.threshold, self.defect_types)
        return path

    def to_html(self, folder: str | os.PathLike, title: str = "Anomaly detection report") -> Path:
        """Write ``report.html`` and ``per_image.csv`` into ``folder``.

        See :func:`sksimplenet.report.write_report`.

        Returns the path of ``report.html``. Needs matplotlib.
        """
        from .report import write_report

        return write_report(folder, self, title=title)


def _prepared(path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def metrics_table(metrics: dict[str, float]) -> str:
    """A two-column markdown table of metrics, four decimals."""
    lines = ["| metric | value |", "| --- | ---: |"]
    lines += [f"| {METRIC_LABELS.get(key, key)} | {value:.4f} |" for key, value in metrics.items()]
    return "\n".join(lines)


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


def model_summary(detector) -> dict[str, str]:
    """What an evaluation report says of the model that made it, as ``{name: value}``.

    Backbone, the parameters that differ from the defaults, the threshold and how it was
    set, the training files' digest (one SHA-256 over the sorted per-file digests of
    ``provenance_``), the package version and when it was made.
    """
    import datetime
    import hashlib

    from . import __version__
    from .card import describe_labelled_anomalies
    from .detector import SimpleNetDetector

    defaults = SimpleNetDetector().get_params()
    changed = {
        name: value
        for name, value in detector.get_params().items()
        if name not in ("backbone", "verbose") and repr(value) != repr(defaults.get(name))
    }
    backbone = detector.backbone if isinstance(detector.backbone, str) else type(detector.backbone).__name__
    record = getattr(detector, "calibration_", None) or {}
    how = f"{record.get('method')} on {record.get('n_images')} {record.get('images')}"
    if record.get("method") == "quantile" and record.get("contamination") is not None:
        how = (
            f"the {1 - record['contamination']:.0%} quantile of the image scores of {record['n_images']} "
            f"{record['images']}"
        )
    elif record.get("method") in ("max_fpr", "min_recall"):
        how += f" ({record['method']} = {record['value']})"
    files = (getattr(detector, "provenance_", None) or {}).get("files", [])
    digest = "in-memory images (no files)"
    if files:
        combined = hashlib.sha256("".join(sorted(entry["sha256"] for entry in files)).encode())
        digest = f"{combined.hexdigest()[:16]}… over {len(files)} files"
    return {
        "backbone": backbone,
        "parameters changed from the defaults": ", ".join(f"{k}={v!r}" for k, v in changed.items()) or "none",
        "threshold": f"{detector.threshold_:.6g}: {how}",
        "training files": digest,
        "labelled anomalies learned from": describe_labelled_anomalies(detector),
        "sksimplenet": __version__,
        "report written": datetime.datetime.now().isoformat(timespec="seconds"),
    }


def _warn_if_trained_on(detector, paths: Sequence, split: dict | None) -> None:
    """Warn when the test images include images the detector was fitted on."""
    from .provenance import files_seen_in_training

    fitted_with = (getattr(detector, "provenance_", None) or {}).get("split")
    if split is not None and fitted_with is not None and fitted_with != split:
        warnings.warn(
            f"the model was fitted on a split with {fitted_with}, this evaluation uses {split}: "
            "its test images may include training images",
            UserWarning,
            stacklevel=3,
        )
    if not paths or not isinstance(paths[0], (str, os.PathLike)):
        return
    seen = files_seen_in_training(detector, paths)
    if seen:
        shown = ", ".join(seen[:5]) + (f" and {len(seen) - 5} more" if len(seen) > 5 else "")
        warnings.warn(
            f"{len(seen)} of the {len(paths)} test images were training images of this model "
            f"(same file content): {shown}. The metrics overstate what it does on new images.",
            UserWarning,
            stacklevel=3,
        )


def evaluate(
    detector,
    X,
    y,
    *,
    masks=None,
    defect_types: Sequence[str] | None = None,
    keep_maps: bool = True,
    split: dict | None = None,
) -> Evaluation:
    """Score a labelled set with a fitted detector and measure it, in one pass through the network.

    Parameters
    ----------
    detector : SimpleNetDetector
        Fitted.
    X : sequence of images
        Any form :mod:`sksimplenet.image_io` accepts (e.g. the ``test_paths`` of a loader
        in :mod:`sksimplenet.datasets`).
    y : array-like of shape (n_images,)
        +1 normal / -1 anomalous; both classes.
    masks : sequence of n_images items, default=None
        Ground-truth masks (paths, arrays, or None for an image without defects) on the
        images' own pixel grid; they are preprocessed like the images
        (:func:`sksimplenet.metrics.masks_at_map_resolution`). With masks the pixel metrics
        are measured.
    defect_types : sequence of str, default=None
        Each image's type (``test_categories`` of the loaders); None: ``"normal"`` and
        ``"anomalous"`` from ``y``.
    keep_maps : bool, default=True
        Keep the anomaly maps, for :meth:`Evaluation.to_html`'s overlays (one map of the
        network's resolution per image). The maps are computed anyway when ``masks`` are
        given.
    split : dict, default=None
        How the images were split from a data set (as the command line records it in
        ``provenance_["split"]``): a differing record warns.

    Returns
    -------
    Evaluation

    Warns
    -----
    UserWarning
        Test images are training images of the detector (same file content), or ``split``
        differs from the split the detector was fitted on.
    """
    from .image_io import as_image_list

    images = as_image_list(X)
    labels = np.asarray(y)
    if labels.shape != (len(images),):
        raise ValueError(f"y has shape {labels.shape}, expected ({len(images)},)")
    if len(np.unique(labels)) < 2:
        raise ValueError("the test set needs normal and anomalous images for its metrics")
    _warn_if_trained_on(detector, images, split)
    has_masks = masks is not None and any(mask is not None for mask in masks)
    maps = pixel_masks = None
    if keep_maps or has_masks:
        maps, scores = detector.anomaly_map(images, return_scores=True)
        maps = list(maps)
    else:
        scores = -detector.score_samples(images)
    if has_masks:
        shapes = [m.shape for m in maps]
        pixel_masks = masks_at_map_resolution(masks, labels, detector.resize, detector.crop_size, shapes)
    return Evaluation.from_predictions(
        labels,
        np.asarray(scores, dtype=np.float64),
        float(detector.threshold_),
        images=images,
        maps=maps,
        masks=pixel_masks,
        defect_types=defect_types,
        model=model_summary(detector),
        resize=detector.resize,
        crop_size=detector.crop_size,
    )


# ----------------------------------------------------------------------------- predictions
@dataclass
class FileScore:
    """The result for one file: its score and decision, or the error that kept it from being read.

    Attributes
    ----------
    path : str
    score : float or None
        Image anomaly score (higher = more anomalous); None when the file could not be read.
    label : int or None
        +1 normal / -1 anomalous (``score > threshold``); None when not scored.
    error : str or None
        One line naming the file and what is wrong with it.
    map_file : Path or None
        Where its anomaly map (at the image's own size, ``.npy``) is kept, when maps were kept.
    outputs : dict of str to str
        Files :meth:`Predictions.write` wrote for it (``overlay``, ``mask``, ``map``), by name.
    """

    path: str
    score: float | None
    label: int | None
    error: str | None = None
    map_file: Path | None = None
    outputs: dict = field(default_factory=dict)

    @property
    def status(self) -> str:
        """``"ok"`` when scored, ``"error"`` when the file could not be read."""
        return "ok" if self.error is None else "error"

    def anomaly_map(self) -> np.ndarray | None:
        """The image's anomaly map at its own size (NaN where never seen), when kept."""
        return None if self.map_file is None else np.load(self.map_file)


class Predictions:
    """Results of :func:`predict_files`: one :class:`FileScore` per file, in order.

    Maps, when kept, wait in ``.npy`` files (one at a time in memory): in the folder given to
    :func:`predict_files`, else in a temporary folder removed by :meth:`close` (or when the
    object is collected). Usable as a context manager.

    Attributes
    ----------
    records : list of FileScore
    threshold : float
        The detector's ``threshold_`` when the files were scored.
    mask_threshold : float
        Its :attr:`~sksimplenet.SimpleNetDetector.mask_threshold`: masks mark ``map >= mask_threshold``.
    color_range : list of float or None
        ``[vmin, vmax]`` of the overlays :meth:`write` drew, centred on the threshold.
    """

    def __init__(self, records: list[FileScore], threshold: float, mask_threshold: float, scratch=None):
        self.records = records
        self.threshold = float(threshold)
        self.mask_threshold = float(mask_threshold)
        self.color_range: list[float] | None = None
        self._scratch = scratch

    def __enter__(self) -> Predictions:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Remove the temporary folder of maps, if any."""
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None

    @property
    def n_failed(self) -> int:
        """How many files could not be read."""
        return sum(record.error is not None for record in self.records)

    def rows(self) -> list[dict]:
        """One dict per file with the keys of ``PREDICTION_KEYS`` (files written: their names)."""
        return [
            {
                "path": record.path,
                "status": record.status,
                "score": record.score,
                "label": record.label,
                "error": record.error,
                **{key: record.outputs.get(key) for key in ("overlay", "mask", "map")},
            }
            for record in self.records
        ]

    def to_csv(self, file=None) -> str:
        """CSV of ``path, score, label, status, error`` (scores with 6 significant digits).

        Written to ``file`` (a path) when given; the text is returned either way.
        """
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["path", "score", "label", "status", "error"])
        for record in self.records:
            writer.writerow(
                [
                    record.path,
                    "" if record.score is None else f"{record.score:.6g}",
                    "" if record.label is None else record.label,
                    record.status,
                    record.error or "",
                ]
            )
        return _written(buffer.getvalue(), file)

    def to_json(self, file=None, model: str | None = None) -> str:
        """JSON of ``{"model", "threshold", "color_range", "images": rows()}``.

        Written to ``file`` (a path) when given; the text is returned either way.
        """
        document = {
            "model": model,
            "threshold": self.threshold,
            "color_range": self.color_range,
            "images": self.rows(),
        }
        return _written(json.dumps(document, indent=2) + "\n", file)

    def write(
        self,
        outdir: str | os.PathLike,
        *,
        format: str = "csv",
        overlays: bool = True,
        masks: bool = False,
        maps: bool = False,
        model: str | None = None,
        progress: bool = False,
    ) -> Path:
        """Write the results into ``outdir``: ``predictions.csv`` (or ``.json``) and, per image,
        ``STEM_overlay.png``, ``STEM_mask.png`` (``map >= mask_threshold``) and ``STEM_map.npy``.

        Overlays share one colour scale centred on the threshold, with a colour bar and the
        image's score (:func:`sksimplenet.plotting.save_overlay`); masks and maps need maps
        kept by :func:`predict_files`. Returns the path of the predictions file.
        """
        if format not in ("csv", "json"):
            raise ValueError(f"format must be 'csv' or 'json', got {format!r}")
        outdir = Path(outdir)
        outdir.mkdir(parents=True, exist_ok=True)
        scored = [record for record in self.records if record.error is None]
        if (overlays or masks or maps) and any(record.map_file is None for record in scored):
            raise ValueError("overlays, masks and maps need predict_files(..., keep_maps=True)")
        stems = dict(zip((id(r) for r in self.records), _output_stems([r.path for r in self.records])))
        for record in scored:
            stem = stems[id(record)]
            if maps:
                target = outdir / f"{stem}_map.npy"
                if record.map_file.resolve() != target.resolve():
                    shutil.copyfile(record.map_file, target)
                record.outputs["map"] = target.name
            if masks:
                _write_mask(outdir / f"{stem}_mask.png", record.anomaly_map(), self.mask_threshold)
                record.outputs["mask"] = f"{stem}_mask.png"
        if overlays:
            self._draw_overlays(outdir, stems, progress)
        path = outdir / f"predictions.{format}"
        if format == "json":
            self.to_json(path, model=model)
        else:
            self.to_csv(path)
        return path

    def _draw_overlays(self, outdir: Path, stems: dict, progress: bool) -> None:
        """One overlay per scored image, all on one colour scale with the threshold at its middle."""
        from tqdm.auto import tqdm

        from .plotting import centred_range, save_overlay

        low, high = math.inf, -math.inf
        for record in self.records:
            if record.map_file is not None:
                values = record.anomaly_map()
                if not np.isnan(values).all():
                    low, high = min(low, float(np.nanmin(values))), max(high, float(np.nanmax(values)))
        if not math.isfinite(low):
            return
        vmin, vmax = centred_range(low, high, self.threshold)
        self.color_range = [vmin, vmax]
        for record in tqdm(self.records, desc="overlays", unit="image", disable=not progress):
            if record.error is None:
                name = f"{stems[id(record)]}_overlay.png"
                save_overlay(
                    outdir / name,
                    record.path,
                    record.anomaly_map(),
                    threshold=self.threshold,
                    vmin=vmin,
                    vmax=vmax,
                    colorbar=True,
                    caption=_caption(record.score, self.threshold),
                )
                record.outputs["overlay"] = name


def _written(text: str, file) -> str:
    if file is not None:
        Path(file).write_text(text, encoding="utf-8")
    return text


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
    from PIL import Image

    with np.errstate(invalid="ignore"):
        mask = np.asarray(anomaly_map) >= threshold
    Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(path)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _file_message(error: BaseException, path: str) -> str:
    """The error of one image, as one line that names its file (and not a position in a chunk)."""
    message = re.sub(r"^Image \d+: ", "", _one_line(error))
    return message if str(path) in message else f"{path}: {message}"


class FileError(ValueError):
    """An image file could not be read (raised by :func:`predict_files` with ``fail_fast``)."""


def _score_chunk(detector, chunk: list[str], keep_maps: bool, fail_fast: bool):
    """Yield ``(path, score, map, error)`` for each image of ``chunk``, in one pass.

    When an image of the chunk cannot be read, the chunk is scored again image by image, so
    that the others are scored and the one that failed is named.
    """
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
            raise FileError(message) from None
        yield chunk[0], None, None, message
        return
    for path, anomaly_map, score in zip(chunk, maps, scores):
        yield path, float(score), anomaly_map, None


def image_paths(items: Sequence[str | os.PathLike], recursive: bool = False) -> list[str]:
    """Files and the image files of folders, in order (each folder's files sorted).

    Raises
    ------
    FileNotFoundError
        An item does not exist, or a folder holds no image file.
    """
    from .datasets import image_files

    paths = []
    for item in items:
        item = Path(item)
        if item.is_dir():
            found = [str(path) for path in image_files(item, recursive=recursive)]
            if not found:
                raise FileNotFoundError(f"no image files in {item}")
            paths += found
        elif item.is_file():
            paths.append(str(item))
        else:
            raise FileNotFoundError(f"image path {item} does not exist")
    return paths


def predict_files(
    detector,
    images: Sequence[str | os.PathLike],
    *,
    keep_maps: bool = False,
    maps_dir: str | os.PathLike | None = None,
    fail_fast: bool = False,
    recursive: bool = False,
    progress: bool = False,
) -> Predictions:
    """Score image files and folders with a fitted detector, going on past unreadable files.

    Parameters
    ----------
    detector : SimpleNetDetector
        Fitted.
    images : sequence of str or path
        Image files and folders (a folder's image files, sorted).
    keep_maps : bool, default=False
        Keep each image's anomaly map at its own size (NaN where the crop never looked), for
        :meth:`Predictions.write`'s overlays, masks and maps.
    maps_dir : str or path, default=None
        Where the maps are kept, as ``STEM_map.npy``; None: a temporary folder.
    fail_fast : bool, default=False
        Raise :class:`FileError` at the first file that cannot be read, instead of recording it.
    recursive : bool, default=False
        Also take the image files of folders' subfolders.
    progress : bool, default=False
        A progress bar over the images.

    Returns
    -------
    Predictions
    """
    from tqdm.auto import tqdm

    paths = image_paths(images, recursive=recursive)
    threshold = float(detector.threshold_)
    scratch = None
    if keep_maps and maps_dir is None:
        scratch = tempfile.TemporaryDirectory(prefix="sksimplenet-maps-")
        maps_dir = scratch.name
    if keep_maps:
        Path(maps_dir).mkdir(parents=True, exist_ok=True)
    stems = _output_stems(paths)
    # At least one network batch per call (a larger inference_batch_size gives larger chunks).
    chunk_size = max(
        _CHUNK_WITH_MAPS if keep_maps else _CHUNK_SCORES_ONLY, detector.inference_batch_size or 0
    )
    records: list[FileScore] = []
    with tqdm(total=len(paths), desc="scoring", unit="image", disable=not progress) as bar:
        for start in range(0, len(paths), chunk_size):
            for path, score, anomaly_map, error in _score_chunk(
                detector, paths[start : start + chunk_size], keep_maps, fail_fast
            ):
                record = FileScore(
                    path, score, None if score is None else (-1 if score > threshold else 1), error
                )
                if error is None and keep_maps:
                    record.map_file = Path(maps_dir) / f"{stems[len(records)]}_map.npy"
                    np.save(record.map_file, anomaly_map)
                records.append(record)
                bar.update(1)
    return Predictions(records, threshold, detector.mask_threshold, scratch)


# ----------------------------------------------------------------------------- the demo
#: The demo: generated stripes, the offline ImageNet backbone, small images, the default schedule.
DEMO_DATA = dict(n_normal=30, n_anomalous=15, texture="stripes", size=96, random_state=0)
DEMO_N_TRAIN = 20
DEMO_DETECTOR = dict(backbone="efficientnet_lite0", resize=96, crop_size=None, epochs="auto", random_state=0)


def run_demo(
    outdir: str | os.PathLike, *, epochs="auto", device: str = "cpu", verbose: bool = False
) -> Evaluation:
    """Fit on generated normal textures, score defective ones and write overlays, offline.

    Writes one overlay per test image (one colour scale centred on the threshold),
    ``grid.png`` and ``metrics.json`` into ``outdir``; returns the :class:`Evaluation` of the
    test images. Needs matplotlib.
    """
    from .datasets import make_synthetic
    from .detector import SimpleNetDetector
    from .plotting import centred_range, plot_grid, save_overlay

    require_matplotlib()
    images, labels, masks = make_synthetic(**DEMO_DATA)
    train, test = images[:DEMO_N_TRAIN], images[DEMO_N_TRAIN:]
    test_labels, test_masks = labels[DEMO_N_TRAIN:], masks[DEMO_N_TRAIN:]
    params = dict(DEMO_DETECTOR, epochs=epochs, device=device, verbose=verbose)
    detector = SimpleNetDetector(**params).fit(train)
    result = evaluate(detector, test, test_labels, masks=list(test_masks))
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    threshold = result.threshold
    maps = result.maps
    vmin, vmax = centred_range(float(np.min(maps)), float(np.max(maps)), threshold)
    for index, (image, anomaly_map, score) in enumerate(zip(test, maps, result.scores)):
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
        scores=result.scores,
        labels=test_labels,
        threshold=threshold,
        ncols=5,
        path=outdir / "grid.png",
        vmin=vmin,
        vmax=vmax,
    )
    (outdir / "metrics.json").write_text(json.dumps(result.metrics, indent=2) + "\n")
    return result
