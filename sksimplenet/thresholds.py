"""Decision thresholds of a fitted detector, and the record of how each was set.

Each function takes scores (or maps) that were already computed and returns the threshold
with its record, the dict :attr:`SimpleNetDetector.calibration_` stores: ``fit`` sets
``threshold_`` with :func:`quantile_threshold` from its held-out images, and
:meth:`SimpleNetDetector.calibrate` sets it again with whichever of these its arguments ask
for. Image scores and map values are anomaly scores: higher = more anomalous; an image
(a pixel) is anomalous when its score is above the threshold.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch

from .metrics import _is_anomalous, best_pixel_threshold, masks_at_map_resolution, operating_threshold

# A warning is given when the images cannot set a threshold within this factor of contamination.
_FALSE_ALARM_SLACK = 3.0
_WARNED_FEW_IMAGES: set[str] = set()  # warnings already given in this process


def warn_if_few_images(n_images: int, contamination: float, source: str, stacklevel: int = 2) -> None:
    """Warn, once per process, when too few normal images set the threshold for the share asked for.

    Of ``n`` normal images, the largest scores above about ``1 / (n + 1)`` of new normal
    images like them, so no quantile of them can promise fewer false alarms than that.
    Cross-validation fits many small detectors: the warning is given once, not per fold.

    Parameters
    ----------
    n_images : int
        How many normal images set the threshold (0: nothing to warn about).
    contamination : float in (0, 0.5]
        The share of normal images the threshold should flag.
    source : str
        What the images are, for the message ("held-out", "calibration").
    stacklevel : int, default=2
        ``warnings.warn``'s, counted from the caller of this function (2: the caller's caller).
    """
    if n_images == 0 or 1.0 / (n_images + 1) <= _FALSE_ALARM_SLACK * contamination or _WARNED_FEW_IMAGES:
        return
    _WARNED_FEW_IMAGES.add(source)
    warnings.warn(
        f"Only {n_images} {source} image{'s' if n_images > 1 else ''} set the threshold: about "
        f"{1 / (n_images + 1):.0%} of new normal images will score above it, not the "
        f"{contamination:.0%} contamination asks for. Use more normal images (fit on more, raise "
        "validation_fraction, or calibrate on more). This warning is given once per process.",
        UserWarning,
        stacklevel=stacklevel + 1,
    )


def quantile_threshold(scores, contamination: float, images: str) -> tuple[float, dict]:
    """The threshold above which ``contamination`` of these normal images' scores lie.

    Parameters
    ----------
    scores : array-like of shape (n_images,)
        Image anomaly scores of normal images.
    contamination : float in (0, 0.5]
    images : str
        What the images are, for the record ("held-out training images").

    Returns
    -------
    threshold : float
        The ``1 - contamination`` quantile of ``scores``.
    record : dict
        ``{"method": "quantile", "contamination", "n_images", "images"}``.
    """
    scores = np.asarray(scores, dtype=float)
    record = {
        "method": "quantile",
        "contamination": float(contamination),
        "n_images": int(scores.size),
        "images": images,
    }
    return float(np.quantile(scores, 1.0 - contamination)), record


def labelled_threshold(
    labels, scores, *, max_fpr: float | None = None, min_recall: float | None = None
) -> tuple[float, dict]:
    """The threshold chosen on labelled validation images (:func:`sksimplenet.metrics.operating_threshold`).

    Parameters
    ----------
    labels : array-like of shape (n_images,)
        +1 normal / -1 anomalous, or bool / 0-1 with True / 1 anomalous, as
        :func:`~sksimplenet.metrics.operating_threshold` reads them; both classes present.
    scores : array-like of shape (n_images,)
        Image anomaly scores.
    max_fpr, min_recall : float in [0, 1], default=None
        At most one: the most recall within a false-positive rate of ``max_fpr``, or the
        fewest false alarms that catch ``min_recall`` of the anomalous images. Neither: the
        largest F1 of the anomalous class.

    Returns
    -------
    threshold : float
    record : dict
        ``{"method": "f1" | "max_fpr" | "min_recall", "value", "n_images", "n_anomalous", "images"}``.
    """
    if max_fpr is not None and min_recall is not None:
        raise ValueError("give max_fpr or min_recall, not both")
    criterion, value = "f1", None
    if max_fpr is not None:
        criterion, value = "max_fpr", max_fpr
    elif min_recall is not None:
        criterion, value = "min_recall", min_recall
    anomalous = _is_anomalous(labels)  # the record counts the labels as the threshold reads them
    record = {
        "method": criterion,
        "value": None if value is None else float(value),
        "n_images": int(anomalous.size),
        "n_anomalous": int(anomalous.sum()),
        "images": "labelled validation images",
    }
    return operating_threshold(labels, scores, criterion, value), record


def normal_pixel_threshold(maps: Sequence[torch.Tensor], contamination: float) -> tuple[float, dict]:
    """The pixel threshold that about ``contamination`` of normal images' maps exceed somewhere.

    Parameters
    ----------
    maps : sequence of tensors of shape (height, width)
        Anomaly maps of normal images; NaN (pixels never seen) is ignored.
    contamination : float in (0, 0.5]

    Returns
    -------
    threshold : float
        The ``1 - contamination`` quantile of the maps' maxima.
    record : dict
        ``{"method": "quantile of the map maxima", "contamination"}``.
    """
    peaks = np.array([float(torch.nan_to_num(m, nan=-np.inf).max()) for m in maps])
    record = {"method": "quantile of the map maxima", "contamination": float(contamination)}
    return float(np.quantile(peaks, 1.0 - contamination)), record


def labelled_pixel_threshold(
    maps: Sequence[torch.Tensor], masks, labels, resize, crop_size
) -> tuple[float, dict]:
    """The pixel threshold with the largest pixel F1 on labelled images with masks.

    Parameters
    ----------
    maps : sequence of tensors of shape (height, width)
        Anomaly maps at the network's input resolution.
    masks : sequence of n_images items
        Ground-truth masks on the images' own grid (paths, arrays; None for normal images),
        brought onto the maps' grid by :func:`sksimplenet.metrics.masks_at_map_resolution`
        with the detector's ``resize`` and ``crop_size``.
    labels : array-like of shape (n_images,)
        +1 normal / -1 anomalous.
    resize, crop_size
        The detector's parameters of the same names.

    Returns
    -------
    threshold : float
    record : dict
        ``{"method": "pixel f1", "n_images"}``.
    """
    shapes = [tuple(m.shape) for m in maps]
    grid = masks_at_map_resolution(masks, labels, resize, crop_size, shapes)
    threshold = best_pixel_threshold(grid, [m.numpy() for m in maps])
    return threshold, {"method": "pixel f1", "n_images": len(maps)}
