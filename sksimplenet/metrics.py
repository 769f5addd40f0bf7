"""Anomaly detection metrics: image and pixel AUROC, AUPRO and best F1; metrics at a threshold.

Conventions
-----------
Scores and maps: higher = more anomalous. ``SimpleNetDetector.score_samples`` follows
scikit-learn (higher = more normal), so pass ``-detector.score_samples(X)`` as image
scores; ``detector.anomaly_map(X)`` is already "higher = more anomalous".

Image labels (one rule, decided by the values present):

- values in ``{-1, +1}``: scikit-learn outlier labels, **-1 is anomalous**;
- booleans or values in ``{0, 1}``: **True / 1 is anomalous**.

Any other set of values, or labels of a single class, raise ``ValueError``.

Decisions at a threshold: an image is **predicted anomalous when its score is strictly
above the threshold**, as ``SimpleNetDetector.predict`` decides with ``threshold_``
(``decision_function < 0``). Anomalous is the positive class of every rate.

Masks: nonzero / True = defect pixel. A mask may be an array, a path to a mask image (read
one at a time, when needed) or None (an image without defects).

Memory
------
The pixel metrics never gather every pixel: a first pass finds the global score range; a
second pass bins each image's scores into ``n_thresholds`` equal-width bins between the
global minimum and maximum and adds them to histograms of defect pixels, normal pixels and
(for AUPRO) region-weighted defect pixels. Memory is ``O(n_thresholds + one image)``
whatever the number of images; every curve is then read off the cumulative histograms at
the bin edges.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from sklearn.metrics import (
    accuracy_score,
    auc,
    average_precision_score,
    confusion_matrix,
    f1_score,
    make_scorer,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
)

__all__ = [
    "anomaly_scorer",
    "aupro",
    "best_pixel_threshold",
    "operating_threshold",
    "evaluate",
    "f1_max",
    "image_auroc",
    "image_f1_max",
    "masks_at_map_resolution",
    "per_image_table",
    "per_type_metrics",
    "pixel_auroc",
    "pixel_f1_max",
    "pro_curve",
    "threshold_metrics",
    "write_per_image_csv",
]

PER_IMAGE_COLUMNS = ("path", "defect_type", "label", "score", "predicted", "correct")
#: How tables name the keys of :func:`evaluate`'s result.
METRIC_LABELS = {
    "image_auroc": "image AUROC",
    "image_f1_max": "image F1-max",
    "pixel_auroc": "pixel AUROC",
    "aupro": "AUPRO",
    "pixel_f1_max": "pixel F1-max",
}

DEFAULT_N_THRESHOLDS = 65_536

# Connected components of ground-truth masks as the MVTec AD evaluation code finds them:
# 8-connectivity (diagonal neighbours belong to the same region).
_REGION_STRUCTURE = np.ones((3, 3), dtype=int)


# ----------------------------------------------------------------------------- image level
def _is_anomalous(labels, both_classes: bool = True) -> np.ndarray:
    """Image labels (see the module docstring) -> boolean "is anomalous", shape ``(n,)``.

    ``both_classes``: raise ``ValueError`` unless normal and anomalous images are present.
    """
    y = np.asarray(labels)
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"labels must be a non-empty 1-D array, got shape {y.shape}")
    if y.dtype == bool:
        anomalous = y
    else:
        if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
            raise ValueError(f"labels must be booleans or numbers, got dtype {y.dtype}")
        values = set(np.unique(y).tolist())
        if values <= {-1, 1}:
            anomalous = y == -1
        elif values <= {0, 1}:
            anomalous = y == 1
        else:
            raise ValueError(
                "labels must be +1/-1 (-1 anomalous) or 0/1 / bool (1 anomalous); "
                f"got values {sorted(values)}"
            )
    if both_classes and (anomalous.all() or not anomalous.any()):
        raise ValueError("labels hold a single class; both normal and anomalous images are needed")
    return anomalous


def _scores(scores, n: int) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.shape != (n,):
        raise ValueError(f"scores must have shape ({n},) like the labels, got {s.shape}")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinite values")
    return s


def _f1_curve(tp: np.ndarray, fp: np.ndarray, n_positive: float) -> np.ndarray:
    """``2 TP / (2 TP + FP + FN)`` at each threshold; ``FN = n_positive - TP``."""
    denominator = np.asarray(tp + fp + n_positive, dtype=np.float64)
    return np.divide(2 * tp, denominator, out=np.zeros(denominator.shape), where=denominator > 0)


def _best_f1(tp: np.ndarray, fp: np.ndarray, n_positive: float) -> float:
    """Largest F1 over thresholds (:func:`_f1_curve`)."""
    return float(_f1_curve(tp, fp, n_positive).max())


def image_auroc(labels, scores) -> float:
    """Area under the ROC curve of image scores.

    Parameters
    ----------
    labels : array-like of shape (n_images,)
        +1 normal / -1 anomalous (scikit-learn outlier labels), or bool / 0-1 with
        True / 1 anomalous. Both classes must be present.
    scores : array-like of shape (n_images,)
        Anomaly scores, higher = more anomalous.

    Returns
    -------
    float
        0.5 for chance, 1.0 when every anomalous image scores above every normal one.

    Examples
    --------
    >>> image_auroc([1, 1, -1], [0.1, 0.3, 0.2])
    0.5
    """
    anomalous = _is_anomalous(labels)
    return float(roc_auc_score(anomalous, _scores(scores, anomalous.size)))


def f1_max(y_true, y_score) -> float:
    """Best F1 over all thresholds ``score >= t``, computed exactly.

    Parameters
    ----------
    y_true : array-like of any shape
        True / nonzero = positive (anomalous image or defect pixel). For +1/-1 image
        labels use :func:`image_f1_max`.
    y_score : array-like of the same shape as ``y_true``
        Higher = more likely positive.

    Returns
    -------
    float
        ``max_t 2 P(t) R(t) / (P(t) + R(t))`` from :func:`sklearn.metrics.precision_recall_curve`.

    Notes
    -----
    Every value is held in memory; for many large maps use :func:`pixel_f1_max`.
    """
    truth = np.asarray(y_true) != 0
    score = np.asarray(y_score, dtype=np.float64)
    if truth.shape != score.shape:
        raise ValueError(f"y_true has shape {truth.shape} but y_score has shape {score.shape}")
    if truth.size == 0 or truth.all() or not truth.any():
        raise ValueError(
            "y_true holds a single class (for +1/-1 labels, where -1 is anomalous, use image_f1_max)"
        )
    if not np.isfinite(score).all():
        raise ValueError("y_score contains NaN or infinite values")
    precision, recall, _ = precision_recall_curve(truth.ravel(), score.ravel())
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(denominator), where=denominator > 0)
    return float(f1.max())


def image_f1_max(labels, scores) -> float:
    """Best F1 of the anomalous class over all thresholds on the image scores.

    Parameters
    ----------
    labels : array-like of shape (n_images,)
        +1 normal / -1 anomalous, or bool / 0-1 with True / 1 anomalous.
    scores : array-like of shape (n_images,)
        Higher = more anomalous.

    Returns
    -------
    float
    """
    anomalous = _is_anomalous(labels)
    return f1_max(anomalous, _scores(scores, anomalous.size))


# ----------------------------------------------------------------------------- model selection
def _validation_labels(y) -> np.ndarray:
    try:
        return _is_anomalous(y)
    except ValueError as error:
        raise ValueError(
            f"{error}. Scoring a detector for model selection needs labelled validation images of both "
            "classes in every fold: split with a stratified splitter (StratifiedKFold) on labelled images"
        ) from None


def _anomaly_roc_auc(y_true, decision) -> float:
    return float(roc_auc_score(_validation_labels(y_true), -np.asarray(decision)))


def _anomaly_average_precision(y_true, decision) -> float:
    return float(average_precision_score(_validation_labels(y_true), -np.asarray(decision)))


def _anomaly_f1(y_true, predicted) -> float:
    return float(f1_score(_validation_labels(y_true), np.asarray(predicted) == -1, zero_division=0))


_SCORERS = {
    "roc_auc": (_anomaly_roc_auc, "decision_function"),
    "average_precision": (_anomaly_average_precision, "decision_function"),
    "f1": (_anomaly_f1, "predict"),
}


def anomaly_scorer(metric: str = "roc_auc"):
    """A scikit-learn scorer of how well a detector finds the **anomalous** class.

    For ``scoring=`` in :class:`~sklearn.model_selection.GridSearchCV` or
    :func:`~sklearn.model_selection.cross_val_score`. scikit-learn's own scorers treat the
    larger label (+1, normal) as the positive class and the larger ``decision_function`` as
    more positive, so ``"average_precision"`` and ``"f1"`` measure the normal class there;
    these use -1 (anomalous) as the positive class, with anomaly scores
    ``-decision_function(X)``.

    Parameters
    ----------
    metric : {"roc_auc", "average_precision", "f1"}, default="roc_auc"
        ``"roc_auc"``: image AUROC (the same for either class); ``"average_precision"``:
        average precision of the anomalous class; ``"f1"``: F1 of the anomalous class at
        the detector's own threshold (its ``predict``).

    Returns
    -------
    callable
        ``scorer(estimator, X, y)``, higher = better. ``y`` holds +1 (normal) and -1
        (anomalous): a search needs labelled validation images of both classes in every
        fold (use :class:`~sklearn.model_selection.StratifiedKFold`); a fold without
        both raises a ``ValueError`` that says so.
    """
    if metric not in _SCORERS:
        raise ValueError(f"metric must be one of {sorted(_SCORERS)}, got {metric!r}")
    function, response_method = _SCORERS[metric]
    return make_scorer(function, response_method=response_method)


def _candidate_thresholds(scores: np.ndarray) -> np.ndarray:
    """Midpoints between consecutive distinct scores, and one below and one above them all."""
    distinct = np.unique(scores)
    spread = max(float(distinct[-1] - distinct[0]), 1.0)
    return np.r_[distinct[0] - spread, (distinct[:-1] + distinct[1:]) / 2, distinct[-1] + spread]


def operating_threshold(labels, scores, criterion: str = "f1", value: float | None = None) -> float:
    """A threshold on image scores chosen on labelled validation images.

    Candidates are the midpoints between consecutive distinct scores (an image is
    anomalous when its score is above the threshold), so the decisions on these images are
    the same for any threshold between the two scores it falls between.

    Parameters
    ----------
    labels : array-like of shape (n_images,)
        +1 normal / -1 anomalous, or bool / 0-1 with True / 1 anomalous; both classes.
    scores : array-like of shape (n_images,)
        Image anomaly scores, higher = more anomalous.
    criterion : {"f1", "max_fpr", "min_recall"}, default="f1"
        ``"f1"``: the largest F1 of the anomalous class (anomalib's adaptive threshold);
        ``"max_fpr"``: the lowest threshold whose false-positive rate is at most ``value``
        (the most recall within a false-alarm budget); ``"min_recall"``: the highest
        threshold whose recall is at least ``value`` (the fewest false alarms that catch
        that share of defects). Ties go to the higher threshold.
    value : float in [0, 1], default=None
        The budget of ``"max_fpr"`` or ``"min_recall"``.

    Returns
    -------
    float
    """
    anomalous = _is_anomalous(labels)
    scores = _scores(scores, anomalous.size)
    candidates = _candidate_thresholds(scores)
    flagged = scores[None, :] > candidates[:, None]  # (n_candidates, n_images)
    tp = (flagged & anomalous).sum(1)
    fp = (flagged & ~anomalous).sum(1)
    recall, fpr = tp / anomalous.sum(), fp / (~anomalous).sum()
    if criterion == "f1":
        f1 = _f1_curve(tp, fp, anomalous.sum())
        return float(candidates[np.flatnonzero(f1 == f1.max())[-1]])
    if criterion not in ("max_fpr", "min_recall"):
        raise ValueError(f"criterion must be 'f1', 'max_fpr' or 'min_recall', got {criterion!r}")
    if value is None or not 0 <= value <= 1:
        raise ValueError(f"criterion {criterion!r} needs a value in [0, 1], got {value!r}")
    if criterion == "max_fpr":
        return float(candidates[np.flatnonzero(fpr <= value)[0]])  # fpr falls as the threshold rises
    return float(candidates[np.flatnonzero(recall >= value)[-1]])


# ----------------------------------------------------------------------------- at a threshold
def _threshold(threshold) -> float:
    value = float(threshold)
    if not np.isfinite(value):
        raise ValueError(f"threshold must be a finite number, got {threshold!r}")
    return value


def threshold_metrics(labels, scores, threshold: float) -> dict[str, float | int]:
    """Confusion matrix and rates of the decisions ``score > threshold``, anomalous = positive.

    Parameters
    ----------
    labels : array-like of shape (n_images,)
        +1 normal / -1 anomalous, or bool / 0-1 with True / 1 anomalous. Both classes must
        be present.
    scores : array-like of shape (n_images,)
        Image anomaly scores, higher = more anomalous.
    threshold : float
        An image is predicted anomalous when its score is strictly above it (for a fitted
        detector: ``detector.threshold_``, which makes these the decisions of
        ``detector.predict``).

    Returns
    -------
    dict of str to float or int
        ``threshold``; the confusion matrix ``tn``, ``fp``, ``fn``, ``tp`` (int; normal
        images predicted normal, normal predicted anomalous, anomalous predicted normal,
        anomalous predicted anomalous); ``false_positive_rate`` (``fp / (fp + tn)``),
        ``recall`` (true-positive rate, ``tp / (tp + fn)``), ``precision``
        (``tp / (tp + fp)``, 0 when nothing is predicted anomalous), ``f1`` (of the
        anomalous class, 0 when ``tp == 0``) and ``accuracy``.

    Examples
    --------
    >>> m = threshold_metrics([1, 1, 1, -1, -1], [0.1, 0.2, 0.6, 0.7, 0.3], threshold=0.5)
    >>> m["tn"], m["fp"], m["fn"], m["tp"], m["recall"]
    (2, 1, 1, 1, 0.5)
    """
    anomalous = _is_anomalous(labels)
    flagged = _scores(scores, anomalous.size) > _threshold(threshold)
    tn, fp, fn, tp = (int(v) for v in confusion_matrix(anomalous, flagged, labels=[False, True]).ravel())
    return {
        "threshold": float(threshold),
        "tn": tn,
        "fp": fp,
        "fn": fn,
        "tp": tp,
        "false_positive_rate": fp / (fp + tn),
        "recall": float(recall_score(anomalous, flagged)),
        "precision": float(precision_score(anomalous, flagged, zero_division=0)),
        "f1": float(f1_score(anomalous, flagged, zero_division=0)),
        "accuracy": float(accuracy_score(anomalous, flagged)),
    }


def _defect_types(defect_types, anomalous: np.ndarray) -> list[str]:
    if defect_types is None:
        return ["anomalous" if a else "normal" for a in anomalous]
    types = [str(t) for t in defect_types]
    if len(types) != anomalous.size:
        raise ValueError(f"{anomalous.size} labels but {len(types)} defect types")
    return types


def per_type_metrics(labels, scores, defect_types, threshold: float) -> dict[str, dict]:
    """Per defect type: how many images, how many are caught at the threshold, and AUROC.

    Parameters
    ----------
    labels : array-like of shape (n_images,)
        +1 normal / -1 anomalous, or bool / 0-1 with True / 1 anomalous. Every image of a
        type must have the same label.
    scores : array-like of shape (n_images,)
        Image anomaly scores, higher = more anomalous.
    defect_types : sequence of str, length n_images
        The type of each image, e.g. the ``test_categories`` of a loader in
        :mod:`sksimplenet.datasets` (``"good"`` for normal images).
    threshold : float
        Predicted anomalous when ``score > threshold``.

    Returns
    -------
    dict of str to dict
        One entry per type, in order of first appearance, each a dict with ``label`` (+1
        for a type of normal images, -1 for a defect type), ``n_images``, ``n_flagged``
        (images predicted anomalous), ``recall`` (``n_flagged / n_images``; None for a
        normal type), ``false_positive_rate`` (the same share for a normal type; None for
        a defect type) and ``image_auroc`` (AUROC of this type's images against all normal
        images; None for a normal type, or when there is no normal image).

    Raises
    ------
    ValueError
        A type holds both normal and anomalous images, or the lengths differ.
    """
    anomalous = _is_anomalous(labels, both_classes=False)
    scores = _scores(scores, anomalous.size)
    types = _defect_types(defect_types, anomalous)
    flagged = scores > _threshold(threshold)
    normal_scores = scores[~anomalous]
    result = {}
    for name in dict.fromkeys(types):
        members = np.array([t == name for t in types])
        kinds = set(anomalous[members].tolist())
        if len(kinds) > 1:
            raise ValueError(f"defect type {name!r} holds both normal and anomalous images")
        is_defect = kinds == {True}
        share = float(flagged[members].mean())
        auroc = None
        if is_defect and normal_scores.size:
            truth = np.r_[np.zeros(normal_scores.size, bool), np.ones(int(members.sum()), bool)]
            auroc = float(roc_auc_score(truth, np.r_[normal_scores, scores[members]]))
        result[name] = {
            "label": -1 if is_defect else 1,
            "n_images": int(members.sum()),
            "n_flagged": int(flagged[members].sum()),
            "recall": share if is_defect else None,
            "false_positive_rate": None if is_defect else share,
            "image_auroc": auroc,
        }
    return result


def per_image_table(paths, labels, scores, threshold: float, defect_types=None) -> list[dict]:
    """One row per image: where it is, what it is, its score and the decision at the threshold.

    Parameters
    ----------
    paths : sequence of str or path, length n_images
        Image names (file paths; anything else is written with ``str``).
    labels : array-like of shape (n_images,)
        +1 normal / -1 anomalous, or bool / 0-1 with True / 1 anomalous.
    scores : array-like of shape (n_images,)
        Image anomaly scores, higher = more anomalous.
    threshold : float
        Predicted anomalous when ``score > threshold``.
    defect_types : sequence of str, length n_images, default=None
        Defect type of each image (``"good"`` for normal ones, as the loaders name them);
        None: ``"normal"`` or ``"anomalous"`` from the labels.

    Returns
    -------
    list of dict
        In the images' order, each with the keys of ``PER_IMAGE_COLUMNS``: ``path`` (str),
        ``defect_type`` (str), ``label`` (+1 normal / -1 anomalous), ``score`` (float),
        ``predicted`` (+1 / -1) and ``correct`` (bool: ``predicted == label``).
    """
    anomalous = _is_anomalous(labels, both_classes=False)
    scores = _scores(scores, anomalous.size)
    types = _defect_types(defect_types, anomalous)
    if len(paths) != anomalous.size:
        raise ValueError(f"{anomalous.size} labels but {len(paths)} paths")
    flagged = scores > _threshold(threshold)
    return [
        {
            "path": os.fspath(path) if isinstance(path, (str, os.PathLike)) else str(path),
            "defect_type": kind,
            "label": -1 if is_anomalous else 1,
            "score": float(score),
            "predicted": -1 if is_flagged else 1,
            "correct": bool(is_flagged == is_anomalous),
        }
        for path, kind, is_anomalous, score, is_flagged in zip(paths, types, anomalous, scores, flagged)
    ]


def write_per_image_csv(file, paths, labels, scores, threshold: float, defect_types=None) -> None:
    """Write :func:`per_image_table` as CSV with the header ``PER_IMAGE_COLUMNS``.

    Columns: ``path``, ``defect_type``, ``label`` (1 normal / -1 anomalous), ``score``
    (shortest text that reads back as the same float), ``predicted`` (1 / -1, anomalous
    when ``score > threshold``) and ``correct`` (``True`` / ``False``).

    Parameters
    ----------
    file : str, path or text stream
        Destination; a path is created (its folder must exist) or overwritten.
    paths, labels, scores, threshold, defect_types
        As in :func:`per_image_table`.
    """
    rows = per_image_table(paths, labels, scores, threshold, defect_types)

    def write(handle) -> None:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(PER_IMAGE_COLUMNS)
        writer.writerows([row[key] for key in PER_IMAGE_COLUMNS] for row in rows)

    if isinstance(file, (str, os.PathLike)):
        with open(file, "w", newline="", encoding="utf-8") as handle:
            write(handle)
    else:
        write(file)


# ----------------------------------------------------------------------------- pixel level
def _as_sequence(items, name: str):
    if isinstance(items, np.ndarray):
        if items.ndim == 2:
            return [items]
        if items.ndim == 3:
            return items
        raise ValueError(f"{name} must have shape (n_images, height, width), got {items.shape}")
    if isinstance(items, (str, os.PathLike)):
        raise TypeError(f"{name} must be a sequence of per-image items, not a single path")
    return items if isinstance(items, Sequence) else list(items)


def _read_mask(mask, shape: tuple[int, ...], index: int) -> np.ndarray:
    if mask is None:
        return np.zeros(shape, dtype=bool)
    if isinstance(mask, (str, os.PathLike)):
        from PIL import Image

        with Image.open(mask) as image:
            mask = np.asarray(image.convert("L"))
    mask = np.asarray(mask)
    if mask.shape != shape:
        raise ValueError(
            f"mask {index} has shape {mask.shape} but its map has shape {shape}; maps must be on the "
            "masks' pixel grid (e.g. SimpleNetDetector.anomaly_map(X, original_size=True))"
        )
    return mask != 0


def _read_map(amap, index: int) -> np.ndarray:
    amap = np.asarray(amap)
    if amap.ndim != 2:
        raise ValueError(f"map {index} must be 2-D (height, width), got shape {amap.shape}")
    if not np.isfinite(amap).all():
        raise ValueError(f"map {index} contains NaN or infinite values")
    return amap


def masks_at_map_resolution(masks, labels, resize, crop_size, shapes) -> list[np.ndarray] | None:
    """Ground-truth masks brought onto the anomaly maps' pixel grid, preprocessed like the images.

    Each mask goes through the images' preprocessing,
    :func:`sksimplenet.image_io.preprocess` (bilinear resize with antialiasing, then centre
    crop), and is thresholded at 0.5: a map pixel is a defect pixel when at least half of
    what it covers is defect. The result can be passed to :func:`evaluate`,
    :func:`pixel_auroc` or :func:`aupro` with ``SimpleNetDetector.anomaly_map(X)`` (maps at
    the network's input resolution).

    Parameters
    ----------
    masks : sequence of length n_images
        One item per test image: a mask array of shape ``(height_i, width_i)`` (nonzero =
        defect) on the image's own pixel grid, a path to a mask image, or None for an image
        without defects. A path to a missing file counts as None.
    labels : array-like of shape (n_images,)
        +1 normal / -1 anomalous.
    resize : int, (int, int) or None
        The detector's ``resize``.
    crop_size : int, (int, int) or None
        The detector's ``crop_size``.
    shapes : sequence of (int, int), length n_images
        The shape ``(H, W)`` of each image's anomaly map (``input_size_`` for maps from
        ``anomaly_map(X)``).

    Returns
    -------
    list of ndarray of bool, each of shape ``shapes[i]``, or None
        All False for an image without a mask. None when an anomalous image has no mask
        (or its file is missing): pixel metrics then cannot be computed.

    Raises
    ------
    ValueError
        A mask is not 2-D or not readable (:func:`sksimplenet.image_io.load_mask`), or its
        shape after preprocessing is not its map's.
    """
    from .image_io import load_mask, mask_coverage

    out = []
    for index, (mask, label, shape) in enumerate(zip(masks, labels, shapes)):
        shape = tuple(int(v) for v in shape)
        if isinstance(mask, (str, os.PathLike)) and not os.path.isfile(mask):
            mask = None
        if mask is None:
            if label == -1:
                return None
            out.append(np.zeros(shape, dtype=bool))
            continue
        tensor = mask_coverage(load_mask(mask, index), resize, crop_size)
        if tuple(tensor.shape) != shape:
            raise ValueError(
                f"mask {index} is {tuple(tensor.shape)} after preprocessing but its map is {shape}"
            )
        out.append(tensor.numpy() >= 0.5)
    return out


@dataclass
class _PixelHistograms:
    """Per-bin counts of normal and defect pixels (bin ``b`` covers scores ``>= edges[b]``)."""

    normal: np.ndarray  # (n_bins,) int64
    defect: np.ndarray  # (n_bins,) int64
    region_overlap: np.ndarray | None  # (n_bins,) float64: sum of 1 / region size
    n_regions: int
    low: float  # global minimum score: edges[0]
    high: float  # global maximum score

    @property
    def thresholds(self) -> np.ndarray:
        """The thresholds of :meth:`rates_from_top`'s points: ``inf``, then the bin edges downwards."""
        n_bins = self.normal.size
        edges = self.low + (self.high - self.low) * np.arange(n_bins) / n_bins
        return np.concatenate([[np.inf], edges[::-1]])

    def rates_from_top(self, hist: np.ndarray, total: float) -> np.ndarray:
        """Share of ``total`` at or above each threshold, highest threshold first; starts at 0."""
        return np.concatenate([[0.0], np.cumsum(hist[::-1]) / total])

    @property
    def fpr(self) -> np.ndarray:
        return self.rates_from_top(self.normal, self.normal.sum())

    @property
    def tpr(self) -> np.ndarray:
        return self.rates_from_top(self.defect, self.defect.sum())


def _pixel_histograms(masks, maps, n_thresholds: int, regions: bool) -> _PixelHistograms:
    if int(n_thresholds) != n_thresholds or n_thresholds < 2:
        raise ValueError(f"n_thresholds must be an integer >= 2, got {n_thresholds!r}")
    n_bins = int(n_thresholds)
    masks, maps = _as_sequence(masks, "masks"), _as_sequence(maps, "maps")
    if len(masks) != len(maps):
        raise ValueError(f"{len(masks)} masks but {len(maps)} maps")
    if len(maps) == 0:
        raise ValueError("no images")

    # Pass 1: global score range.
    low, high = np.inf, -np.inf
    for i, amap in enumerate(maps):
        amap = _read_map(amap, i)
        low, high = min(low, float(amap.min())), max(high, float(amap.max()))
    scale = n_bins / (high - low) if high > low else 0.0

    # Pass 2: histograms, one image at a time.
    normal = np.zeros(n_bins, np.int64)
    defect = np.zeros(n_bins, np.int64)
    overlap = np.zeros(n_bins, np.float64) if regions else None
    n_regions = 0
    for i, (mask, amap) in enumerate(zip(masks, maps)):
        amap = _read_map(amap, i)
        mask = _read_mask(mask, amap.shape, i)
        bins = ((amap.astype(np.float64) - low) * scale).astype(np.intp)
        np.minimum(bins, n_bins - 1, out=bins)
        normal += np.bincount(bins[~mask], minlength=n_bins)
        defect_bins = bins[mask]
        defect += np.bincount(defect_bins, minlength=n_bins)
        if regions and defect_bins.size:
            labelled, count = ndimage.label(mask, structure=_REGION_STRUCTURE)
            sizes = np.bincount(labelled.ravel())
            overlap += np.bincount(defect_bins, weights=1.0 / sizes[labelled[mask]], minlength=n_bins)
            n_regions += count
    if defect.sum() == 0:
        raise ValueError("the masks hold no defect pixel; pixel metrics need at least one")
    if normal.sum() == 0:
        raise ValueError("the masks hold no defect-free pixel; pixel metrics need at least one")
    return _PixelHistograms(normal, defect, overlap, n_regions, low, high)


def _trapezoid(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1])) / 2) if x.size > 1 else 0.0


