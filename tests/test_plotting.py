"""Overlays of anomaly maps on images: PNG size, heatmap colours, contour of the predicted region."""

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("matplotlib")

from sksimplenet.datasets import make_synthetic  # noqa: E402
from sksimplenet.plotting import centred_range, overlay, plot_grid, save_overlay  # noqa: E402


@pytest.fixture(scope="module")
def blob():
    """One 64-pixel image with a defect, and a map that is 1 on the defect and 0 elsewhere."""
    images, _, masks = make_synthetic(0, 2, texture="stripes", defects=("blob",), size=64, random_state=0)
    return images[0], masks[0].astype(np.float32)


def read_rgb(path):
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def test_save_overlay_writes_a_png_at_the_maps_resolution(tmp_path, blob):
    image, anomaly_map = blob
    save_overlay(tmp_path / "overlay.png", image, anomaly_map)

    with Image.open(tmp_path / "overlay.png") as png:
        assert png.format == "PNG"
        assert png.size == (64, 64)


def test_the_heatmap_colours_defect_pixels_red_and_normal_ones_blue(tmp_path, blob):
    image, anomaly_map = blob
    save_overlay(tmp_path / "overlay.png", image, anomaly_map)
    rgb = read_rgb(tmp_path / "overlay.png")

    defect, normal = anomaly_map == 1, anomaly_map == 0
    red_minus_blue = rgb[..., 0] - rgb[..., 2]
    assert red_minus_blue[defect].mean() > 40
    assert red_minus_blue[normal].mean() < -40


def test_a_threshold_draws_a_white_contour_around_the_region(tmp_path, blob):
    image, anomaly_map = blob
    save_overlay(tmp_path / "plain.png", image, anomaly_map)
    save_overlay(tmp_path / "contour.png", image, anomaly_map, threshold=0.5)
    plain, contour = read_rgb(tmp_path / "plain.png"), read_rgb(tmp_path / "contour.png")

    changed = np.abs(contour - plain).sum(axis=-1) > 30
    assert changed.sum() > 20
    # The changed pixels are brighter (white line) and lie on the region's boundary.
    assert contour[changed].mean() > plain[changed].mean() + 50
    rows, cols = np.nonzero(anomaly_map)
    ys, xs = np.nonzero(changed)
    assert rows.min() - 3 <= ys.min() and ys.max() <= rows.max() + 3
    assert cols.min() - 3 <= xs.min() and xs.max() <= cols.max() + 3
    # Far from the region nothing changes.
    assert not changed[:, : max(cols.min() - 4, 0)].any()


def test_a_threshold_above_the_map_draws_no_contour(tmp_path, blob):
    image, anomaly_map = blob
    save_overlay(tmp_path / "plain.png", image, anomaly_map)
    save_overlay(tmp_path / "none.png", image, anomaly_map, threshold=2.0)

    np.testing.assert_array_equal(read_rgb(tmp_path / "plain.png"), read_rgb(tmp_path / "none.png"))


def test_an_image_file_of_another_size_is_resized_onto_the_map(tmp_path, blob):
    image, anomaly_map = blob
    Image.fromarray(image).resize((128, 128)).save(tmp_path / "big.png")

    save_overlay(tmp_path / "from_file.png", tmp_path / "big.png", anomaly_map, threshold=0.5)

    with Image.open(tmp_path / "from_file.png") as png:
        assert png.size == (64, 64)


def test_resize_and_crop_bring_an_image_onto_a_cropped_map(tmp_path):
    image = np.zeros((80, 80), dtype=np.uint8)
    image[30:50, 30:50] = 255  # a white square in the middle, grayscale
    anomaly_map = np.zeros((48, 48))

    save_overlay(tmp_path / "crop.png", image, anomaly_map, resize=64, crop_size=48, alpha=0.0)
    gray = read_rgb(tmp_path / "crop.png").mean(axis=-1)

    # 80 → 64 then a centre crop of 48: the square covers 16..32 of the 48 pixels.
    assert gray.shape == (48, 48)
    assert gray[24, 24] > 200 and gray[2, 2] < 50
    with pytest.raises(ValueError, match="anomaly map is"):
        save_overlay(tmp_path / "bad.png", image, anomaly_map, resize=64, crop_size=40)


def test_overlay_draws_on_given_axes(blob):
    from matplotlib.figure import Figure

    image, anomaly_map = blob
    ax = Figure().subplots()

    assert overlay(image, anomaly_map, ax=ax, threshold=0.5) is ax
    assert len(ax.images) == 2  # the image and the heatmap
    assert len(ax.collections) >= 1  # the contour


def test_plot_grid_saves_one_panel_per_image(tmp_path):
    images, labels, masks = make_synthetic(3, 2, size=48, random_state=1)
    maps = masks.astype(np.float32)

    figure = plot_grid(
        images,
        maps,
        scores=maps.max(axis=(1, 2)),
        labels=labels,
        threshold=0.5,
        ncols=3,
        path=tmp_path / "grid.png",
    )

    with Image.open(tmp_path / "grid.png") as png:
        assert png.size == (3 * 250, 2 * 250)  # 3 columns, 2 rows of 2.5-inch panels at 100 dpi
    titles = [ax.get_title() for ax in figure.axes if ax.get_title()]
    assert titles == ["score 0, normal"] * 3 + ["score 1, anomalous"] * 2


def test_bad_maps_are_refused(blob):
    image, anomaly_map = blob
    with pytest.raises(ValueError, match="2-D"):
        save_overlay("unused.png", image, anomaly_map[None])
    with pytest.raises(ValueError, match="NaN everywhere"):
        save_overlay("unused.png", image, np.full((64, 64), np.nan))
    with pytest.raises(ValueError, match="infinite"):
        save_overlay("unused.png", image, np.where(anomaly_map > 0.5, np.inf, anomaly_map))
    with pytest.raises(ValueError, match="3 images but 2 maps"):
        plot_grid([image] * 3, [anomaly_map] * 2)


