"""``SimpleNetDetector``: the scikit-learn face of SimpleNet."""

from __future__ import annotations

import copy
import enum
import functools
import math
import os
import re
import threading
import time
import warnings
from typing import NamedTuple

import numpy as np
import torch
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Integral, Real, StrOptions, validate_parameter_constraints
from sklearn.utils.validation import check_is_fitted
from torch import nn

from ._constraints import (
    FINITE,
    SIZE,
    Number,
    Rule,
    integer_tuple,
    is_integer,
    is_number_list,
    is_positive_number,
    is_provenance,
    is_record,
    is_vector,
)
from .backbones import build_feature_extractor
from .cache import FeatureCache
from .image_io import as_image_list, crop_box, image_size, size_pair, to_original_size
from .inference import batch_size_for, image_batches, score_images, scores_from_features
from .model import SimpleNetModel, make_model
from .precision import PRECISIONS, TRAINING_PRECISIONS
from .provenance import training_files
from .synthesis import DefectFeatures
from .thresholds import (
    labelled_pixel_threshold,
    labelled_threshold,
    normal_pixel_threshold,
    quantile_threshold,
    warn_if_few_images,
)
from .training import TrainingSettings, train_discriminator
from .training_set import TrainingSet, assign_roles, build_training_set, read_masks

_AUTO_STEPS = 1000  # training steps of epochs="auto" (docs/quality.md)
_DEVICE_TYPES = ("cpu", "cuda", "mps")

#: The paper's exact configuration where it differs from this package's defaults:
#: ``SimpleNetDetector(**PAPER_PARAMS)`` runs SimpleNet as published: raw features with
#: sigma=0.015 and no synthetic defects, the map's maximum as image score, 160 epochs of 4
#: images with every patch, the last step's weights, every training image in the gradient
#: steps, resize 256 and centre crop 224 (and, where the paper leaves them open, the official
#: code's Xavier initialisation for the adaptor and hidden layer of 1024).
PAPER_PARAMS = {
    "feature_scaling": None,
    "sigma": 0.015,
    "synthetic_defects": 0.0,
    "adaptor_init": "xavier",
    "image_score": "max",
    "epochs": 160,
    "batch_size": 4,
    "patch_fraction": 1.0,
    "hidden_dim": 1024,
    "training_precision": "float32",
    "weight_averaging": None,
    "validation_fraction": 0.0,
    "resize": 256,
    "crop_size": 224,
}
#: Parameters added after models were first saved, with the value that describes a model saved
#: before each existed (not the default, which would change what such a model scores or how
#: ``clone`` refits it). Pickles and safe files without them get these.
EARLIER_VALUES = {
    "count_padding": False,
    "synthetic_defects": 0.0,
    "labelled_anomalies": "ignore",
    "training_precision": "float32",
}
#: The share of held-out normal images scored above the threshold with ``contamination="auto"``.
AUTO_CONTAMINATION = 0.01
_CACHE_DTYPES = {"float16": torch.float16, "float32": torch.float32, "bfloat16": torch.bfloat16}
# Serialises moving a fitted model between devices, so that concurrent scoring never sees a
# model half-way through a move.
_DEVICE_LOCK = threading.Lock()


def _all_or_nothing(fit):
    """Make ``fit`` transactional: if it raises (KeyboardInterrupt included), the estimator's
    attributes are put back exactly as they were, so a fitted detector stays fitted with its
    previous model and an unfitted one stays unfitted."""

    @functools.wraps(fit)
    def wrapper(self, *args, **kwargs):
        before = dict(self.__dict__)
        try:
            return fit(self, *args, **kwargs)
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(before)
            raise

    return wrapper


def _is_layer_names(layers) -> bool:
    return isinstance(layers, (tuple, list)) and len(layers) > 0 and all(isinstance(n, str) for n in layers)


def _is_sigma_tuple(sigma) -> bool:
    return isinstance(sigma, (tuple, list)) and len(sigma) > 0 and all(is_positive_number(v) for v in sigma)


def _check_labels(y, n_images: int) -> np.ndarray:
    """``y`` as an integer array of +1 / -1, or a ValueError that says what is wrong."""
    y = np.asarray(y)
    if y.shape != (n_images,):
        raise ValueError(f"y has shape {y.shape}, expected ({n_images},)")
    valid = y.dtype.kind in "iuf" and np.isin(y, (1, -1)).all()
    if not valid:
        found = sorted({repr(v) for v in y.tolist()})[:5]
        raise ValueError(
            f"y must hold +1 (normal) and -1 (anomalous) labels, got {', '.join(found)}. For 0/1 labels "
            "where 1 marks an anomaly, pass np.where(y == 1, -1, 1)."
        )
    return y.astype(int)


def _warn_if_cropped(image, resize, crop_size) -> None:
    """Warn when the centre crop cuts part of (the first) training image away."""
    if crop_size is None:
        return
    try:
        size = image_size(image)
    except Exception:  # an unreadable file: decoding reports it, with its position and path
        return
    top, left, bottom, right = crop_box(size, resize, crop_size)
    seen = (bottom - top) * (right - left) / (size[0] * size[1])
    if seen < 0.999:
        warnings.warn(
            f"crop_size={crop_size!r} cuts {1 - seen:.0%} of each image away (the first training "
            f"image, {size[0]}x{size[1]} pixels, after resize={resize!r}): defects there are never "
            "seen. Set crop_size=None to keep the whole image.",
            UserWarning,
            stacklevel=4,
        )


def _is_device(device) -> bool:
    """Whether ``device`` names a device this package can compute on (not, e.g., "meta")."""
    if isinstance(device, torch.device):
        return device.type in _DEVICE_TYPES
    return isinstance(device, str) and re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", device) is not None


def _resolve_device(device: str | torch.device, fitting: bool) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    available = {"cuda": torch.cuda.is_available, "mps": torch.backends.mps.is_available}
    if device.type in available and not available[device.type]():
        backend = "CUDA" if device.type == "cuda" else "MPS (Apple GPUs)"
        if fitting:
            raise ValueError(f"device={str(device)!r} was requested but {backend} is not available here")
        warnings.warn(f"device={str(device)!r} is not available here; scoring on the CPU", stacklevel=3)
        return torch.device("cpu")
    return device


