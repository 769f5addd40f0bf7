"""The training feature cache: preallocated, bounded, and on disk when asked, with equal results."""

import numpy as np
import pytest
import torch

from sksimplenet import SimpleNetDetector, cache
from sksimplenet.cache import FeatureCache, cache_nbytes
from sksimplenet.datasets import make_synthetic

from .conftest import TINY

SMALL = {**TINY, "epochs": 2}


@pytest.fixture(scope="module")
def data():
    images, _, _ = make_synthetic(10, 4, texture="stripes", size=64, random_state=3)
    return images


def test_bytes_per_image_of_the_documented_backbones():
    # 224-pixel images: a 28 × 28 patch grid (stride 8).
    assert cache_nbytes((1, 28, 28, 1536), torch.float16) == 2_408_448  # wide_resnet50_2
    assert cache_nbytes((1, 28, 28, 152), torch.float16) == 238_336  # efficientnet_lite0
    assert cache_nbytes((10, 28, 28, 1536), torch.float32) == 10 * 2 * 2_408_448


def test_chunks_are_written_into_one_preallocated_tensor():
    with FeatureCache(5, torch.float16, torch.device("cpu")) as store:
        first = torch.randn(2, 3, 4, 6)
        store.write(0, first)
        tensor = store.tensor
        assert tensor.shape == (5, 3, 4, 6) and tensor.dtype == torch.float16 and store.location == "memory"
        store.write(2, torch.ones(3, 3, 4, 6))
        assert store.tensor is tensor  # filled in place, never concatenated
        torch.testing.assert_close(tensor[:2], first.half())
        assert torch.equal(tensor[2:], torch.ones(3, 3, 4, 6, dtype=torch.float16))
    assert store.tensor is None


def test_disk_cache_is_a_mapped_file_that_is_gone_afterwards(tmp_path):
    store = FeatureCache(4, torch.bfloat16, torch.device("cpu"), tmp_path)
    store.write(0, torch.arange(4 * 2 * 2 * 3, dtype=torch.float32).view(4, 2, 2, 3))
    assert store.location == "disk"
    assert store.tensor[3, 1, 1, 2].item() == 47.0
    store.close()
    assert list(tmp_path.iterdir()) == []


def test_too_large_for_memory_fails_early_and_suggests_cache_dir(monkeypatch):
    monkeypatch.setattr(cache, "available_memory", lambda: 1000)
    store = FeatureCache(10, torch.float16, torch.device("cpu"))
    with pytest.raises(MemoryError, match="cache_dir"):
        store.write(0, torch.zeros(1, 28, 28, 152))


def test_a_full_disk_fails_before_writing(tmp_path, monkeypatch):
    monkeypatch.setattr(cache.shutil, "disk_usage", lambda _: type("Usage", (), {"free": 10})())
    with pytest.raises(OSError, match="free"):
        FeatureCache(10, torch.float16, torch.device("cpu"), tmp_path).write(0, torch.zeros(1, 8, 8, 16))
    assert list(tmp_path.iterdir()) == []


def test_fit_with_a_disk_cache_equals_fit_in_memory(data, tmp_path):
    in_memory = SimpleNetDetector(**SMALL, feature_scaling="standardize").fit(data[:10])
    on_disk = SimpleNetDetector(**SMALL, feature_scaling="standardize", cache_dir=tmp_path).fit(data[:10])
    assert on_disk.loss_history_ == in_memory.loss_history_
    for name, tensor in in_memory.model_.state_dict().items():
        assert torch.equal(on_disk.model_.state_dict()[name], tensor), name
    np.testing.assert_array_equal(on_disk.score_samples(data), in_memory.score_samples(data))
    assert on_disk.offset_ == in_memory.offset_
    assert list(tmp_path.iterdir()) == []  # the cache file is deleted


def test_a_failed_fit_removes_its_cache_file(data, tmp_path):
    images = [*data[:4], np.zeros((40, 50, 3), np.uint8)]  # 64 × 80 after resizing the short side
    with pytest.raises(ValueError, match="different sizes"):
        SimpleNetDetector(**SMALL, cache_dir=tmp_path).fit(images)
    assert list(tmp_path.iterdir()) == []


def test_cache_dir_must_be_an_existing_folder(data, tmp_path):
    with pytest.raises(ValueError, match="cache_dir"):
        SimpleNetDetector(**SMALL, cache_dir=tmp_path / "missing").fit(data[:2])
