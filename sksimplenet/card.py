"""A short, human-readable model card of a fitted :class:`~sksimplenet.SimpleNetDetector`."""

from __future__ import annotations

import os

from sklearn.utils.validation import check_is_fitted

from .precision import backbone_dtype


def _describe_weights(detector) -> str:
    if not isinstance(detector.backbone, str):
        return "the module's own"
    weights = detector.weights
    if weights is None:
        return "None (random initialisation)"
    if isinstance(weights, os.PathLike):
        return os.fspath(weights)
    return str(weights)


def _size(value) -> str:
    if value is None:
        return "None"
    if isinstance(value, (tuple, list)):
        return " x ".join(str(int(v)) for v in value)
    return str(value)


def _describe_precision(detector) -> str:
    precision = getattr(detector, "precision", "float32")
    if precision != "auto":
        return precision
    device = next(detector.model_.parameters()).device
    dtype = backbone_dtype("auto", device)
    return f"auto ({str(dtype).removeprefix('torch.')} on {device.type})"


def describe_labelled_anomalies(detector) -> str:
    """What a fitted detector learned from images labelled anomalous, in words."""
    n_images = getattr(detector, "n_labelled_anomalies_", 0)
    if not n_images:
        return "none (trained on normal images only)"
    n_masks = getattr(detector, "n_labelled_masks_", 0)
    images = f"{n_images} image{'s' if n_images > 1 else ''}"
    n_label_only = n_images - n_masks
    masked_by_image = getattr(detector, "n_labelled_by_image_", n_label_only) - n_label_only
    both = f", {masked_by_image} of them also by image" if masked_by_image else ""
    return f"{images} ({n_masks} with masks{both}, {n_label_only} by label only)"


def model_card(detector) -> str:
    """Describe a fitted detector in a few lines.

    Parameters
    ----------
    detector : SimpleNetDetector
        A fitted detector.

    Returns
    -------
    str
        One ``name: value`` line each for the backbone, its layers, weights and precision, the
        training steps' precision, the input
        size, the patch-feature shape, the number of training images (and of labelled anomalies
        learned from) and epochs, the number
        of held-out images, the final training loss and held-out criterion, the decision
        threshold ``threshold_`` and the training time ``fit_time_``.

    Raises
    ------
    sklearn.exceptions.NotFittedError
        The detector is not fitted.
    """
    check_is_fitted(detector, "model_")
    backbone = detector.backbone if isinstance(detector.backbone, str) else type(detector.backbone).__name__
    losses = detector.loss_history_
    held_out = getattr(detector, "validation_history_", [])
    rows = [
        ("backbone", backbone),
        ("layers", ", ".join(detector.model_.extractor.layers)),
        ("weights", _describe_weights(detector)),
        ("precision", _describe_precision(detector)),
        ("training precision", f"{detector.training_precision} ({detector.training_dtype_} when fitted)"),
        (
            "input size",
            f"{_size(detector.input_size_)} (resize={_size(detector.resize)}, "
            f"crop_size={_size(detector.crop_size)})",
        ),
        ("feature shape", _size(detector.feature_shape_) + " (h x w x channels)"),
        ("training images", str(detector.n_train_images_)),
        ("labelled anomalies", describe_labelled_anomalies(detector)),
        ("epochs", str(len(losses))),
        ("held-out images", str(getattr(detector, "n_held_out_images_", 0))),
        ("final loss", f"{losses[-1]:.4g}" if losses else "n/a"),
        ("final held-out criterion", f"{held_out[-1]:.4g}" if held_out else "n/a"),
        ("threshold", f"threshold_ = {detector.threshold_:.6g} (contamination={detector.contamination!r})"),
        ("fit time", f"{detector.fit_time_:.1f} s"),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [f"{type(detector).__name__} (fitted)"]
    lines += [f"  {name:<{width}} : {value}" for name, value in rows]
    return "\n".join(lines)


def fit_results(detector) -> str:
    """What a fit ended with, as a markdown table: epochs, the last training loss and held-out
    criterion, and the decision threshold (the command line's ``fit`` prints it)."""
    check_is_fitted(detector, "model_")
    rows = [("epochs", f"{len(detector.loss_history_)}")]
    if detector.loss_history_:
        rows.append(("training loss (last epoch)", f"{detector.loss_history_[-1]:.6g}"))
    if detector.validation_history_:
        rows.append(("held-out criterion (last epoch)", f"{detector.validation_history_[-1]:.6g}"))
    rows.append(("threshold (image anomaly score)", f"{detector.threshold_:.6g}"))
    return "\n".join(
        ["| result | value |", "| --- | ---: |"] + [f"| {name} | {value} |" for name, value in rows]
    )
