"""Bad estimator inputs: invalid parameters at fit, use before fit, the smallest training set."""

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from sksimplenet import SimpleNetDetector

from .conftest import FAST

IMAGES = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"sigma": 0}, r"^sigma must be a number > 0, got 0$"),
        ({"sigma": -0.1}, r"^sigma must be a number > 0, got -0\.1$"),
        ({"epochs": 0}, r"^epochs must be an integer >= 1 or 'auto', got 0$"),
        ({"epochs": "many"}, r"^epochs must be an integer >= 1 or 'auto', got 'many'$"),
        ({"weight_averaging": 1.0}, r"^weight_averaging must be None or a float in \(0, 1\), got 1\.0$"),
        ({"weight_averaging": True}, r"^weight_averaging must be None or a float in \(0, 1\), got True$"),
        ({"validation_fraction": 0.6}, r"^validation_fraction must be a float in \[0, 0\.5\], got 0\.6$"),
        ({"validation_fraction": None}, r"^validation_fraction must be a float in \[0, 0\.5\], got None$"),
        ({"batch_size": 0}, r"^batch_size must be an integer >= 1, got 0$"),
        ({"layers": ("features.3", "nope")}, r"^layers \['nope'\] not found in the backbone"),
        ({"backbone": "no_such_net"}, r"^Unknown backbone 'no_such_net'"),
        ({"contamination": -0.1}, r"^contamination must be 'auto' or a float in \(0, 0\.5\], got -0\.1$"),
        ({"contamination": True}, r"^contamination must be 'auto' or a float in \(0, 0\.5\], got True$"),
        ({"sigma": (0.1, True)}, r"^sigma must be a number > 0 or a tuple of them, got \(0\.1, True\)$"),
        ({"sigma": ()}, r"^sigma must be a number > 0 or a tuple of them, got \(\)$"),
        ({"image_score": 1.5}, r"^image_score must be 'max' or a float in \(0, 1\], got 1\.5$"),
        ({"image_score": "mean"}, r"^image_score must be 'max' or a float in \(0, 1\], got 'mean'$"),
        ({"resize": 128, "crop_size": 224}, r"^crop_size=224 is larger than the resized image \(resize=128"),
        ({"backbone": "resnet18", "weights": None, "layers": ("fc",)}, r"^layer 'fc' gives a 2-D output"),
        ({"device": "banana"}, r"^device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got 'banana'$"),
        ({"device": "cuda:x"}, r"^device must be .* got 'cuda:x'$"),
        ({"device": "meta"}, r"^device must be .* got 'meta'$"),
        ({"n_jobs": 0}, r"^n_jobs must be None or a non-zero integer \(-1: all cores\), got 0$"),
        ({"n_jobs": "x"}, r"^n_jobs must be None or a non-zero integer \(-1: all cores\), got 'x'$"),
        ({"smoothing_sigma": 1e6}, r"^smoothing_sigma must be at most 100 \(pixels of the network's input\)"),
        ({"resize": (64, 96), "crop_size": (64, 100)}, r"^crop_size=\(64, 100\) is larger than the resized"),
    ],
    ids=[
        "sigma=0",
        "sigma<0",
        "epochs=0",
        "epochs-unknown-word",
        "weight_averaging=1",
        "weight_averaging=True",
        "validation_fraction>0.5",
        "validation_fraction=None",
        "batch_size=0",
        "unknown-layer",
        "unknown-backbone",
        "contamination<0",
        "contamination=True",
        "sigma-tuple-with-bool",
        "sigma-empty-tuple",
        "image_score>1",
        "image_score-unknown",
        "crop-larger-than-resize",
        "layer-without-a-map",
        "device-unknown",
        "device-bad-index",
        "device-meta",
        "n_jobs=0",
        "n_jobs-string",
        "smoothing_sigma-huge",
        "crop-wider-than-resize",
    ],
)
def test_invalid_parameter_is_named_at_fit(params, message):
    detector = SimpleNetDetector(**{**FAST, **params})  # constructing never validates
    with pytest.raises(ValueError, match=message):
        detector.fit(IMAGES)
    with pytest.raises(NotFittedError):
        check_is_fitted(detector)


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
