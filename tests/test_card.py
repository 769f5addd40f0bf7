"""SimpleNetDetector.summary(): the fitted detector's model card."""

import numpy as np
import pytest
import torch
import torchvision
from sklearn.exceptions import NotFittedError

from sksimplenet import SimpleNetDetector
from sksimplenet.card import model_card
from sksimplenet.datasets import make_synthetic
from sksimplenet.precision import missing_feature

SMALL = dict(resize=64, epochs=2, batch_size=4, hidden_dim=32, device="cpu", random_state=0)


@pytest.fixture(scope="module")
def images():
    return make_synthetic(6, 0, texture="grid", size=72, random_state=0)[0]


def _fields(card: str) -> dict:
    header, *lines = card.splitlines()
    assert header == "SimpleNetDetector (fitted)"
    fields = {}
    for line in lines:
        name, value = line.split(" : ", 1)
        fields[name.strip()] = value
    return fields


def test_summary_of_a_named_backbone(images):
    detector = SimpleNetDetector("resnet18", weights=None, contamination=0.2, **SMALL)
    params_repr = repr(detector)
    detector.fit(images)
    card = detector.summary()
    assert card == model_card(detector)
    fields = _fields(card)
    assert list(fields) == [
        "backbone",
        "layers",
        "weights",
        "precision",
        "training precision",
        "input size",
        "feature shape",
        "training images",
        "labelled anomalies",
        "epochs",
        "held-out images",
        "final loss",
        "final held-out criterion",
        "threshold",
        "fit time",
    ]
    assert fields["backbone"] == "resnet18"
    assert fields["layers"] == "layer2, layer3"
    assert fields["weights"] == "None (random initialisation)"
    assert fields["precision"] == "float32"
    assert fields["training precision"] == f"auto ({detector.training_dtype_} when fitted)"
    assert fields["input size"] == "64 x 64 (resize=64, crop_size=None)"
    assert fields["feature shape"] == "8 x 8 x 384 (h x w x channels)"  # 128 + 256 channels at stride 8
    assert fields["training images"] == "5" and fields["held-out images"] == "1"
    assert fields["labelled anomalies"] == "none (trained on normal images only)"
    assert fields["epochs"] == "2" and len(detector.loss_history_) == 2
    assert float(fields["final loss"]) == pytest.approx(detector.loss_history_[-1], rel=1e-3)
    held_out = float(fields["final held-out criterion"])
    assert held_out == pytest.approx(detector.validation_history_[-1], rel=1e-3)
    threshold = float(fields["threshold"].split("=")[1].split("(")[0])
    assert threshold == pytest.approx(detector.threshold_, rel=1e-5)
    assert fields["threshold"].endswith("(contamination=0.2)")
    assert float(fields["fit time"].removesuffix(" s")) == pytest.approx(detector.fit_time_, abs=0.05)
    # The repr stays scikit-learn's: the parameters, fitted or not.
    assert repr(detector) == params_repr


def test_summary_of_a_module_backbone(images):
    detector = SimpleNetDetector(torchvision.models.resnet18(), layers=("layer2",), **SMALL).fit(images[:3])
    fields = _fields(detector.summary())
    assert fields["backbone"] == "ResNet"
    assert fields["weights"] == "the module's own"
    assert fields["layers"] == "layer2"
    assert fields["feature shape"] == "8 x 8 x 128 (h x w x channels)"
    assert fields["training images"] == "2" and fields["held-out images"] == "1"
    assert fields["threshold"] == f"threshold_ = {detector.threshold_:.6g} (contamination='auto')"
    assert np.isfinite(float(fields["final loss"]))


def test_summary_needs_a_fitted_detector():
    with pytest.raises(NotFittedError):
        SimpleNetDetector().summary()


def test_summary_says_what_precision_auto_picks_here(images):
    detector = SimpleNetDetector("resnet18", weights=None, precision="auto", **SMALL).fit(images[:3])
    native = missing_feature(torch.bfloat16, torch.device("cpu")) is None
    assert _fields(detector.summary())["precision"] == f"auto ({'bfloat16' if native else 'float32'} on cpu)"