#: Every parameter's valid values, in scikit-learn's constraint conventions: checked by ``fit``
#: (:func:`validate_params`) and by :func:`sksimplenet.load` before a stored model is rebuilt.
PARAMETER_CONSTRAINTS: dict = {
    "backbone": [str, nn.Module],
    "layers": [None, Rule(_is_layer_names, "a non-empty tuple of module names (str)")],
    "weights": [str, os.PathLike, enum.Enum, None],
    "patch_size": [Rule(lambda v: is_integer(v) and v % 2 == 1, "an odd int >= 1")],
    "count_padding": ["boolean"],
    "feature_dim": [Number(Integral, 1, None, closed="left"), None],
    "feature_scaling": [StrOptions({"standardize"}), None],
    "sigma": [
        Number(Real, 0, None, closed="neither"),
        Rule(_is_sigma_tuple, "a non-empty tuple of floats > 0"),
    ],
    "synthetic_defects": [Number(Real, 0, 16, closed="both")],
    "synthetic_share": [Number(Real, 0, 4, closed="right")],
    "labelled_anomalies": [StrOptions({"learn", "learn_both", "ignore"})],
    "hidden_dim": [Number(Integral, 1, None, closed="left")],
    "margin": [Number(Real, 0, None, closed="neither")],
    "epochs": [Number(Integral, 1, None, closed="left"), StrOptions({"auto"})],
    "batch_size": [Number(Integral, 1, None, closed="left")],
    "patch_fraction": [Number(Real, 0, 1, closed="right")],
    "weight_averaging": [Number(Real, 0, 1, closed="neither"), None],
    "validation_fraction": [Number(Real, 0, 0.5, closed="both")],
    "adaptor_lr": [Number(Real, 0, None, closed="neither")],
    "discriminator_lr": [Number(Real, 0, None, closed="neither")],
    "weight_decay": [Number(Real, 0, None, closed="left")],
    "adaptor_bias": ["boolean"],
    "adaptor_init": [StrOptions({"xavier", "identity"})],
    "resize": [SIZE],
    "crop_size": [SIZE, None],
    # Larger smoothing only blurs the map into a constant, at a cost that grows with it.
    "smoothing_sigma": [Number(Real, 0, 100, closed="both")],
    "image_score": [StrOptions({"max"}), Number(Real, 0, 1, closed="right")],
    "contamination": [StrOptions({"auto"}), Number(Real, 0, 0.5, closed="right")],
    "cache_dtype": [StrOptions(set(_CACHE_DTYPES))],
    "inference_batch_size": [None, Number(Integral, 1, None, closed="left")],
    "precision": [StrOptions(set(PRECISIONS))],
    "training_precision": [StrOptions(set(TRAINING_PRECISIONS))],
    "cache_dir": [None, str, os.PathLike],
    "device": [Rule(_is_device, "'auto', 'cpu', 'cuda', 'cuda:N', 'mps' or a torch.device of those")],
    "n_jobs": [
        None,
        Number(Integral, None, -1, closed="right"),
        Number(Integral, 1, None, closed="left"),
    ],
    "random_state": ["random_state"],
    "verbose": ["verbose"],
}


class FittedAttribute(NamedTuple):
    """One fitted attribute: its valid values, and what a fit from before it existed amounts to.

    ``earlier``: :data:`REQUIRED` (every fit has it), :data:`OMITTED` (it needs what only
    fit has, such as the training images: absent from older models), or a function of the
    older model's other attributes giving the value that describes it.
    """

    rule: object
    earlier: object


REQUIRED, OMITTED = "required", "omitted"
_INDICES = Rule(
    lambda v: isinstance(v, list) and all(is_integer(i, minimum=0) for i in v), "a list of ints >= 0"
)

#: Every fitted attribute besides ``model_``: what ``fit`` sets, what a model file must or may
#: hold and the values it may take (:mod:`sksimplenet.persistence`), and what models saved or
#: pickled before an attribute existed get.
FITTED_ATTRIBUTES = {
    "loss_history_": FittedAttribute(Rule(is_number_list, "a list of finite numbers"), REQUIRED),
    "validation_history_": FittedAttribute(Rule(is_number_list, "a list of finite numbers"), lambda a: []),
    "feature_shape_": FittedAttribute(
        Rule(integer_tuple(3), "a (height, width, feature_dim) tuple of ints >= 1"), REQUIRED
    ),
    "input_size_": FittedAttribute(
        Rule(integer_tuple(2, 1 << 16), "a (height, width) tuple of ints in [1, 65536]"), REQUIRED
    ),
    "n_train_images_": FittedAttribute(Number(Integral, 1, None, closed="left"), REQUIRED),
    "n_held_out_images_": FittedAttribute(Number(Integral, 0, None, closed="left"), lambda a: 0),
    "held_out_indices_": FittedAttribute(_INDICES, lambda a: []),
    # Models fitted before fit learned from labelled anomalies learned from none.
    "n_labelled_anomalies_": FittedAttribute(Number(Integral, 0, None, closed="left"), lambda a: 0),
    "n_labelled_masks_": FittedAttribute(Number(Integral, 0, None, closed="left"), lambda a: 0),
    # Before labelled_anomalies="learn_both", the images without a mask were those learned by image.
    "n_labelled_by_image_": FittedAttribute(
        Number(Integral, 0, None, closed="left"),
        lambda a: a.get("n_labelled_anomalies_", 0) - a.get("n_labelled_masks_", 0),
    ),
    # Models fitted before training_precision existed trained in float32.
    "training_dtype_": FittedAttribute(StrOptions({"float32", "bfloat16"}), lambda a: "float32"),
    "threshold_": FittedAttribute(FINITE, REQUIRED),
    "pixel_threshold_": FittedAttribute(
        Rule(lambda v: v is None or FINITE.is_satisfied_by(v), "None or a finite number"), lambda a: None
    ),
    "calibration_": FittedAttribute(
        Rule(is_record, "a dict of names to numbers, strings, None or such dicts"),
        lambda a: _earlier_calibration(a),
    ),
    "decision_scores_": FittedAttribute(
        Rule(
            lambda v: is_vector(v, "f") and bool(np.isfinite(v).all()), "a 1-D float array of finite numbers"
        ),
        OMITTED,
    ),
    "labels_": FittedAttribute(
        Rule(lambda v: is_vector(v, "iu") and bool(np.isin(v, (0, 1)).all()), "a 1-D array of 0s and 1s"),
        OMITTED,
    ),
    "provenance_": FittedAttribute(
        Rule(
            is_provenance,
            "{'files': [{'path': str, 'sha256': str}, ...], 'split': dict or None, 'anomalous_files': [...]}",
        ),
        lambda a: {"files": [], "split": None, "anomalous_files": []},
    ),
    "fit_time_": FittedAttribute(Number(Real, 0, None, closed="left"), REQUIRED),
}


