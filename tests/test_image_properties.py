"""Property tests: any array or tensor either becomes the documented RGB image or is refused.

The documented conversion (see :mod:`sksimplenet.image_io`): a ``(3, H, W)`` float32 tensor in
[0, 1]; ``uint8`` divided by 255, ``uint16`` by 65535, floats kept (they must be finite and in
[0, 1]); grayscale repeated over three channels, alpha dropped. Anything else — another
dtype, another number of dimensions or channels, an empty image — raises ``ValueError``;
something that is not an image at all raises ``TypeError``.
"""

import numpy as np
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from sksimplenet.image_io import as_image_list, load_image

DTYPES = [np.uint8, np.uint16, np.float32, np.float64, np.int32, np.bool_]
SETTINGS = settings(
    max_examples=50, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
BATCH_SHAPES = st.tuples(st.integers(1, 3), st.integers(1, 6), st.integers(1, 6), st.sampled_from([1, 3, 4]))


@st.composite
def images(draw):
    """An array or tensor of random shape (0 to 4 dimensions, 0 to 5 channels) and dtype."""
    is_tensor = draw(st.booleans())
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    height, width = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    layout = draw(st.sampled_from(["grayscale", "channels", "any"]))
    if layout == "grayscale":
        shape = (height, width)
    elif layout == "channels":
        channels = draw(st.integers(0, 5))
        shape = (channels, height, width) if is_tensor else (height, width, channels)
    else:
        shape = tuple(draw(st.lists(st.integers(0, 5), min_size=0, max_size=4)))
    if dtype.kind == "f":
        width = 32 if dtype == np.float32 else 64
        if draw(st.booleans()):  # mostly-valid pixels...
            elements = st.floats(0, 1, width=width)
        else:  # ... or anything, NaN and infinities included
            elements = st.floats(width=width, allow_nan=True, allow_infinity=True)
    else:
        elements = None
    array = draw(hnp.arrays(dtype, shape, elements=elements))
    return torch.from_numpy(array) if is_tensor else array


def expected_rgb(image):
    """The documented conversion, written out with NumPy; None where an error is documented."""
    is_tensor = isinstance(image, torch.Tensor)
    array = image.numpy() if is_tensor else image
    if array.ndim not in (2, 3) or 0 in array.shape:
        return None
    if array.ndim == 2:
        array = array[None] if is_tensor else array[..., None]
    channels_first = array if is_tensor else np.moveaxis(array, -1, 0)
    if channels_first.shape[0] not in (1, 3, 4):
        return None
    if array.dtype == np.uint8:
        values = channels_first / 255.0
    elif array.dtype == np.uint16:
        values = channels_first / 65535.0
    elif array.dtype.kind == "f":
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
            return None
        values = channels_first.astype(np.float64)
    else:
        return None
    return np.repeat(values, 3, axis=0) if values.shape[0] == 1 else values[:3]


@SETTINGS
@given(images())
def test_any_array_becomes_the_documented_rgb_image_or_raises(image):
    expected = expected_rgb(image)
    try:
        result = load_image(as_image_list([image])[0])
    except ValueError:
        event("refused")
        assert expected is None, "a valid image was refused"
        return
    event("accepted")
    assert expected is not None, "an invalid image was accepted"
    assert result.dtype == torch.float32 and result.shape == (3, *expected.shape[1:])
    assert float(result.min()) >= 0.0 and float(result.max()) <= 1.0
    np.testing.assert_allclose(result.numpy(), expected, rtol=1e-6, atol=1e-7)


@SETTINGS
@given(hnp.arrays(np.uint8, BATCH_SHAPES))
def test_a_batch_converts_like_its_images_one_by_one(batch):
    as_list = [load_image(image) for image in as_image_list(list(batch))]
    as_array = [load_image(image) for image in as_image_list(batch)]
    as_tensor = [load_image(image) for image in as_image_list(torch.from_numpy(batch).permute(0, 3, 1, 2))]
    for one, two, three in zip(as_list, as_array, as_tensor):
        torch.testing.assert_close(one, two, rtol=0, atol=0)
        torch.testing.assert_close(one, three, rtol=0, atol=0)


@SETTINGS
@given(st.one_of(st.integers(), st.text(max_size=3).map(list), st.lists(st.floats(), min_size=1, max_size=3)))
def test_things_that_are_not_images_raise_type_error(item):
    try:
        as_image_list([item])
    except TypeError as error:
        assert "Image 0" in str(error)
    else:
        raise AssertionError(f"{item!r} was accepted as an image")
