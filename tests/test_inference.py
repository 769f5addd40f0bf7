"""Scoring through the estimator: one pass for maps and scores, the folded head, parallel decoding."""

import numpy as np
import pytest
import torch
from PIL import Image

from sksimplenet import SimpleNetDetector
from sksimplenet.datasets import make_synthetic

from .conftest import TINY as SMALL


@pytest.fixture(scope="module")
def data():
    images, _, _ = make_synthetic(8, 4, texture="grid", size=64, random_state=0)
    return images


@pytest.fixture(scope="module")
def detector(data):
    return SimpleNetDetector(**SMALL).fit(data[:8])


def test_maps_and_scores_in_one_pass(detector, data):
    calls = []
    handle = detector.model_.register_forward_hook(lambda _module, inputs, _out: calls.append(len(inputs[0])))
    try:
        maps, scores = detector.anomaly_map(data, return_scores=True)
    finally:
        handle.remove()
    assert sum(calls) == len(data)  # every image went through the network once
    assert maps.shape == (12, 64, 64) and maps.dtype == np.float32 and scores.shape == (12,)
    np.testing.assert_array_equal(maps, detector.anomaly_map(data))
    np.testing.assert_array_equal(scores, -detector.score_samples(data))
    assert scores[8:].mean() > scores[:8].mean()  # the defective images score higher


def test_estimator_scores_match_the_reference_path(detector, data):
    """The folded head serves the estimator; the step-by-step path gives the same numbers."""
    maps, scores = detector.anomaly_map(data, return_scores=True)
    batch = torch.from_numpy(data).permute(0, 3, 1, 2).float() / 255.0
    with torch.enable_grad():  # gradients on: the reference path
        assert not detector.model_.uses_folded_head()
        ref_maps, ref_scores = (t.detach().numpy() for t in detector.model_(batch))
    np.testing.assert_allclose(maps, ref_maps, rtol=0, atol=1e-4)
    np.testing.assert_allclose(scores, ref_scores, rtol=0, atol=1e-4)


def test_parallel_decoding_of_files_gives_identical_scores(detector, data, tmp_path):
    paths = []
    for index, image in enumerate(data):
        path = tmp_path / f"{index}.png"
        Image.fromarray(image).save(path)
        paths.append(str(path))
    in_process = detector.anomaly_map(paths, return_scores=True)
    detector.set_params(n_jobs=2)
    try:
        parallel = detector.anomaly_map(paths, return_scores=True)
    finally:
        detector.set_params(n_jobs=None)
    np.testing.assert_array_equal(parallel[0], in_process[0])
    np.testing.assert_array_equal(parallel[1], in_process[1])
    np.testing.assert_array_equal(in_process[1], -detector.score_samples(data))  # PNG is lossless

    fitted_parallel = SimpleNetDetector(**SMALL, n_jobs=2).fit(paths[:8])
    np.testing.assert_array_equal(fitted_parallel.score_samples(paths), detector.score_samples(paths))


def test_a_corrupt_file_decoded_in_a_worker_gives_the_one_line_message(detector, data, tmp_path):
    paths = []
    for index, image in enumerate(data[:4]):
        paths.append(tmp_path / f"{index}.png")
        Image.fromarray(image).save(paths[-1])
    paths[2].write_bytes(paths[2].read_bytes()[:200])  # cut short
    detector.set_params(n_jobs=2)
    try:
        with pytest.raises(ValueError) as raised:
            detector.score_samples(paths)
    finally:
        detector.set_params(n_jobs=None)
    message = str(raised.value)
    assert message.startswith("Image 2: ") and "is truncated or corrupt" in message
    assert "\n" not in message and "worker" not in message
