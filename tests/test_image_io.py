"""Bad image inputs: each fails with a clear error naming the problem and the image.

Every case goes through a fitted detector, as a user meets it; docs/bad-inputs.md lists them.
"""

import numpy as np
import pytest
import torch
from PIL import Image

import sksimplenet.image_io
from sksimplenet.image_io import image_size, load_image


def write_png(path, pixels):
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def good(stripes):
    return list(stripes[0][:2])


def test_empty_X(fitted):
    with pytest.raises(ValueError, match="^X is empty: at least one image is required$"):
        fitted.score_samples([])


def test_X_is_None(fitted):
    with pytest.raises(TypeError, match="^X is None: expected a sequence of images$"):
        fitted.score_samples(None)


def test_None_among_the_images(fitted, good):
    with pytest.raises(TypeError, match="^Image 2 is None$"):
        fitted.score_samples(good + [None])


def test_path_that_does_not_exist(fitted, good, tmp_path):
    paths = [write_png(tmp_path / "a.png", good[0]), tmp_path / "missing.png"]
    with pytest.raises(FileNotFoundError, match=r"^Image 1: file '.*missing\.png' does not exist$"):
        fitted.score_samples(paths)


def test_truncated_image_file(fitted, good, tmp_path):
    data = write_png(tmp_path / "whole.png", good[0]).read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"^Image 1: '.*cut\.png' is truncated or corrupt \(image file is"):
        fitted.score_samples([tmp_path / "whole.png", tmp_path / "cut.png"])


def test_text_file_named_png(fitted, tmp_path):
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(ValueError, match=r"^Image 0: '.*notes\.png' is not a readable image file$"):
        fitted.score_samples([tmp_path / "notes.png"])


def test_sixteen_bit_png_is_scaled_by_65535(fitted, tmp_path):
    pixels = np.array([[0, 32768], [65535, 1000]], dtype=np.uint16)
    path = write_png(tmp_path / "deep.png", pixels)
    with Image.open(path) as image:
        assert image.mode in ("I;16", "I")  # a 16-bit PNG; Pillow before 10 opens it as "I"
    tensor = load_image(path)
    assert tensor.shape == (3, 2, 2) and tensor.dtype == torch.float32
    expected = torch.tensor([[0.0, 32768 / 65535], [1.0, 1000 / 65535]])
    torch.testing.assert_close(tensor, expected.expand(3, 2, 2), rtol=0, atol=1e-7)
    assert tensor[:, 1, 0].tolist() == [1.0, 1.0, 1.0]
    assert np.isfinite(fitted.score_samples([path])).all()


@pytest.mark.parametrize("transparency", [None, 0])
def test_palette_png_takes_its_palette_colours(fitted, tmp_path, transparency):
    image = Image.new("P", (3, 1))
    image.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 51, 102, 153])
    image.putdata([0, 1, 3])
    path = tmp_path / "palette.png"
    image.save(path) if transparency is None else image.save(path, transparency=transparency)
    tensor = load_image(path)
    assert tensor.shape == (3, 1, 3)
    torch.testing.assert_close(tensor[:, 0, 0], torch.tensor([1.0, 0.0, 0.0]))  # alpha, if any, dropped
    torch.testing.assert_close(tensor[:, 0, 1], torch.tensor([0.0, 1.0, 0.0]))
    torch.testing.assert_close(tensor[:, 0, 2], torch.tensor([0.2, 0.4, 0.6]))
    assert np.isfinite(fitted.score_samples([path])).all()


def test_float_image_outside_zero_one(fitted, good):
    too_bright = np.full((96, 96, 3), 0.5)
    too_bright[10, 20] = 2.0
    images = [good[0] / 255.0, too_bright]
    with pytest.raises(ValueError, match=r"^Image 1 has float values in \[0.5, 2\]: float images must lie"):
        fitted.score_samples(images)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_float_image_with_nan_or_inf(fitted, good, bad):
    image = good[0] / 255.0
    image[5, 7, 1] = bad
    with pytest.raises(ValueError, match="^Image 0 contains NaN or infinite values$"):
        fitted.score_samples([image])


