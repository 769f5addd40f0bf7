import numpy as np
import pytest
import torch
from scipy import ndimage

from sksimplenet.scoring import (
    apply_map_operators,
    gaussian_blur,
    gaussian_kernel1d,
    image_scores,
    map_operators,
    score_maps,
    upsample,
)


@pytest.mark.parametrize("sigma", [1.0, 4.0])
def test_gaussian_blur_matches_scipy(sigma):
    maps = torch.rand(3, 64, 80, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ours = gaussian_blur(maps, sigma).numpy()
    for i in range(3):
        expected = ndimage.gaussian_filter(maps[i].numpy(), sigma, mode="nearest")
        np.testing.assert_allclose(ours[i], expected, rtol=1e-4, atol=1e-12)


def test_gaussian_blur_float32_matches_scipy_within_1e_4():
    maps = torch.rand(2, 224, 224, generator=torch.Generator().manual_seed(1))
    ours = gaussian_blur(maps, 4.0).numpy()
    expected = ndimage.gaussian_filter(maps.numpy().astype(np.float64), (0, 4, 4), mode="nearest")
    np.testing.assert_allclose(ours, expected, rtol=1e-4)


def test_kernel_radius_and_normalisation_follow_scipy():
    kernel = gaussian_kernel1d(4.0)
    assert kernel.numel() == 2 * 16 + 1
    assert kernel.sum().item() == pytest.approx(1.0)


def test_upsample_keeps_constant_maps_and_sets_size():
    maps = torch.full((2, 7, 7), 3.0)
    out = upsample(maps, (56, 64))
    assert out.shape == (2, 56, 64)
    assert torch.allclose(out, torch.full_like(out, 3.0))


def test_image_score_is_maximum_of_the_smoothed_map():
    patch_scores = torch.zeros(2, 8, 8)
    patch_scores[1, 3, 4] = 5.0
    maps = score_maps(patch_scores, (64, 64), smoothing_sigma=4.0)
    scores = image_scores(maps, "max")
    assert scores[0] == 0.0
    assert scores[1] == maps[1].max()
    assert 0 < scores[1] < 5.0  # smoothing spreads the peak
    row, col = divmod(int(maps[1].argmax()), 64)
    assert abs(row - 27.5) <= 2 and abs(col - 35.5) <= 2  # near the patch's centre


@pytest.mark.parametrize(
    "shape, size, sigma", [((28, 28), (224, 224), 4.0), ((5, 7), (40, 33), 0.0), ((9, 6), (9, 6), 2.5)]
)
def test_map_operators_reproduce_score_maps(shape, size, sigma):
    patch_scores = torch.randn(3, *shape, generator=torch.Generator().manual_seed(0))
    k_h, k_w = map_operators(shape, size, sigma)
    assert k_h.shape == (size[0], shape[0]) and k_w.shape == (size[1], shape[1])
    expected = score_maps(patch_scores, size, sigma)
    torch.testing.assert_close(apply_map_operators(patch_scores, k_h, k_w), expected, rtol=0, atol=1e-5)
    # Rows sum to one: a constant map stays constant, as with upsampling and smoothing.
    torch.testing.assert_close(k_h.sum(1), torch.ones(size[0]))
