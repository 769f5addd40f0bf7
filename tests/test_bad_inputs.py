"""Bad estimator inputs: invalid parameters at fit, use before fit, the smallest training set."""

import re

import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from sksimplenet import SimpleNetDetector

from .conftest import FAST

IMAGES = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)


# Each parameter's valid values are declared once, in sksimplenet.detector.PARAMETER_CONSTRAINTS;
# fit refuses anything else with scikit-learn's message, which names the parameter.
INVALID_VALUES = {
    "sigma": [0, -0.1, float("inf"), (0.1, True), (), "big"],
    "epochs": [0, "many", 2.0, True],
    "weight_averaging": [1.0, True],
    "validation_fraction": [0.6, None],
    "batch_size": [0, np.float64(4.0)],
    "hidden_dim": [True],
    "patch_size": [4, 0],
    "adaptor_lr": [float("nan"), float("inf")],
    "contamination": [-0.1, True],
    "image_score": [1.5, "mean"],
    "device": ["banana", "cuda:x", "meta", torch.device("meta")],
    "n_jobs": [0, "x"],
    "smoothing_sigma": [1e6],
    "resize": [0, (64, 64, 3), "224"],
    "layers": ["layer2", ()],
    "cache_dtype": ["float64"],
    "adaptor_bias": ["no"],
}


@pytest.mark.parametrize(
    "name, value",
    [(name, value) for name, values in INVALID_VALUES.items() for value in values],
    ids=lambda v: repr(v)[:20],
)
def test_invalid_parameter_is_named_at_fit(name, value):
    detector = SimpleNetDetector(**{**FAST, name: value})  # constructing never validates
    message = (
        rf"^The '{name}' parameter of SimpleNetDetector must be .*\. Got {re.escape(repr(value))} instead\.$"
    )
    with pytest.raises(ValueError, match=message):
        detector.fit(IMAGES)
    with pytest.raises(NotFittedError):
        check_is_fitted(detector)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"resize": 128, "crop_size": 224}, r"^crop_size=224 is larger than the resized image \(resize=128"),
        ({"resize": (64, 96), "crop_size": (64, 100)}, r"^crop_size=\(64, 100\) is larger than the resized"),
        ({"layers": ("features.3", "nope")}, r"^layers \['nope'\] not found in the backbone"),
        ({"backbone": "no_such_net"}, r"^Unknown backbone 'no_such_net'"),
        ({"backbone": "resnet18", "weights": None, "layers": ("fc",)}, r"^layer 'fc' gives a 2-D output"),
        ({"cache_dir": "/no/such/folder"}, r"^cache_dir must be None or an existing folder, got '/no/such"),
    ],
    ids=[
        "crop-larger",
        "crop-wider",
        "unknown-layer",
        "unknown-backbone",
        "layer-without-map",
        "no-cache-dir",
    ],
)
def test_invalid_combination_or_name_is_explained_at_fit(params, message):
    detector = SimpleNetDetector(**{**FAST, **params})
    with pytest.raises(ValueError, match=message):
        detector.fit(IMAGES)
    with pytest.raises(NotFittedError):
        check_is_fitted(detector)


def test_numpy_scalars_are_the_same_parameters_as_python_numbers():
    # ParameterGrid over NumPy arrays hands out NumPy scalars.
    plain = {"sigma": 0.3, "epochs": 2, "batch_size": 2, "resize": 32, "image_score": 0.05, "margin": 0.5}
    numpy = {
        "sigma": np.float32(0.3),
        "epochs": np.int64(2),
        "batch_size": np.int32(2),
        "resize": np.int64(32),
        "image_score": np.float64(0.05),
        "margin": np.float64(0.5),
    }
    expected = SimpleNetDetector(**{**FAST, **plain}).fit(IMAGES).score_samples(IMAGES)
    scores = SimpleNetDetector(**{**FAST, **numpy}).fit(IMAGES).score_samples(IMAGES)
    np.testing.assert_allclose(scores, expected, rtol=1e-5)


def test_predict_before_fit():
    with pytest.raises(NotFittedError, match="This SimpleNetDetector instance is not fitted yet"):
        SimpleNetDetector(**FAST).predict(IMAGES)


def test_fit_on_a_single_image():
    detector = SimpleNetDetector(**FAST).fit(IMAGES[:1])
    assert detector.n_train_images_ == 1 and detector.n_held_out_images_ == 0  # nothing to hold out
    assert len(detector.loss_history_) == FAST["epochs"]
    assert np.isfinite(detector.loss_history_).all()
    scores = detector.score_samples(IMAGES)
    assert scores.shape == (3,) and np.isfinite(scores).all()


@pytest.mark.parametrize(
    "y",
    [[0, 1, 1], [True, False, True], ["good", "bad", "good"], [1.0, np.nan, -1.0], [1, 2, -1]],
    ids=["zero-one", "booleans", "strings", "nan", "two"],
)
def test_labels_other_than_plus_and_minus_one_are_refused(y):
    detector = SimpleNetDetector(**FAST)
    with pytest.raises(
        ValueError, match=r"^y must hold \+1 \(normal\) and -1 \(anomalous\) labels, got .*np\.where"
    ):
        detector.fit(IMAGES, y)
    with pytest.raises(NotFittedError):
        check_is_fitted(detector)


def test_float_labels_of_plus_and_minus_one_are_accepted():
    detector = SimpleNetDetector(**FAST, validation_fraction=0.0).fit(IMAGES, np.array([1.0, -1.0, 1.0]))
    assert detector.n_train_images_ == 2
