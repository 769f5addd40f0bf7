"""The network's view of an image (resize, centre crop) and its inverse (crop_box), as a pair."""

import warnings

import numpy as np
import pytest
import torch

from sksimplenet import SimpleNetDetector
from sksimplenet.image_io import crop_box, preprocess, resized_size, to_original_size

from .conftest import TINY

CASES = [
    ((120, 200), 96, None),  # shorter side, whole image
    ((120, 200), 96, 96),  # shorter side, centre crop of the long side
    ((300, 100), 64, (60, 64)),  # portrait, crop on both sides
    ((81, 93), (64, 48), None),  # squash to a fixed size
    ((81, 93), (64, 48), 40),
]


@pytest.mark.parametrize(("size", "resize", "crop_size"), CASES)
def test_resized_size_is_what_preprocess_gives_before_cropping(size, resize, crop_size):
    image = torch.zeros(3, *size)
    assert tuple(preprocess(image, resize, None).shape[-2:]) == resized_size(size, resize)


@pytest.mark.parametrize(("size", "resize", "crop_size"), CASES)
def test_crop_box_maps_the_crop_back_onto_the_image(size, resize, crop_size):
    # Pixel values are the pixels' own centre coordinates; after preprocessing, the first and
    # last rows and columns of what the network sees tell where its view starts and ends.
    height, width = size
    rows = torch.arange(height, dtype=torch.float64)[:, None].expand(height, width) + 0.5
    columns = torch.arange(width, dtype=torch.float64)[None, :].expand(height, width) + 0.5
    seen = preprocess(torch.stack([rows, columns, rows]), resize, crop_size)
    top, left, bottom, right = crop_box(size, resize, crop_size)
    out_h, out_w = seen.shape[-2:]
    step_y, step_x = (bottom - top) / out_h, (right - left) / out_w  # original pixels per network pixel
    # The centres of the middle rows and columns of the view (away from border effects).
    middle_y, middle_x = out_h // 2, out_w // 2
    assert float(seen[0, middle_y, middle_x]) == pytest.approx(top + (middle_y + 0.5) * step_y, abs=0.5)
    assert float(seen[1, middle_y, middle_x]) == pytest.approx(left + (middle_x + 0.5) * step_x, abs=0.5)
    if crop_size is None:
        assert (top, left, bottom, right) == (0.0, 0.0, height, width)
    else:  # the view's outer pixel centres sit half a step inside the box
        assert float(seen[1, middle_y, 0]) == pytest.approx(left + 0.5 * step_x, abs=0.5 * step_x + 0.01)
        assert float(seen[0, -1, middle_x]) == pytest.approx(bottom - 0.5 * step_y, abs=0.5 * step_y + 0.01)


def test_the_default_keeps_the_whole_image_and_does_not_warn():
    images = np.random.default_rng(0).integers(0, 255, (4, 60, 150, 3), dtype=np.uint8)
    params = {key: value for key, value in TINY.items() if key != "resize"}
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="crop_size")  # no word of a crop
        detector = SimpleNetDetector(**params).fit(images)
    assert detector.input_size_ == (224, 224)  # squashed: nothing is cut away
    maps = detector.anomaly_map(images[:1], original_size=True)
    assert maps.shape == (1, 60, 150) and np.isfinite(maps).all()


def test_a_crop_that_cuts_content_warns_and_leaves_the_unseen_border_out_of_the_map():
    images = np.random.default_rng(0).integers(0, 255, (4, 60, 150, 3), dtype=np.uint8)
    detector = SimpleNetDetector(**{**TINY, "resize": 64, "crop_size": 64})
    with pytest.warns(UserWarning, match=r"crop_size=64 cuts 60% of each image away .* crop_size=None"):
        detector.fit(images)
    (seen_map,) = detector.anomaly_map(images[:1], original_size=True)
    assert seen_map.shape == (60, 150)
    top, left, bottom, right = (round(v) for v in crop_box((60, 150), 64, 64))
    assert (top, bottom, left, right) == (0, 60, 45, 105)
    assert np.isfinite(seen_map[:, left:right]).all()
    assert np.isnan(seen_map[:, :left]).all() and np.isnan(seen_map[:, right:]).all()


def test_a_map_goes_back_onto_its_image_inside_the_crop_box():
    # A linear ramp at the network's 64 x 64 resolution, for an image of 60 x 150 pixels
    # resized to a shorter side of 64 and centre-cropped to 64 x 64.
    ramp = torch.linspace(0, 1, 64).expand(64, 64).contiguous()
    framed = to_original_size(ramp, (60, 150), 64, 64)
    assert framed.shape == (60, 150)
    top, left, bottom, right = (round(v) for v in crop_box((60, 150), 64, 64))
    inside = framed[top:bottom, left:right]
    assert torch.isfinite(inside).all() and torch.isnan(framed[:, :left]).all()
    assert inside[0, 0] < 0.05 and inside[0, -1] > 0.95  # the ramp runs across the box
    whole = to_original_size(ramp, (60, 150), (64, 64), None)  # nothing cut: every pixel seen
    assert torch.isfinite(whole).all() and whole.shape == (60, 150)