def complete_fitted_attributes(attributes: dict) -> dict:
    """The fitted attributes of a model pickled or saved by an earlier version, completed with
    the values that describe it (:data:`FITTED_ATTRIBUTES`' ``earlier``). Unpickling and
    :func:`sksimplenet.load` both call it; ``attributes`` is changed in place and returned.
    """
    if "offset_" in attributes:  # stored when offset_ was an attribute: threshold_ derives it now
        offset = attributes.pop("offset_")
        is_number = isinstance(offset, (int, float)) and not isinstance(offset, bool)
        if "threshold_" not in attributes and is_number:
            attributes["threshold_"] = -float(offset)
    for name, entry in FITTED_ATTRIBUTES.items():
        if name not in attributes and callable(entry.earlier):
            attributes[name] = entry.earlier(attributes)
    provenance = attributes.get("provenance_")
    if isinstance(provenance, dict) and "anomalous_files" not in provenance:
        attributes["provenance_"] = {**provenance, "anomalous_files": []}
    return attributes


def _earlier_calibration(attributes: dict) -> dict:
    """What set the threshold of a model saved before ``calibration_`` existed."""
    n_held_out = attributes.get("n_held_out_images_", 0)
    source = "held-out training images" if n_held_out else "training images"
    return {"method": "quantile", "contamination": None, "n_images": n_held_out or None, "images": source}


def validate_params(params: dict) -> None:
    """Check estimator parameters: each against :data:`PARAMETER_CONSTRAINTS`, then the rules
    that tie two together.

    Raises
    ------
    sklearn.utils._param_validation.InvalidParameterError
        A value outside its parameter's constraints (a ``ValueError`` and a ``TypeError``);
        the message names the parameter, its valid values and the value.
    ValueError
        ``crop_size`` larger than the resized image.
    """
    validate_parameter_constraints(PARAMETER_CONSTRAINTS, params, caller_name="SimpleNetDetector")
    crop_size, resize = params.get("crop_size"), params.get("resize")
    if crop_size is not None and resize is not None:
        crop = size_pair(crop_size)
        bound = size_pair(resize)  # an int or 1-sequence: the shorter side, along either axis
        if crop[0] > bound[0] or crop[1] > bound[1]:
            raise ValueError(
                f"crop_size={crop_size!r} is larger than the resized image (resize={resize!r}): the "
                "crop would be padded with black. Use a crop_size no larger than resize, or None."
            )