def test_without_matplotlib_the_error_says_what_to_install(monkeypatch, blob):
    import sys

    image, anomaly_map = blob
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"pip install sksimplenet\[plot\]"):
        save_overlay("unused.png", image, anomaly_map)


def test_pixels_never_seen_show_the_bare_image(tmp_path, blob):
    # anomaly_map(X, original_size=True) leaves pixels a centre crop cut away NaN.
    image, anomaly_map = blob
    unseen = anomaly_map.copy()
    unseen[:, :16] = np.nan
    save_overlay(tmp_path / "overlay.png", image, unseen, threshold=0.5)
    rgb = read_rgb(tmp_path / "overlay.png")
    np.testing.assert_allclose(rgb[:, :16], image[:, :16].astype(int), atol=2)  # no heatmap there
    assert np.abs(rgb[:, 16:] - image[:, 16:].astype(int)).mean() > 20  # the heatmap elsewhere


def test_centred_range_puts_the_centre_in_the_middle_and_holds_every_value():
    assert centred_range(0.0, 1.0, 0.3) == pytest.approx((-0.4, 1.0))
    assert centred_range(-2.0, -1.0, 0.5) == pytest.approx((-2.0, 3.0))  # all below: the upper half empty
    low, high = centred_range(0.7, 0.7, 0.7)
    assert low < 0.7 < high and (low + high) / 2 == pytest.approx(0.7)
    with pytest.raises(ValueError, match="finite"):
        centred_range(0.0, np.nan, 0.5)


def test_one_range_gives_equal_values_equal_colours_in_different_overlays(tmp_path, blob):
    image, anomaly_map = blob
    # Two different maps that hold the same value in their top eight rows.
    first = anomaly_map.copy()
    other = np.where(anomaly_map == 1, 3.0, np.linspace(-1, 0, 64)[None, :] * np.ones((64, 1)))
    first[:8] = other[:8] = 0.25
    for name, values in (("first", first), ("other", other)):
        save_overlay(tmp_path / f"{name}.png", image, values, vmin=-1.0, vmax=3.0)
    save_overlay(tmp_path / "own.png", image, first)  # its own range: 0 to 1

    first_rgb, other_rgb = read_rgb(tmp_path / "first.png"), read_rgb(tmp_path / "other.png")
    np.testing.assert_array_equal(first_rgb[:8], other_rgb[:8])
    assert np.abs(first_rgb[8:] - other_rgb[8:]).mean() > 5
    assert np.abs(read_rgb(tmp_path / "own.png")[:8] - first_rgb[:8]).mean() > 5


def test_the_threshold_is_the_middle_colour_of_a_centred_range(tmp_path):
    from matplotlib import colormaps

    threshold = 0.42
    anomaly_map = np.full((16, 16), threshold)
    anomaly_map[0, 0], anomaly_map[-1, -1] = -1.0, 2.0
    vmin, vmax = centred_range(anomaly_map.min(), anomaly_map.max(), threshold)
    gray = np.zeros((16, 16), dtype=np.uint8)

    save_overlay(tmp_path / "mid.png", gray, anomaly_map, vmin=vmin, vmax=vmax, alpha=1.0)

    middle = np.round(np.asarray(colormaps["jet"](0.5)[:3]) * 255)
    np.testing.assert_allclose(read_rgb(tmp_path / "mid.png")[8, 8], middle, atol=2)


def test_a_caption_and_colour_bar_go_below_the_unchanged_image(tmp_path, blob):
    from sksimplenet.plotting import FOOTER_MIN_WIDTH, FOOTER_PIXELS

    image, anomaly_map = blob
    save_overlay(tmp_path / "plain.png", image, anomaly_map, threshold=0.5, vmin=-0.5, vmax=1.5)
    save_overlay(
        tmp_path / "full.png",
        image,
        anomaly_map,
        threshold=0.5,
        vmin=-0.5,
        vmax=1.5,
        colorbar=True,
        caption="score 0.9 > threshold 0.5: anomalous",
    )
    save_overlay(tmp_path / "bar.png", image, anomaly_map, threshold=0.5, vmin=-0.5, vmax=1.5, colorbar=True)

    plain, full, bar = (read_rgb(tmp_path / f"{name}.png") for name in ("plain", "full", "bar"))
    assert full.shape == (64 + FOOTER_PIXELS, FOOTER_MIN_WIDTH, 3)
    np.testing.assert_array_equal(full[:64, :64], plain)  # the image, one pixel per map pixel
    assert (full[:64, 64:] == 255).all()  # white beside it
    caption_rows = slice(64, 64 + 20)
    assert (bar[caption_rows] == 255).all() and (full[caption_rows] < 128).any()  # the text
    # The colour bar runs from blue (vmin) to red (vmax) along the band.
    row = full[64 + FOOTER_PIXELS - 27]
    left, right = row[20], row[FOOTER_MIN_WIDTH - 20]
    assert left[2] > 100 > left[0] and right[0] > 100 > right[2]


def test_plot_grid_takes_one_colour_range(tmp_path):
    images, _, masks = make_synthetic(2, 1, size=48, random_state=1)

    figure = plot_grid(images, masks.astype(np.float32), threshold=0.5, vmin=-2.0, vmax=3.0)

    heatmaps = [ax.images[1] for ax in figure.axes if len(ax.images) == 2]
    assert len(heatmaps) == 3
    assert {(h.norm.vmin, h.norm.vmax) for h in heatmaps} == {(-2.0, 3.0)}
