"""Faults during fit and scoring: no half-fitted detector, clear training errors, thread safety."""

import copy
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted
from torch import nn

import sksimplenet.detector
import sksimplenet.training
from sksimplenet import SimpleNetDetector
from sksimplenet.training import train_discriminator

from .conftest import FAST


def interrupt_after_first_epoch(monkeypatch):
    """Make training raise KeyboardInterrupt (as Ctrl-C would) once its first epoch is done."""
    epochs_done = []

    def stop(epoch, loss):
        epochs_done.append(epoch)
        raise KeyboardInterrupt

    def interrupted(*args, **kwargs):
        return train_discriminator(*args, **{**kwargs, "callback": stop})

    monkeypatch.setattr(sksimplenet.detector, "train_discriminator", interrupted)
    return epochs_done


def assert_unchanged(detector, attributes, scores, images):
    assert vars(detector).keys() == attributes.keys()
    assert all(vars(detector)[name] is value for name, value in attributes.items())
    np.testing.assert_array_equal(detector.score_samples(images), scores)


def test_interrupted_refit_leaves_the_fitted_detector_as_it_was(fitted, stripes, monkeypatch):
    images = stripes[0]
    detector = copy.deepcopy(fitted)
    attributes, scores = dict(vars(detector)), detector.score_samples(images[25:30])
    epochs_done = interrupt_after_first_epoch(monkeypatch)

    with pytest.raises(KeyboardInterrupt):
        detector.fit(images[:8])
    assert epochs_done == [0]
    assert_unchanged(detector, attributes, scores, images[25:30])


def test_refit_failing_on_a_truncated_file_leaves_the_fitted_detector_as_it_was(fitted, stripes, tmp_path):
    images = stripes[0]
    detector = copy.deepcopy(fitted)
    attributes, scores = dict(vars(detector)), detector.score_samples(images[25:30])
    paths = []
    for i in range(4):
        Image.fromarray(images[i]).save(tmp_path / f"{i}.png")
        paths.append(tmp_path / f"{i}.png")
    data = paths[-1].read_bytes()
    paths[-1].write_bytes(data[: len(data) // 2])

    with pytest.raises(ValueError, match=r"Image 3: '.*3\.png' is truncated or corrupt"):
        detector.fit(paths)
    assert_unchanged(detector, attributes, scores, images[25:30])


def test_decoding_errors_name_the_position_in_x_when_y_leaves_images_out(stripes, tmp_path):
    Image.fromarray(stripes[0][0]).save(tmp_path / "good.png")
    data = (tmp_path / "good.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    paths = [tmp_path / "good.png", tmp_path / "good.png", tmp_path / "cut.png"]

    with pytest.raises(ValueError, match=r"^Image 2: '.*cut\.png' is truncated"):
        SimpleNetDetector(**FAST).fit(paths, y=[1, -1, 1])


def test_interrupted_first_fit_leaves_the_detector_unfitted(stripes, monkeypatch):
    detector = SimpleNetDetector(**FAST)
    interrupt_after_first_epoch(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        detector.fit(stripes[0][:4])
    with pytest.raises(NotFittedError):
        check_is_fitted(detector)
    assert vars(detector) == SimpleNetDetector(**FAST).__dict__  # the parameters, nothing else


def test_non_finite_loss_stops_training_naming_the_epoch(stripes, monkeypatch):
    original = sksimplenet.training.truncated_l1_loss
    steps = []

    def nan_from_the_second_step(*args):
        steps.append(1)
        loss = original(*args)
        return loss * float("nan") if len(steps) >= 2 else loss

    monkeypatch.setattr(sksimplenet.training, "truncated_l1_loss", nan_from_the_second_step)
    # 4 images, all trained on, batch_size=4: one step per epoch, so epoch 2 is the first
    # with a NaN loss (no held-out images, whose criterion would call the loss too).
    detector = SimpleNetDetector(**FAST, validation_fraction=0.0)
    with pytest.raises(FloatingPointError, match=r"^The training loss became nan in epoch 2\. Likely causes"):
        detector.fit(stripes[0][:4])
    assert len(steps) == 2
    with pytest.raises(NotFittedError):
        check_is_fitted(detector)


def score_in_threads(detector, chunks):
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(detector.score_samples, chunks))


def test_scoring_from_four_threads_matches_sequential_scoring(fitted, stripes):
    images = stripes[0]
    chunks = [images[i : i + 2] for i in range(20, 36, 2)]
    sequential = [fitted.score_samples(chunk) for chunk in chunks]
    for concurrent, expected in zip(score_in_threads(fitted, chunks), sequential):
        np.testing.assert_array_equal(concurrent, expected)


class Untraceable(nn.Module):
    """A backbone torch.fx cannot trace (data-dependent branch), so forward hooks extract it."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.block1 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.block2 = nn.Conv2d(16, 16, 3, stride=2, padding=1)

    def forward(self, x):
        x = self.stem(x).relu()
        if x.mean() > -1:
            x = self.block1(x).relu()
        return self.block2(x)


def test_scoring_from_four_threads_with_a_hooked_backbone(stripes):
    images = stripes[0]
    torch.manual_seed(0)
    detector = SimpleNetDetector(**{**FAST, "backbone": Untraceable(), "layers": ("block1", "block2")})
    detector.fit(images[:8])
    assert type(detector.model_.extractor.body).__name__ == "_HookedBody"
    chunks = [images[i : i + 2] for i in range(20, 36, 2)]
    sequential = [detector.score_samples(chunk) for chunk in chunks]
    for concurrent, expected in zip(score_in_threads(detector, chunks), sequential):
        np.testing.assert_array_equal(concurrent, expected)