class SimpleNetDetector(OutlierMixin, BaseEstimator):
    """SimpleNet image anomaly detector (Liu et al., CVPR 2023), trained on normal images and
    on the labelled defects there are.

    Frozen backbone features of every image position are adapted by a linear layer; a
    small discriminator learns to tell them from copies with Gaussian noise added. At
    inference ``-D`` is the anomaly score of each position, upsampled to the input
    resolution and smoothed; the image score is the mean of the map's top 1 % (its maximum
    in the paper).

    ``fit`` keeps a seeded share of the training images (``validation_fraction``) out of
    the gradient steps. Those held-out normal images, never test data, track a criterion
    per epoch (``validation_history_``) and set the decision threshold (``threshold_``).
    The defaults differ from the paper where measurements on real data support it
    (``docs/quality.md``); ``SimpleNetDetector(**PAPER_PARAMS)`` is the paper's setup.

    Parameters
    ----------
    backbone : str or torch.nn.Module, default="wide_resnet50_2"
        A :func:`torchvision.models.get_model` name, ``"efficientnet_lite0"`` (ImageNet
        weights ship with the package, no network needed) or a module.
    layers : tuple of str, default=None
        Backbone modules whose outputs are used. None: ``("layer2", "layer3")`` for ResNets,
        the stride-8 and stride-16 stages for EfficientNets.
    weights : str, path or None, default="DEFAULT"
        ``"DEFAULT"``, a torchvision weights name, a local state-dict file, or None
        (random weights).
    patch_size : int, default=3
        Side ``p`` of the neighbourhood each position's features are averaged over.
    count_padding : bool, default=True
        How the neighbourhood mean treats the map's border, where part of the neighbourhood
        lies outside: True pads with zeros and counts them (every mean is over ``p²``
        values), as the official code's unfolding does; False averages only the positions
        inside the map. Models fitted before this parameter existed used False, and load
        with it.
    feature_dim : int or None, default=1536
        Upper bound on the patch-feature width: wider concatenations are reduced by
        adaptive average pooling over channels; narrower ones are kept as they are.
    feature_scaling : {"standardize", None}, default="standardize"
        ``"standardize"`` subtracts each channel's mean and divides by its standard
        deviation over the training patches, so that ``sigma`` is in units of each
        channel's spread and means the same on every backbone. None uses the features as
        they come (the paper; its sigma=0.015 was tuned for WideResNet-50's raw features).
        See ``docs/noise-scale.md``.
    sigma : float or tuple of float, default=0.3
        Standard deviation of the Gaussian noise that makes anomalous features, in units
        of the feature scaling. A tuple draws one of its values for each patch (noise at
        several scales). The paper: 0.015 with ``feature_scaling=None``.
    synthetic_defects : float in [0, 16], default=1.0
        Synthetic defect images made per training image (:mod:`sksimplenet.synthesis`): a
        blob-shaped region of a training image replaced by a transformed part of another
        training image or a generated texture. The features inside the regions are
        computed once, with the training features, and trained on as anomalous beside the
        Gaussian ones, so that the discriminator also sees structured features far from
        the normal ones. 0 uses Gaussian anomalous features only (the paper).
    synthetic_share : float in (0, 4], default=0.5
        Synthetic anomalous features in each step, as a share of the step's normal patches.
    labelled_anomalies : {"learn", "learn_both", "ignore"}, default="learn"
        What ``fit`` does with images labelled -1 in ``y``. ``"learn"``: they train the
        discriminator as real defects, beside the synthetic ones, with as many features
        per step as the synthetic ones: with a mask, the positions inside it; without,
        each step the least normal positions of a few of them (multiple-instance
        learning). ``"learn_both"``: as ``"learn"``, and the images with a mask also train
        by multiple-instance learning, as if they had none: on MTD a higher image AUROC
        for a slightly lower pixel AUROC than ``"learn"`` (docs/quality.md). ``"ignore"``:
        they are left out of training, as before version 0.3 (models saved before then
        load with it). The threshold comes from held-out normal images either way. See
        ``docs/supervised.md``.
    hidden_dim : int, default=512
        Width of the discriminator's hidden layer (the official code and ``PAPER_PARAMS``:
        1024; so was the default before version 0.3). 512 fits in about half the time on a
        CPU at the same accuracy on MTD and ELPV, with and without labelled defects
        (docs/performance.md, "Inside one training step").
    margin : float, default=0.5
        Truncation thresholds of the L1 loss (``th+ = th- = margin``).
    epochs : int or "auto", default="auto"
        Passes over the training images (the paper: 160). ``"auto"``: as many as make
        about 1,000 training steps (``ceil(1000 / steps per epoch)``), so that a small
        training set is not under-trained and a large one takes minutes, not hours.
    batch_size : int, default=32
        Images per training step (the paper: 4).
    patch_fraction : float in (0, 1], default=0.125
        Share of each step's patches used, drawn at random. With ``batch_size=32`` a step
        sees as many patches as the paper's steps of 4 images with every position (1.0).
    weight_averaging : float in (0, 1) or None, default=0.99
        Decay per step of an exponential moving average of the adaptor's and the
        discriminator's weights; the average is the fitted model, so that it does not
        hinge on the last few steps. The decay ramps up as ``min(weight_averaging, (1 + t)
        / (10 + t))`` over the steps ``t``, so that short runs are not dominated by their
        first weights; it reaches 0.99 after 890 steps. None keeps the last step's
        weights (the paper).
    validation_fraction : float in [0, 0.5], default=0.1
        Share of the training images held out of the gradient steps, drawn with
        ``random_state``. They record ``validation_history_`` and set ``threshold_``. 0
        trains on every image and sets the threshold from the training images' own
        scores, which are lower than new images' (more false alarms).
    adaptor_lr, discriminator_lr : float, default=1e-4, 2e-4
        Adam learning rates.
    weight_decay : float, default=1e-5
        Adam weight decay, both parts.
    adaptor_bias : bool, default=False
        The paper's adaptor has no bias (the official code's has one).
    adaptor_init : {"identity", "xavier"}, default="identity"
        Initial adaptor weights: the identity map, so that training starts from the
        features themselves, or Xavier-normal as the official code (the paper leaves it
        open; ``PAPER_PARAMS`` sets it). With synthetic defects, identity gave better maps
        on MTD and better image AUROC on ELPV (docs/quality.md). Without them it can give
        weak maps after a few dozen steps on small sets.
    resize : int or (int, int), default=(224, 224)
        Images are resized to this: ``(height, width)`` squashes every image to that size,
        keeping all of its content; an int sets the shorter side (the paper: 256) ...
    crop_size : int, (int, int) or None, default=None
        ... then centre-cropped to this (the paper: 224); None keeps the whole resized
        image. ``fit`` warns when the crop cuts image content away.
    smoothing_sigma : float in [0, 100], default=4.0
        Gaussian smoothing of the anomaly map, in pixels of the cropped image.
    image_score : "max" or float in (0, 1], default=0.01
        Image anomaly score from the map: the mean of its highest ``image_score`` share
        of pixels (the top 1 % by default), or its maximum with ``"max"`` (the paper).
    contamination : "auto" or float in (0, 0.5], default="auto"
        Expected share of normal images that ``predict`` flags as outliers: the threshold
        is the ``1 - contamination`` quantile of the held-out normal images' image scores
        (of the training images' with ``validation_fraction=0``). ``"auto"``: 0.01.
    cache_dtype : {"float16", "bfloat16", "float32"}, default="float16"
        Storage type of the training feature cache.
    inference_batch_size : int or None, default=None
        Images per pass through the network when extracting features and scoring (None: 16
        on a CPU, 64 on CUDA). Larger batches use more memory; results are the same up to
        rounding.
    precision : {"float32", "bfloat16", "float16", "auto"}, default="float32"
        Arithmetic of the frozen backbone, in fit's feature extraction and in scoring;
        the rest stays float32. ``"auto"``: bfloat16 on a CPU with native bfloat16
        (AVX512-BF16 or AMX), float16 on CUDA, float32 otherwise. A reduced type the device
        lacks natively is emulated (many times slower) and warns once. It may be changed
        on a fitted detector to score in another precision. See :mod:`sksimplenet.precision`
        and docs/performance.md for its speed and its effect on AUROC.
    training_precision : {"float32", "bfloat16", "auto"}, default="auto"
        Arithmetic of the discriminator's layers in fit's training steps (under
        :func:`torch.autocast`); the weights, the optimiser and scoring stay float32.
        ``"auto"``: bfloat16 where the device computes it natively (a CPU with AVX512-BF16 or
        AMX, CUDA from compute capability 8.0), float32 elsewhere. On MTD it fits in about
        half the time at the same AUROC (docs/performance.md). A fit is reproducible on one
        machine either way; ``"float32"`` also trains the same model on machines without
        native bfloat16.
    cache_dir : str, path or None, default=None
        None keeps the training feature cache in memory (on the GPU when training there
        and it fits). A folder: the cache is a memory-mapped temporary file there, deleted
        when ``fit`` ends, so that training sets larger than the RAM fit. Results are the
        same. Sizes: 2.4 MB per 224-pixel image for wide_resnet50_2, 0.24 MB for
        efficientnet_lite0 (float16); see :mod:`sksimplenet.cache`.
    device : str, default="auto"
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or
        ``"mps"`` (or a ``torch.device`` of those types).
    n_jobs : int, default=None
        Processes decoding image files in parallel with the network (None: one, in the
        main process; -1: all cores).
    random_state : int, RandomState or None, default=None
        Seeds the initial weights, the order of the training images and the noise.
    verbose : bool, default=False
        Show progress bars.

    Attributes
    ----------
    model_ : SimpleNetModel
        The fitted network (frozen extractor, scaler, adaptor, discriminator).
    loss_history_ : list of float
        Mean training loss of each epoch.
    validation_history_ : list of float
        Held-out criterion of each epoch, lower = better: the truncated L1 loss of the
        held-out normal patches against copies noised at half ``sigma``
        (:func:`sksimplenet.training.validation_loss`). Empty with ``validation_fraction=0``.
    threshold_ : float
        Image anomaly score above which ``predict`` answers -1 (higher = more anomalous). Set
        by ``fit`` from the held-out images; :meth:`calibrate` sets it again (from new normal
        images or a labelled validation set), and it may be assigned directly.
    offset_ : float
        ``-threshold_`` (a property: ``decision_function = score_samples - offset_``).
    pixel_threshold_ : float or None
        The map value at which a pixel counts as defective in masks (the command line's
        ``predict --masks``); None (after ``fit``) uses ``threshold_``. Set by
        ``calibrate(..., pixel=True)``. :attr:`mask_threshold` is the one in force.
    calibration_ : dict
        How ``threshold_`` was set: ``method`` (``"quantile"``, ``"f1"``, ``"max_fpr"`` or
        ``"min_recall"``), its ``contamination`` or ``value``, ``n_images`` and which
        ``images``, and ``pixel`` (how ``pixel_threshold_`` was set, or None).
    n_train_images_ : int
        Number of images in the gradient steps.
    n_held_out_images_ : int
        Number of training images held out (``validation_fraction``).
    held_out_indices_ : list of int
        Positions in ``X`` of the held-out images.
    n_labelled_anomalies_ : int
        Number of images labelled -1 that training learned from (0 with
        ``labelled_anomalies="ignore"``).
    n_labelled_masks_ : int
        How many of those had a mask (the others were learned from by their label alone).
    n_labelled_by_image_ : int
        How many of those trained by multiple-instance learning: the ones without a mask,
        and with ``labelled_anomalies="learn_both"`` the masked ones too.
    training_dtype_ : {"float32", "bfloat16"}
        What the training steps computed in: ``training_precision`` as resolved on the
        machine and device that fitted.
    feature_shape_ : tuple of int
        ``(h, w, feature_dim)`` of the patch features of one image.
    input_size_ : tuple of int
        ``(height, width)`` of the training images as the network sees them.
    fit_time_ : float
        Seconds spent in ``fit``.
    decision_scores_ : ndarray of shape (n_images,)
        Image anomaly scores of every image passed to ``fit``, in ``X``'s order, higher =
        more anomalous (PyOD's convention; ``-score_samples`` of those images, computed
        from the training feature cache). Images trained on score lower than new normal
        images: the threshold comes from the held-out ones.
    labels_ : ndarray of shape (n_images,), int
        PyOD's labels of the images passed to ``fit``: 1 (outlier) where
        ``decision_scores_ > threshold_``, else 0. ``predict`` answers +1 / -1.
    provenance_ : dict
        ``"files"``: ``{"path", "sha256"}`` of each image file ``fit`` used (trained on or
        held out), so that a test set sharing files with it can be caught
        (:func:`sksimplenet.provenance.files_seen_in_training`); empty for in-memory
        images. ``"split"``: how the command line split a data set into training and test
        images; None when ``fit`` is called directly. ``"anomalous_files"``: the same record
        of the images labelled -1 that training learned from.
    """

    def __init__(
        self,
        backbone="wide_resnet50_2",
        layers=None,
        weights="DEFAULT",
        *,
        patch_size=3,
        count_padding=True,
        feature_dim=1536,
        feature_scaling="standardize",
        sigma=0.3,
        synthetic_defects=1.0,
        synthetic_share=0.5,
        labelled_anomalies="learn",
        hidden_dim=512,
        margin=0.5,
        epochs="auto",
        batch_size=32,
        patch_fraction=0.125,
        weight_averaging=0.99,
        validation_fraction=0.1,
        adaptor_lr=1e-4,
        discriminator_lr=2e-4,
        weight_decay=1e-5,
        adaptor_bias=False,
        adaptor_init="identity",
        resize=(224, 224),
        crop_size=None,
        smoothing_sigma=4.0,
        image_score=0.01,
        contamination="auto",
        cache_dtype="float16",
        inference_batch_size=None,
        precision="float32",
        training_precision="auto",
        cache_dir=None,
        device="auto",
        n_jobs=None,
        random_state=None,
        verbose=False,
    ):
        self.backbone = backbone
        self.layers = layers
        self.weights = weights
        self.patch_size = patch_size
        self.count_padding = count_padding
        self.feature_dim = feature_dim
        self.feature_scaling = feature_scaling
        self.sigma = sigma
        self.synthetic_defects = synthetic_defects
        self.synthetic_share = synthetic_share
        self.labelled_anomalies = labelled_anomalies
        self.hidden_dim = hidden_dim
        self.margin = margin
        self.epochs = epochs
        self.batch_size = batch_size
        self.patch_fraction = patch_fraction
        self.weight_averaging = weight_averaging
        self.validation_fraction = validation_fraction
        self.adaptor_lr = adaptor_lr
        self.discriminator_lr = discriminator_lr
        self.weight_decay = weight_decay
        self.adaptor_bias = adaptor_bias
        self.adaptor_init = adaptor_init
        self.resize = resize
        self.crop_size = crop_size
        self.smoothing_sigma = smoothing_sigma
        self.image_score = image_score
        self.contamination = contamination
        self.cache_dtype = cache_dtype
        self.inference_batch_size = inference_batch_size
        self.precision = precision
        self.training_precision = training_precision
        self.cache_dir = cache_dir
        self.device = device
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # Images (a 4-D batch or a sequence of images or paths), not 2-D tabular rows.
        tags.input_tags.two_d_array = False
        return tags

    # ------------------------------------------------------------------ validation
    _parameter_constraints: dict = PARAMETER_CONSTRAINTS  # scikit-learn's _validate_params reads it

    def _validate_params(self) -> None:
        validate_params(self.get_params(deep=False))

    def _check_environment(self) -> None:
        """What depends on this machine rather than on the values: checked by fit only."""
        if self.cache_dir is not None and not os.path.isdir(self.cache_dir):
            raise ValueError(f"cache_dir must be None or an existing folder, got {self.cache_dir!r}")

    # ------------------------------------------------------------------ fit
    @_all_or_nothing
    def fit(self, X, y=None, *, masks=None):
        """Train on normal images, and on the labelled anomalous ones when there are some.

        Parameters
        ----------
        X : sequence of images or array-like
            See :mod:`sksimplenet.image_io` for the accepted forms.
        y : array-like of shape (n_images,), default=None
            Optional labels in {+1, -1} (scikit-learn's outlier convention). With
            ``labelled_anomalies="learn"`` (the default) or ``"learn_both"`` the images
            labelled -1 train the discriminator as real defects (see ``masks``); with
            ``"ignore"`` they are left out of training (only scored, for
            ``decision_scores_``). Any other value (0/1, booleans, strings, NaN) is
            refused, since 0/1 labels mean opposite things in different libraries. None
            trains on every image as normal.
        masks : sequence of n_images items, default=None
            Ground-truth defect masks, parallel to ``X`` (needs ``y``): per image a mask
            file path, a PIL image, an array ``(H, W)`` (nonzero = defect) on the image's own
            grid, or None. A mask at another resolution with the image's aspect ratio is
            resized onto it. The positions inside the mask of an image labelled -1 train as
            anomalous; an image labelled -1 without a mask (or with an empty one) trains by
            multiple-instance learning: each step its least normal 5 % of positions
            (``training_set.WEAK_POSITION_SHARE``) train as anomalous; with
            ``labelled_anomalies="learn_both"`` the images with a mask do too. Masks of
            images labelled +1 must be empty or None. With scikit-learn's metadata routing
            enabled, request them with ``set_fit_request(masks=True)``.

        Returns
        -------
        self
        """
        start = time.perf_counter()
        self._validate_params()
        self._check_environment()
        images = as_image_list(X)
        labels = None if y is None else _check_labels(y, len(images))
        defect_masks = read_masks(masks, images, labels)
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        roles = assign_roles(
            labels,
            len(images),
            defect_masks,
            learn=self.labelled_anomalies != "ignore",
            validation_fraction=self.validation_fraction,
            seed=seed,
        )
        _warn_if_cropped(images[roles.order[0]], self.resize, self.crop_size)
        device = _resolve_device(self.device, fitting=True)
        extractor = self._feature_extractor(seed, device)
        probe = make_model(extractor, 1, self.get_params(deep=False))  # its embedding only
        defects = None
        if self.synthetic_defects > 0:
            generator = torch.Generator().manual_seed(seed + 3)
            defects = DefectFeatures(self.synthetic_defects, generator, _CACHE_DTYPES[self.cache_dtype])
        batch_size = batch_size_for(self.inference_batch_size, device)
        with FeatureCache(len(images), _CACHE_DTYPES[self.cache_dtype], device, self.cache_dir) as cache:
            data = build_training_set(
                probe,
                images,
                roles,
                defect_masks,
                cache,
                functools.partial(self._batches, device=device, desc="features"),
                resize=self.resize,
                crop_size=self.crop_size,
                defects=defects,
                masked_as_images=self.labelled_anomalies == "learn_both",
            )
            model, history = self._train(extractor, data, seed, device)
            scores = scores_from_features(model, data.features, data.input_size, batch_size, device)
            feature_shape = tuple(data.features.shape[1:])
        n_trained, n_fitted = data.n_trained, data.n_fitted
        held_out = roles.held_out
        calibration = scores[n_trained:n_fitted] if held_out else scores[:n_trained]
        contamination = self._contamination()
        warn_if_few_images(len(held_out), contamination, "held-out", stacklevel=3)
        source = "held-out training images" if held_out else "training images"
        threshold, record = quantile_threshold(calibration, contamination, source)
        decision_scores = np.empty(len(images))
        decision_scores[roles.order] = scores
        learned = roles.masked + roles.weak
        provenance = {
            "files": training_files([images[p] for p in roles.trained + held_out]),
            "split": None,
            "anomalous_files": training_files([images[p] for p in learned]),
        }

        # Only now, with everything computed, does the estimator change.
        self._set_fitted(
            model,
            loss_history_=history.loss,
            validation_history_=history.validation,
            feature_shape_=feature_shape,
            input_size_=data.input_size,
            n_train_images_=n_trained,
            n_held_out_images_=len(held_out),
            held_out_indices_=list(held_out),
            n_labelled_anomalies_=len(learned),
            n_labelled_masks_=len(roles.masked),
            n_labelled_by_image_=0 if data.weak is None else len(data.weak),
            training_dtype_=history.dtype,
            threshold_=threshold,
            pixel_threshold_=None,
            calibration_=record,
            decision_scores_=decision_scores,
            labels_=(decision_scores > threshold).astype(int),
            provenance_=provenance,
            fit_time_=time.perf_counter() - start,
        )
        return self

    def _feature_extractor(self, seed: int, device: torch.device):
        """The frozen, truncated backbone on ``device``."""
        # torchvision initialises random weights (weights=None) from the global generator:
        # seed it inside a forked state so that random_state also fixes the backbone.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            extractor = build_feature_extractor(self.backbone, self.layers, self.weights)
        return extractor.to(device)

    def _batches(self, images: list, positions=None, *, device: torch.device, desc: str):
        """Preprocessed image batches on ``device`` (:func:`sksimplenet.inference.image_batches`)."""
        return image_batches(
            images,
            resize=self.resize,
            crop_size=self.crop_size,
            batch_size=batch_size_for(self.inference_batch_size, device),
            device=device,
            n_jobs=self.n_jobs,
            progress=self.verbose,
            desc=desc,
            positions=positions,
        )

    def _set_fitted(self, model: SimpleNetModel, **attributes) -> None:
        """Set ``model_`` and every attribute of :data:`FITTED_ATTRIBUTES`, and nothing else."""
        if set(attributes) != set(FITTED_ATTRIBUTES):
            raise RuntimeError(f"fit sets {sorted(attributes)}, not {sorted(FITTED_ATTRIBUTES)}")
        self.model_ = model
        self.__dict__.update(attributes)

    def _epochs(self, n_images: int) -> int:
        """``epochs``, with ``"auto"`` resolved for ``n_images`` training images."""
        if self.epochs != "auto":
            return int(self.epochs)
        return math.ceil(_AUTO_STEPS / math.ceil(n_images / self.batch_size))

    def _contamination(self) -> float:
        """``contamination``, with ``"auto"`` resolved."""
        return AUTO_CONTAMINATION if self.contamination == "auto" else float(self.contamination)

    def _train(self, extractor, data: TrainingSet, seed: int, device):
        """The network trained on a :class:`~sksimplenet.training_set.TrainingSet` and its
        :class:`~sksimplenet.training.TrainingHistory`."""
        features = data.trained
        generator = torch.Generator().manual_seed(seed)
        model = make_model(extractor, features.shape[-1], self.get_params(deep=False), generator)
        if self.feature_scaling == "standardize":
            model.scaler.fit(features.reshape(-1, features.shape[-1]))
        model.to(device)
        settings = TrainingSettings.from_params(
            self.get_params(deep=False), epochs=self._epochs(len(features)), seed=seed
        )
        history = train_discriminator(
            features,
            model.scaler,
            model.adaptor,
            model.discriminator,
            settings,
            synthetic_features=data.synthetic,
            labelled_features=data.labelled,
            weak_anomalies=data.weak_anomalies(self.batch_size),
            extra_normal_features=data.outside,
            validation_features=data.held_out,
            device=device,
            progress=self.verbose,
        )
        model.eval()
        return model, history

    # ------------------------------------------------------------------ inference
    def _infer(self, X, keep_maps: bool = True) -> tuple[list[torch.Tensor], np.ndarray, list]:
        """Anomaly maps (when ``keep_maps``), image anomaly scores and the images, in one pass."""
        check_is_fitted(self, "model_")
        images = as_image_list(X)
        device = _resolve_device(self.device, fitting=False)
        model = self.model_
        # Scoring only reads the model; it is moved (once, under a lock) when it is not on the
        # scoring device yet, so several threads can score with one detector at the same time.
        with _DEVICE_LOCK:
            current = next(model.parameters()).device
            if current.type != device.type or (device.index is not None and current.index != device.index):
                model.to(device)
            if model.training:
                model.eval()
            model.precision = self.precision
        batches = self._batches(images, device=device, desc="scoring")
        maps, scores = score_images(model, batches, keep_maps)
        return maps, scores, images

    def score_samples(self, X) -> np.ndarray:
        """Normality of each image: its negated image anomaly score.

        The image anomaly score is made from the image's anomaly map as ``image_score``
        says: by default (``image_score=0.01``) the mean of the map's highest 1 % of
        pixels; with ``image_score="max"`` (the paper's, set by ``PAPER_PARAMS``) the map's
        maximum.

        Returns
        -------
        ndarray of shape (n_images,)
            Lower = more abnormal.
        """
        return -self._infer(X, keep_maps=False)[1]

    @property
    def offset_(self) -> float:
        """``-threshold_`` (scikit-learn's convention: ``decision_function = score_samples - offset_``).

        Assigning it sets ``threshold_``: the two never disagree.
        """
        check_is_fitted(self, "model_")
        return -self.threshold_

    @offset_.setter
    def offset_(self, value: float) -> None:
        self.threshold_ = -float(value)

    def decision_function(self, X) -> np.ndarray:
        """``score_samples(X) - offset_``: negative for outliers. Shape ``(n_images,)``."""
        return self.score_samples(X) - self.offset_

    def predict(self, X) -> np.ndarray:
        """+1 for inliers (normal), -1 for outliers (anomalous): -1 where the image anomaly score
        is above ``threshold_``. Shape ``(n_images,)``."""
        return np.where(self.decision_function(X) < 0, -1, 1)

    # ------------------------------------------------------------------ operating point
    def calibrate(self, X=None, y=None, *, max_fpr=None, min_recall=None, masks=None, pixel: bool = False):
        """Set the decision threshold (and optionally the pixel threshold) again, without retraining.

        - ``calibrate()``: from the images ``fit`` held out (their stored scores), with the
          current ``contamination``: ``set_params(contamination=0.05).calibrate()``.
        - ``calibrate(X)``: ``X`` are new **normal** images (for example from a line after a
          change); the threshold is the ``1 - contamination`` quantile of their scores, as
          ``fit`` sets it from its held-out images.
        - ``calibrate(X, y)``: ``X`` is a labelled validation set, ``y`` +1 normal / -1
          anomalous: the threshold with the largest F1 of the anomalous class (anomalib's
          adaptive threshold), or with ``max_fpr`` the most recall whose false-positive rate
          on the normal images is at most ``max_fpr``, or with ``min_recall`` the fewest
          false alarms that catch at least that share of the anomalous images
          (:func:`sksimplenet.metrics.operating_threshold`). These must be images set apart
          for this, never the test images of an evaluation.

        Parameters
        ----------
        X : sequence of images or array-like, default=None
        y : array-like of shape (n_images,), default=None
        max_fpr, min_recall : float in [0, 1], default=None
            With ``y``: the budget (at most one of the two).
        masks : sequence of n_images items, default=None
            With ``y`` and ``pixel``: ground-truth masks (paths, arrays, None for images
            without defects) on the images' own grid.
        pixel : bool, default=False
            Also set ``pixel_threshold_``, the score at which a pixel is marked defective in
            masks: with normal images, the ``1 - contamination`` quantile of each image's
            largest map value (about ``contamination`` of normal images then show a defect
            pixel); with ``masks``, the largest pixel F1. Otherwise ``pixel_threshold_`` is
            left as it is (None: masks use ``threshold_``).

        Returns
        -------
        self
            With ``threshold_`` (and ``offset_``), ``labels_``, ``calibration_`` and, with
            ``pixel``, ``pixel_threshold_`` set; nothing else changes.
        """
        check_is_fitted(self, "model_")
        validate_params(self.get_params(deep=False))
        contamination = self._contamination()
        if max_fpr is not None and min_recall is not None:
            raise ValueError("give max_fpr or min_recall, not both")
        if y is None and (max_fpr is not None or min_recall is not None or masks is not None):
            raise ValueError("max_fpr, min_recall and masks choose a threshold on labelled images: pass y")
        if pixel and X is None:
            raise ValueError("pixel=True needs images: pass X")
        if pixel and y is not None and masks is None:
            raise ValueError("pixel=True with labelled images needs their masks")
        pixel_threshold, pixel_record = self.pixel_threshold_, (self.calibration_ or {}).get("pixel")
        if X is None:
            stored = getattr(self, "decision_scores_", None)
            if stored is None or not self.held_out_indices_:
                raise ValueError(
                    "calibrate() without images uses the scores of the images fit held out, and this "
                    "model has none (validation_fraction=0, or saved without them): pass normal images X"
                )
            warn_if_few_images(len(self.held_out_indices_), contamination, "held-out")
            threshold, record = quantile_threshold(
                stored[self.held_out_indices_], contamination, "held-out training images"
            )
        else:
            maps, scores, _ = self._infer(X, keep_maps=pixel)
            if y is None:
                warn_if_few_images(len(scores), contamination, "calibration")
                threshold, record = quantile_threshold(scores, contamination, "normal calibration images")
                if pixel:
                    pixel_threshold, pixel_record = normal_pixel_threshold(maps, contamination)
            else:
                y = _check_labels(y, len(scores))
                threshold, record = labelled_threshold(y, scores, max_fpr=max_fpr, min_recall=min_recall)
                if pixel:
                    pixel_threshold, pixel_record = labelled_pixel_threshold(
                        maps, masks, y, self.resize, self.crop_size
                    )
        record["pixel"] = pixel_record
        # Only now, with everything computed, does the estimator change.
        self.threshold_ = threshold
        self.pixel_threshold_ = pixel_threshold
        self.calibration_ = record
        if getattr(self, "decision_scores_", None) is not None:
            self.labels_ = (self.decision_scores_ > threshold).astype(int)
        return self

    @property
    def mask_threshold(self) -> float:
        """The score at which a pixel is marked defective: ``pixel_threshold_``, else ``threshold_``."""
        check_is_fitted(self, "model_")
        return self.threshold_ if self.pixel_threshold_ is None else self.pixel_threshold_

    # ------------------------------------------------------------------ deployment
    def summary(self) -> str:
        """A short model card of the fitted detector, one fact per line.

        See :func:`sksimplenet.card.model_card`.
        """
        from .card import model_card

        return model_card(self)

    def export_onnx(self, path, opset: int = 17):
        """Write the inference graph to an ONNX file; see :func:`sksimplenet.export.export_onnx`.

        Parameters
        ----------
        path : str or path
            Destination file (suggested extension: ``.onnx``).
        opset : int, default=17
            ONNX operator set version.

        Returns
        -------
        pathlib.Path
        """
        from .export import export_onnx

        return export_onnx(self, path, opset=opset)

    def anomaly_map(self, X, original_size: bool = False, return_scores: bool = False):
        """Pixel anomaly scores, higher = more anomalous.

        Parameters
        ----------
        X : sequence of images or array-like
        original_size : bool, default=False
            False: maps at the network's input resolution (after resize and crop).
            True: each map resized back onto its image's original pixel grid. Pixels the
            centre crop removed were never seen: they are NaN (``crop_size=None``, the
            default, removes none).
        return_scores : bool, default=False
            Also return the image anomaly scores, from the same pass through the network:
            ``anomaly_map(X, return_scores=True)`` costs what ``anomaly_map(X)`` does, and
            half of calling it and :meth:`score_samples`.

        Returns
        -------
        maps : ndarray of shape (n_images, height, width), float32
            When all maps have one size; otherwise a list of ``(height_i, width_i)`` arrays.
        scores : ndarray of shape (n_images,)
            Only with ``return_scores``: image anomaly scores, higher = more anomalous;
            equal to ``-score_samples(X)``.
        """
        maps, scores, images = self._infer(X)
        if original_size:
            maps = [
                to_original_size(m, image_size(image), self.resize, self.crop_size)
                for m, image in zip(maps, images)
            ]
        arrays = [m.numpy().astype(np.float32, copy=False) for m in maps]
        if all(a.shape == arrays[0].shape for a in arrays):
            arrays = np.stack(arrays)
        return (arrays, scores) if return_scores else arrays

    # ------------------------------------------------------------------ persistence
    def __setstate__(self, state):
        for name, value in EARLIER_VALUES.items():  # pickled before the parameter existed
            state.setdefault(name, value)
        if "model_" in state:
            complete_fitted_attributes(state)
        super().__setstate__(state)

    def __getstate__(self):
        state = self.__dict__.copy()
        model = state.get("model_")
        if model is not None and next(model.parameters()).device.type != "cpu":
            state["model_"] = copy.deepcopy(model).cpu()
        return state