def test_single_array_instead_of_a_batch(fitted, good):
    with pytest.raises(ValueError, match=r"^X is a 3-D ndarray; a batch must be 4-D \(n_images, height,"):
        fitted.score_samples(good[0])


def test_image_with_wrong_number_of_dimensions(fitted, good):
    with pytest.raises(ValueError, match=r"^Image 1 has 1 dimensions, shape \(96,\): expected \(height,"):
        fitted.score_samples([good[0], good[1][0, :, 0]])


def test_image_with_five_channels(fitted):
    with pytest.raises(ValueError, match=r"^Image 0 has 5 channels \(shape \(8, 8, 5\)\): expected 1, 3 or"):
        fitted.score_samples([np.zeros((8, 8, 5), np.uint8)])


def test_zero_size_image(fitted, good):
    with pytest.raises(ValueError, match=r"^Image 1 has zero size, shape \(0, 96, 3\)$"):
        fitted.score_samples([good[0], good[1][:0]])


def test_integer_dtype_other_than_uint8_uint16(fitted, good):
    with pytest.raises(ValueError, match="^Image 0 has dtype int32: expected uint8, uint16 or float in"):
        fitted.score_samples([good[0].astype(np.int32)])


def test_mix_of_types_in_one_call(fitted, good, tmp_path):
    images = [good[0], write_png(tmp_path / "b.png", good[1])]
    with pytest.raises(TypeError, match=r"^X mixes image types: image 0 is a NumPy array, image 1 is a path"):
        fitted.score_samples(images)


def test_unsupported_image_type(fitted, good):
    with pytest.raises(TypeError, match="^Image 1 has unsupported type list: expected file paths"):
        fitted.score_samples([good[0], good[1].tolist()])


def test_flipped_and_bfloat16_images_work(fitted, good):
    # A channel-reversed view (BGR → RGB) is not contiguous; bfloat16 has no NumPy dtype.
    flipped = good[0][..., ::-1]
    as_bf16 = torch.from_numpy(np.ascontiguousarray(flipped)).permute(2, 0, 1).to(torch.bfloat16) / 255
    expected = torch.from_numpy(flipped / 255.0).permute(2, 0, 1).float()
    torch.testing.assert_close(load_image(flipped), expected)
    assert load_image(as_bf16).dtype == torch.float32
    np.testing.assert_allclose(fitted.score_samples([flipped]), fitted.score_samples([flipped.copy()]))


@pytest.mark.parametrize(("orientation", "turned"), [(1, False), (3, False), (6, True), (8, True)])
def test_exif_orientation_is_applied(tmp_path, orientation, turned):
    # A 40 x 60 (height x width) photo with a bright left column, stored with an EXIF tag.
    pixels = np.zeros((40, 60, 3), np.uint8)
    pixels[:, :5] = 255
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "photo.jpg"
    Image.fromarray(pixels).save(path, exif=exif, quality=95)

    image = load_image(path)
    expected = (60, 40) if turned else (40, 60)
    assert tuple(image.shape[1:]) == expected
    assert image_size(path) == expected
    # Orientation 6 turns the stored image a quarter clockwise: its left column becomes the top row.
    if orientation == 6:
        assert image[0, :5].mean() > 0.9 and image[0, -5:].mean() < 0.1


def _png_claiming(path, width, height):
    """A valid small PNG whose header is rewritten to claim ``width`` x ``height`` pixels."""
    import struct
    import zlib

    write_png(path, np.zeros((8, 8), np.uint8))
    data = bytearray(path.read_bytes())
    data[16:24] = struct.pack(">II", width, height)  # IHDR: width, height
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


def test_decompression_bomb_is_refused_naming_the_image(fitted, good, tmp_path):
    fine = write_png(tmp_path / "fine.png", good[0])
    bomb = _png_claiming(tmp_path / "bomb.png", 100_000, 100_000)
    with pytest.raises(ValueError, match=r"^Image 1: '.*bomb\.png' claims more pixels than PIL decodes"):
        fitted.score_samples([fine, bomb])


