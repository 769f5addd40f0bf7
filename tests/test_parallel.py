"""fit_many: one detector per data set through joblib, locally and on a Dask cluster."""

import contextlib

import joblib
import numpy as np
import pytest
import torch

from sksimplenet import SimpleNetDetector
from sksimplenet.datasets import make_synthetic
from sksimplenet.parallel import fit_many

from .conftest import TINY as SMALL

TEXTURES = ("stripes", "grid", "dots")


@pytest.fixture(scope="module")
def categories():
    """Three categories: 6 normal training images and 2 normal + 2 defective test images each."""
    train, test = {}, {}
    for seed, texture in enumerate(TEXTURES):
        images, _, _ = make_synthetic(8, 2, texture=texture, size=64, random_state=seed)
        train[texture], test[texture] = images[:6], images[6:]
    return train, test


@contextlib.contextmanager
def one_thread():
    """Run PyTorch on one thread, as the Dask workers (threads_per_worker=1) do.

    Reductions split over several threads round differently, and training carries those
    differences into the scores; with one thread everywhere they are equal bit for bit.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def sequential(categories):
    """The reference: each category fitted in this process, one after the other."""
    train, test = categories
    with one_thread():
        fitted = {
            name: SimpleNetDetector(**SMALL, sigma=0.01 * (i + 1)).fit(train[name])
            for i, name in enumerate(TEXTURES)
        }
        return {name: fitted[name].score_samples(test[name]) for name in TEXTURES}


def _make(name):
    return SimpleNetDetector(**SMALL, sigma=0.01 * (TEXTURES.index(name) + 1))


def test_fit_many_in_this_process(categories, sequential):
    train, test = categories
    with one_thread():
        fitted = fit_many(_make, train)
        scores = {name: fitted[name].score_samples(test[name]) for name in TEXTURES}
    assert list(fitted) == list(TEXTURES)
    for i, name in enumerate(TEXTURES):
        detector = fitted[name]
        assert detector.sigma == pytest.approx(0.01 * (i + 1))  # make_detector got the name
        assert detector.n_train_images_ + detector.n_held_out_images_ == 6
        np.testing.assert_array_equal(scores[name], sequential[name])


def test_fit_many_clones_an_estimator(categories):
    train, _ = categories
    template = SimpleNetDetector(**SMALL)
    subset = {name: train[name] for name in TEXTURES[:2]}
    fitted = fit_many(template, subset)
    assert not hasattr(template, "model_")
    assert fitted["stripes"] is not fitted["grid"] and fitted["stripes"] is not template
    assert fitted["stripes"].get_params() == template.get_params()
    assert fitted["stripes"].model_ is not fitted["grid"].model_


def test_fit_many_arguments():
    assert fit_many(_make, {}) == {}
    with pytest.raises(TypeError, match="make_detector"):
        fit_many("resnet18", {"a": np.zeros((2, 8, 8, 3), np.uint8)})
    with pytest.raises(TypeError, match="mapping"):
        fit_many(_make, [np.zeros((2, 8, 8, 3), np.uint8)])


def test_fit_many_on_a_dask_cluster(categories, sequential):
    distributed = pytest.importorskip("distributed")
    train, test = categories
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    )
    try:
        with distributed.Client(cluster, timeout="60s") as client:
            workers = set(client.scheduler_info()["workers"])
            assert len(workers) == 2

            # A local function: pickled by value, so the workers need not import this test module.
            def make(name):
                return SimpleNetDetector(**SMALL, sigma=0.01 * (TEXTURES.index(name) + 1))

            with distributed.get_task_stream(client) as stream, joblib.parallel_config(backend="dask"):
                fitted = fit_many(make, train)
            ran_on = {task["worker"] for task in stream.data}
    finally:
        cluster.close()

    assert ran_on and ran_on <= workers  # the fits ran in the worker processes
    assert list(fitted) == list(TEXTURES)
    for name in TEXTURES:
        assert fitted[name].n_train_images_ + fitted[name].n_held_out_images_ == 6
        assert next(fitted[name].model_.parameters()).device.type == "cpu"
        # Same seeds and thread count, another process: the same scores.
        with one_thread():
            np.testing.assert_array_equal(fitted[name].score_samples(test[name]), sequential[name])