def _auroc_from(hist: _PixelHistograms) -> float:
    return float(auc(hist.fpr, hist.tpr))


def _f1_from(hist: _PixelHistograms) -> float:
    tp = np.cumsum(hist.defect[::-1]).astype(np.float64)
    fp = np.cumsum(hist.normal[::-1]).astype(np.float64)
    return _best_f1(tp, fp, float(hist.defect.sum()))


def _partial_area(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Trapezoidal area under ``y(x)`` (``x`` non-decreasing) from ``x[0]`` to ``x_max``.

    ``y`` at ``x_max`` is interpolated linearly between its neighbouring points.
    """
    k = int(np.searchsorted(x, x_max, side="right"))  # x[:k] <= x_max < x[k:]
    area = _trapezoid(x[:k], y[:k])
    if k < x.size:
        y_at = y[k - 1] + (y[k] - y[k - 1]) * (x_max - x[k - 1]) / (x[k] - x[k - 1])
        area += 0.5 * (y[k - 1] + y_at) * (x_max - x[k - 1])
    return float(area)


def _pro_from(hist: _PixelHistograms) -> np.ndarray:
    """PRO at each of ``hist.thresholds``, the points of ``hist.fpr``."""
    return np.minimum(hist.rates_from_top(hist.region_overlap, hist.n_regions), 1.0)


def _aupro_from(hist: _PixelHistograms, max_fpr: float) -> float:
    return float(_partial_area(hist.fpr, _pro_from(hist), max_fpr) / max_fpr)


def _check_max_fpr(max_fpr: float) -> float:
    if not 0 < max_fpr <= 1:
        raise ValueError(f"max_fpr must be in (0, 1], got {max_fpr!r}")
    return float(max_fpr)


def pixel_auroc(masks, maps, *, n_thresholds: int = DEFAULT_N_THRESHOLDS) -> float:
    """Area under the ROC curve of all pixels of all images, in bounded memory.

    Parameters
    ----------
    masks : array-like of shape (n_images, height, width), or sequence of n_images items
        Ground truth, nonzero / True = defect. Items may be ``(height_i, width_i)`` arrays,
        paths to mask images, or None (no defect).
    maps : array-like of shape (n_images, height, width), or sequence of n_images arrays
        Anomaly maps, higher = more anomalous, each of its mask's shape.
    n_thresholds : int, default=65536
        Equal-width score bins between the global minimum and maximum.

    Returns
    -------
    float

    Notes
    -----
    The ROC curve is read at the bin edges and integrated with the trapezoidal rule. This
    is exact for pixel pairs (defect, normal) whose scores fall in different bins and
    counts pairs sharing a bin as ties (half). The error is therefore at most
    ``0.5 * sum_b defect_b * normal_b / (n_defect * n_normal)``; for continuous scores and
    the default bins it is typically below 1e-5.
    """
    return _auroc_from(_pixel_histograms(masks, maps, n_thresholds, regions=False))


def pixel_f1_max(masks, maps, *, n_thresholds: int = DEFAULT_N_THRESHOLDS) -> float:
    """Best F1 of the defect pixels over thresholds at the bin edges, in bounded memory.

    Parameters
    ----------
    masks, maps, n_thresholds
        As in :func:`pixel_auroc`.

    Returns
    -------
    float

    Notes
    -----
    Only thresholds on the ``n_thresholds`` bin edges are tried, so pixels in the same bin
    cannot be separated; the result is at most the exact :func:`f1_max` and close to it
    when no single bin holds many pixels.
    """
    return _f1_from(_pixel_histograms(masks, maps, n_thresholds, regions=False))


def aupro(masks, maps, *, max_fpr: float = 0.3, n_thresholds: int = DEFAULT_N_THRESHOLDS) -> float:
    """Normalised area under the per-region-overlap (PRO) curve up to ``max_fpr``.

    The MVTec AD definition (Bergmann et al., IJCV 2021): the regions are the connected
    components of every ground-truth mask, 8-connected as in the MVTec AD evaluation code.
    At a threshold ``t``, PRO is the mean over all regions of the share of the region's
    pixels scoring ``>= t``, and FPR is the share of all defect-free pixels (of all images)
    scoring ``>= t``. PRO is integrated over FPR from 0 to ``max_fpr`` with the trapezoidal
    rule, the point at exactly ``max_fpr`` interpolated linearly, and divided by ``max_fpr``.

    Parameters
    ----------
    masks, maps
        As in :func:`pixel_auroc`.
    max_fpr : float in (0, 1], default=0.3
        Integration limit.
    n_thresholds : int, default=65536
        Equal-width score bins between the global minimum and maximum; the curve is read
        at their edges.

    Returns
    -------
    float
        1.0 for a perfect map; ``max_fpr / 2`` for a constant map.

    Notes
    -----
    Between two consecutive bin edges the exact (staircase) curve is replaced by a straight
    line, which changes the area by at most ``sum_b dFPR_b * dPRO_b / 2`` before the division
    by ``max_fpr``: small unless one bin holds a large share of the pixels.
    """
    max_fpr = _check_max_fpr(max_fpr)
    return _aupro_from(_pixel_histograms(masks, maps, n_thresholds, regions=True), max_fpr)


def best_pixel_threshold(masks, maps, *, n_thresholds: int = DEFAULT_N_THRESHOLDS) -> float:
    """The pixel threshold of :func:`pixel_f1_max`: defect pixels are ``map >= threshold``.

    Parameters
    ----------
    masks, maps, n_thresholds
        As in :func:`pixel_auroc`.

    Returns
    -------
    float
        The bin edge at which the pixel F1 is largest.
    """
    hist = _pixel_histograms(masks, maps, n_thresholds, regions=False)
    tp = np.cumsum(hist.defect[::-1]).astype(np.float64)
    fp = np.cumsum(hist.normal[::-1]).astype(np.float64)
    return float(hist.thresholds[1:][int(np.argmax(_f1_curve(tp, fp, float(hist.defect.sum()))))])


def pro_curve(masks, maps, *, n_thresholds: int = DEFAULT_N_THRESHOLDS):
    """The per-region-overlap curve that :func:`aupro` integrates, in bounded memory.

    Parameters
    ----------
    masks, maps
        As in :func:`pixel_auroc`.
    n_thresholds : int, default=65536
        Equal-width score bins between the global minimum and maximum; the curve is read
        at their edges.

    Returns
    -------
    fpr : ndarray of shape (n_thresholds + 1,)
        Share of the defect-free pixels scoring ``>= thresholds[i]``; non-decreasing, from 0
        to 1.
    pro : ndarray of shape (n_thresholds + 1,)
        Mean over the 8-connected regions of all masks of the share of the region's pixels
        scoring ``>= thresholds[i]``; from 0 to 1.
    thresholds : ndarray of shape (n_thresholds + 1,)
        Decreasing: ``inf`` (no pixel above it), then the bin edges down to the global
        minimum.

    Notes
    -----
    ``aupro(masks, maps, max_fpr=m)`` is the trapezoidal area under this curve from FPR 0
    to ``m`` (PRO interpolated linearly at ``m``), divided by ``m``.
    """
    hist = _pixel_histograms(masks, maps, n_thresholds, regions=True)
    return hist.fpr, _pro_from(hist), hist.thresholds


# ----------------------------------------------------------------------------- everything
def evaluate(
    labels,
    scores,
    masks=None,
    maps=None,
    *,
    max_fpr: float = 0.3,
    n_thresholds: int = DEFAULT_N_THRESHOLDS,
    return_pro_curve: bool = False,
):
    """Image metrics, and pixel metrics when masks are given, in one call.

    Parameters
    ----------
    labels : array-like of shape (n_images,)
        +1 normal / -1 anomalous, or bool / 0-1 with True / 1 anomalous.
    scores : array-like of shape (n_images,)
        Image anomaly scores, higher = more anomalous.
    masks : array-like of shape (n_images, height, width), sequence or None
        Ground-truth masks as in :func:`pixel_auroc` (for example the ``test_masks`` of a
        loader in :mod:`sksimplenet.datasets`: mask paths, None for normal images).
    maps : array-like of shape (n_images, height, width), sequence or None
        Anomaly maps; required with ``masks``.
    max_fpr : float, default=0.3
        Integration limit of AUPRO.
    n_thresholds : int, default=65536
        Score bins of the pixel metrics.
    return_pro_curve : bool, default=False
        Also return :func:`pro_curve`'s ``(fpr, pro, thresholds)`` (None without masks),
        read off the same histograms.

    Returns
    -------
    metrics : dict of str to float
        ``image_auroc`` and ``image_f1_max``; with masks also ``pixel_auroc``, ``aupro`` and
        ``pixel_f1_max``. The pixel histograms are built once for all three.
    curve : tuple of ndarray or None
        Only with ``return_pro_curve``.
    """
    result = {"image_auroc": image_auroc(labels, scores), "image_f1_max": image_f1_max(labels, scores)}
    if masks is None:
        if maps is not None:
            raise ValueError("maps were given without masks")
        return (result, None) if return_pro_curve else result
    if maps is None:
        raise ValueError("masks were given without maps")
    max_fpr = _check_max_fpr(max_fpr)
    masks, maps = _as_sequence(masks, "masks"), _as_sequence(maps, "maps")
    n_images = len(np.asarray(labels))
    if len(masks) != n_images or len(maps) != n_images:
        raise ValueError(f"{n_images} labels but {len(masks)} masks and {len(maps)} maps")
    hist = _pixel_histograms(masks, maps, n_thresholds, regions=True)
    result["pixel_auroc"] = _auroc_from(hist)
    result["aupro"] = _aupro_from(hist, max_fpr)
    result["pixel_f1_max"] = _f1_from(hist)
    if return_pro_curve:
        return result, (hist.fpr, _pro_from(hist), hist.thresholds)
    return result