def test_pixel_bound_is_checked_before_decoding_and_settable(fitted, good, tmp_path, monkeypatch):
    large = _png_claiming(tmp_path / "large.png", 9000, 9000)  # 81 M pixels: under PIL's limit
    message = (
        r"^Image 0: '.*large\.png' is 9000 x 9000 pixels, more than sksimplenet\.image_io\.MAX_IMAGE_PIXELS"
    )
    with pytest.raises(ValueError, match=message):
        load_image(large)
    monkeypatch.setattr(sksimplenet.image_io, "MAX_IMAGE_PIXELS", 10 * 10)
    small = write_png(tmp_path / "small.png", np.zeros((12, 12), np.uint8))
    with pytest.raises(ValueError, match=r"is 12 x 12 pixels, more than .* = 100;"):
        load_image(small)


@pytest.mark.parametrize("dtype", [">f8", ">u2", ">f4", np.longdouble])
def test_big_endian_and_long_double_arrays_decode_like_native_ones(fitted, dtype):
    native = np.random.default_rng(0).random((32, 32, 3))
    if np.dtype(dtype).kind == "u":
        native = (native * 65535).astype(np.uint16)
    converted = native.astype(dtype)
    torch.testing.assert_close(
        load_image(converted), load_image(native.astype(converted.dtype.newbyteorder("=")))
    )
    assert np.isfinite(fitted.score_samples([converted])).all()


def test_float_tiff_outside_zero_one_names_the_file(fitted, tmp_path):
    path = tmp_path / "depth.tif"
    Image.fromarray(np.full((16, 16), 3.0, np.float32), mode="F").save(path)
    with pytest.raises(ValueError, match=r"^Image 0: '.*depth\.tif' has float values in \[3, 3\]"):
        load_image(path)


def test_an_image_mode_pil_cannot_convert_is_named(fitted):
    with pytest.raises(ValueError, match=r"^Image 0 has PIL mode 'La', which PIL cannot convert to RGB"):
        fitted.score_samples([Image.new("La", (16, 16))])


@pytest.mark.parametrize(
    "values, scale", [([0, 128, 255], 255.0), ([0, 300, 65535], 65535.0)], ids=["8-bit", "16-bit"]
)
def test_32_bit_integer_image_is_scaled_by_the_range_its_values_need(values, scale):
    eight_bit = Image.fromarray(np.array([values], dtype=np.uint8 if scale == 255 else np.uint16))
    image = eight_bit.convert("I")  # what Image.convert("I") and int32 arrays give
    assert image.mode == "I"
    tensor = load_image(image)
    np.testing.assert_allclose(tensor[0, 0].numpy(), np.array(values) / scale, rtol=1e-6)
    assert tensor.max() == 1.0  # not divided by 65535 into black


def test_32_bit_integer_image_beyond_16_bits_is_refused(tmp_path):
    path = tmp_path / "counts.tif"
    Image.fromarray(np.array([[0, 70000]], dtype=np.int32)).save(path)
    with pytest.raises(
        ValueError, match=r"^Image 0: '.*counts\.tif' is a 32-bit integer image .* \[0, 70000\]"
    ):
        load_image(path)


def test_paths_in_a_dataframe_column_or_an_object_array_score_like_a_list(fitted, good, tmp_path):
    pandas = pytest.importorskip("pandas")
    paths = [str(write_png(tmp_path / f"{i}.png", image)) for i, image in enumerate(good)]
    expected = fitted.score_samples(paths)
    table = pandas.DataFrame({"path": paths})
    np.testing.assert_array_equal(fitted.score_samples(table), expected)
    np.testing.assert_array_equal(fitted.score_samples(table["path"]), expected)
    np.testing.assert_array_equal(fitted.score_samples(np.array(paths, dtype=object)), expected)
    np.testing.assert_array_equal(fitted.score_samples(np.array(paths)), expected)  # dtype <U..
    with pytest.raises(
        TypeError, match=r"^X is a DataFrame with 2 columns \['path', 'label'\]: pass the column"
    ):
        fitted.score_samples(table.assign(label=1))
