"""Every accepted image input → validated RGB float tensors, resized and centre-cropped.

Accepted forms of ``X`` (one form per call):

- a sequence of file paths (``str`` or ``os.PathLike``; also a 1-D NumPy array of them, a
  pandas Series, or a pandas DataFrame with one column of them),
- a sequence of PIL images,
- a sequence of NumPy arrays, each ``(height, width)`` or ``(height, width, channels)``,
- a sequence of tensors, each ``(height, width)`` or ``(channels, height, width)``,
- a NumPy array ``(n_images, height, width, channels)``,
- a tensor ``(n_images, channels, height, width)``.

``channels`` is 1 (grayscale), 3 (RGB) or 4 (RGBA; alpha is dropped). Integer pixels are
``uint8`` (0–255) or ``uint16`` (0–65535), in either byte order; float pixels must be finite
and within [0, 1]. Image files larger than :data:`MAX_IMAGE_PIXELS` are refused from their
header, before decoding.
Grayscale, palette, 16-bit and RGBA files are converted to RGB in [0, 1]; 32-bit integer
images (PIL mode ``I``, which has no fixed range) are read as 8-bit when their values are
within 0–255, as 16-bit within 0–65535, and refused otherwise. Files are turned
upright as their EXIF orientation tag says (a portrait photo is scored standing up), and
their size is reported after that turn.
"""

from __future__ import annotations

import numbers
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError
from torchvision.transforms.v2 import functional as TF

_CHANNELS = (1, 3, 4)
#: Largest image file, in pixels, that is decoded (about 8000 x 8000; 768 MB as float32 RGB).
#: Larger files are refused before decoding, naming the image: a small compressed file can
#: claim a huge size. Set ``sksimplenet.image_io.MAX_IMAGE_PIXELS`` to change it.
MAX_IMAGE_PIXELS = 64_000_000
_EXIF_ORIENTATION = 0x0112
_QUARTER_TURNS = (5, 6, 7, 8)  # orientations that swap width and height


def _kind(item, index: int) -> str:
    if isinstance(item, (str, os.PathLike)):
        return "path"
    if isinstance(item, Image.Image):
        return "PIL image"
    if isinstance(item, np.ndarray):
        return "NumPy array"
    if isinstance(item, torch.Tensor):
        return "tensor"
    raise TypeError(
        f"Image {index} has unsupported type {type(item).__name__}: expected file paths, PIL images, "
        "NumPy arrays or tensors"
    )


def as_image_list(X) -> list:
    """Validate the container ``X`` and return its images as a list.

    Arrays and tensors are checked completely here (shape, dtype, value range); files are
    checked to exist, and are decoded later by :func:`load_image`.

    Raises
    ------
    TypeError
        ``X`` is None, a single path, or mixes several kinds of image.
    ValueError
        ``X`` is empty, or an image has a bad shape, dtype or value.
    FileNotFoundError
        A path does not exist.
    """
    if X is None:
        raise TypeError("X is None: expected a sequence of images")
    if isinstance(X, (str, os.PathLike)):
        raise TypeError(f"X is a single path ({str(X)!r}): pass a list of image paths")
    X = _paths_from_table(X)
    if isinstance(X, np.ndarray) and X.dtype.kind in "OUS":  # an array of paths (or objects)
        if X.ndim == 2 and X.shape[1] == 1:
            X = X[:, 0]
        if X.ndim != 1:
            raise ValueError(
                f"X is a {X.ndim}-D array of {X.dtype} with shape {X.shape}: pass one path per image"
            )
        X = X.tolist()
    if isinstance(X, (np.ndarray, torch.Tensor)):
        if X.ndim != 4:
            layout = (
                "(n_images, height, width, channels)"
                if isinstance(X, np.ndarray)
                else ("(n_images, channels, height, width)")
            )
            raise ValueError(
                f"X is a {X.ndim}-D {type(X).__name__}; a batch must be 4-D {layout}, "
                "or pass a list of images"
            )
        if isinstance(X, torch.Tensor):
            images = list(X.unbind(0))
        else:
            images = list(X)
    elif isinstance(X, Image.Image):
        raise TypeError("X is a single PIL image: pass a list of images")
    else:
        try:
            images = list(X)
        except TypeError:
            raise TypeError(f"X must be a sequence of images, got {type(X).__name__}") from None
    if len(images) == 0:
        raise ValueError("X is empty: at least one image is required")

    first_kind = None
    for index, item in enumerate(images):
        if item is None:
            raise TypeError(f"Image {index} is None")
        kind = _kind(item, index)
        if first_kind is None:
            first_kind = kind
        elif kind != first_kind:
            raise TypeError(
                f"X mixes image types: image 0 is a {first_kind}, image {index} is a {kind}; "
                "use one type per call"
            )
        _check_item(item, index)
    return images


def _paths_from_table(X):
    """The column of a one-column pandas DataFrame (duck-typed: pandas is not required)."""
    if not (hasattr(X, "columns") and hasattr(X, "iloc")):
        return X
    if len(X.columns) != 1:
        raise TypeError(
            f"X is a DataFrame with {len(X.columns)} columns {list(X.columns)[:5]}: pass the column "
            "of image paths, e.g. X=df['path']"
        )
    return X.iloc[:, 0].to_numpy(dtype=object)


def _check_item(item, index: int) -> None:
    if isinstance(item, (str, os.PathLike)):
        if not Path(item).exists():
            raise FileNotFoundError(f"Image {index}: file {str(item)!r} does not exist")
        if not Path(item).is_file():
            raise ValueError(f"Image {index}: {str(item)!r} is not a file")
        return
    if isinstance(item, Image.Image):
        if item.width == 0 or item.height == 0:
            raise ValueError(f"Image {index} has zero size {item.size}")
        return
    channel_axis = -1 if isinstance(item, np.ndarray) else 0
    if item.ndim not in (2, 3):
        raise ValueError(
            f"Image {index} has {item.ndim} dimensions, shape {tuple(item.shape)}: expected "
            "(height, width) or "
            + ("(height, width, channels)" if channel_axis == -1 else "(channels, height, width)")
        )
    if item.ndim == 3 and item.shape[channel_axis] not in _CHANNELS:
        raise ValueError(
            f"Image {index} has {item.shape[channel_axis]} channels (shape {tuple(item.shape)}): "
            "expected 1, 3 or 4"
        )
    if 0 in tuple(item.shape):
        raise ValueError(f"Image {index} has zero size, shape {tuple(item.shape)}")
    _check_pixels(item, index)


def _native(array: np.ndarray) -> np.ndarray:
    """``array`` in the machine's byte order, and floats wider than float64 as float64."""
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    if array.dtype.kind == "f" and array.dtype.itemsize > 8:
        array = array.astype(np.float64)
    return array


def _check_pixels(pixels, index: int, label: str | None = None) -> None:
    """Refuse pixel values outside the documented forms; ``label`` names the image (default
    ``Image <index>``; files add their path)."""
    label = label or f"Image {index}"
    if isinstance(pixels, torch.Tensor):
        if pixels.is_floating_point() and pixels.dtype not in (torch.float16, torch.float32, torch.float64):
            pixels = pixels.float()  # bfloat16 and float8 have no NumPy counterpart
        pixels = pixels.detach().cpu().numpy()
    array = _native(pixels)
    if array.dtype in (np.uint8, np.uint16):
        return
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{label} has dtype {array.dtype}: expected uint8, uint16 or float in [0, 1]")
    if not np.isfinite(array).all():
        raise ValueError(f"{label} contains NaN or infinite values")
    low, high = float(array.min()), float(array.max())
    if low < 0.0 or high > 1.0:
        raise ValueError(
            f"{label} has float values in [{low:g}, {high:g}]: float images must lie in "
            "[0, 1] (divide uint8 data by 255)"
        )


def _pil_to_array(image: Image.Image, label: str) -> np.ndarray:
    if image.mode in ("I;16", "I;16B", "I;16L"):
        return np.asarray(image, dtype=np.float32) / 65535.0
    if image.mode == "I":
        return _scaled_32_bit(np.asarray(image), label)
    if image.mode == "F":
        return np.asarray(image, dtype=np.float32)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    try:
        return np.asarray(image.convert("RGB"))
    except ValueError:
        raise ValueError(
            f"{label} has PIL mode {image.mode!r}, which PIL cannot convert to RGB: save it as "
            "L, LA, RGB or RGBA"
        ) from None


def _scaled_32_bit(pixels: np.ndarray, label: str) -> np.ndarray:
    """Mode-``I`` pixels (32-bit integers, a mode with no fixed range) in [0, 1].

    Such images come from ``Image.convert("I")`` of 8-bit images, from int32 arrays and from
    32-bit TIFF files: they are read as 8-bit when every value is within 0-255, as 16-bit
    when within 0-65535, and refused otherwise.
    """
    low, high = int(pixels.min()), int(pixels.max())
    if low < 0 or high > 65535:
        raise ValueError(
            f"{label} is a 32-bit integer image (PIL mode 'I') with values in [{low}, {high}]: "
            "only 0-255 (8-bit) or 0-65535 (16-bit) values have a known range. Scale it to uint8, "
            "uint16 or float in [0, 1] first."
        )
    return pixels.astype(np.float32) / (255.0 if high <= 255 else 65535.0)


def _open_file(path, index: int) -> Image.Image:
    try:
        with warnings.catch_warnings():
            # This module's own bound (MAX_IMAGE_PIXELS) replaces PIL's warning.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                _check_pixel_count(image.width, image.height, path, index)
                image.load()
    except Image.DecompressionBombError:
        raise ValueError(
            f"Image {index}: {str(path)!r} claims more pixels than PIL decodes "
            f"(Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS})"
        ) from None
    except UnidentifiedImageError:
        raise ValueError(f"Image {index}: {str(path)!r} is not a readable image file") from None
    except (OSError, SyntaxError) as error:
        raise ValueError(f"Image {index}: {str(path)!r} is truncated or corrupt ({error})") from None
    if image.width == 0 or image.height == 0:
        raise ValueError(f"Image {index}: {str(path)!r} has zero size")
    # A camera's EXIF orientation says how the stored pixels are to be turned for viewing.
    return ImageOps.exif_transpose(image)


def _check_pixel_count(width: int, height: int, path, index: int) -> None:
    if width * height > MAX_IMAGE_PIXELS:
        raise ValueError(
            f"Image {index}: {str(path)!r} is {width} x {height} pixels, more than "
            f"sksimplenet.image_io.MAX_IMAGE_PIXELS = {MAX_IMAGE_PIXELS}; raise that bound if you "
            "trust the file and have the memory (about 12 bytes per pixel)"
        )


def load_image(item, index: int = 0) -> torch.Tensor:
    """Decode one validated image to an RGB tensor ``(3, height, width)``, float32 in [0, 1].

    ``uint8`` pixels are divided by 255, ``uint16`` (and 16-bit files) by 65535, float
    pixels are kept; grayscale is repeated over the three channels, alpha is dropped and
    palette images take their palette's colours.

    Raises
    ------
    ValueError
        A file is not a readable image, is truncated or corrupt, has zero size, or decodes
        to float values outside [0, 1]. The message names ``index`` and the path.
    """
    label = f"Image {index}"
    if isinstance(item, (str, os.PathLike)):
        label = f"Image {index}: {str(item)!r}"
        item = _open_file(item, index)
    if isinstance(item, Image.Image):
        array = _pil_to_array(item, label)
        _check_pixels(array, index, label)
        item = array
    if isinstance(item, np.ndarray):
        item = _native(item)
        # A copy when the array is read-only or not C-contiguous (flipped, transposed, sliced).
        contiguous = item.flags.c_contiguous and item.flags.writeable
        tensor = torch.from_numpy(item if contiguous else np.array(item, order="C"))
        tensor = tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1)
    else:
        tensor = item.detach().cpu()
        tensor = tensor.unsqueeze(0) if tensor.ndim == 2 else tensor
    if tensor.dtype == torch.uint8:
        tensor = tensor.float() / 255.0
    elif tensor.dtype == torch.uint16:
        tensor = tensor.to(torch.int32).float() / 65535.0
    else:
        tensor = tensor.float()
    if tensor.shape[0] == 1:
        tensor = tensor.expand(3, -1, -1)
    elif tensor.shape[0] == 4:
        tensor = tensor[:3]
    return tensor.contiguous()


def image_size(item) -> tuple[int, int]:
    """``(height, width)`` of one validated image, read from the header for files."""
    if isinstance(item, (str, os.PathLike)):
        with Image.open(item) as image:
            turned = image.getexif().get(_EXIF_ORIENTATION) in _QUARTER_TURNS
            return (image.width, image.height) if turned else (image.height, image.width)
    if isinstance(item, Image.Image):
        return item.height, item.width
    if isinstance(item, np.ndarray):
        return int(item.shape[0]), int(item.shape[1])
    return tuple(int(s) for s in item.shape[-2:])


def _int_list(size: int | Sequence[int]) -> list[int]:
    """An int or a sequence of ints (NumPy integers included) as a list of Python ints."""
    return [int(size)] if isinstance(size, numbers.Integral) else [int(v) for v in size]


def size_pair(size: int | Sequence[int]) -> tuple[int, int]:
    """``(height, width)`` from an int (a square) or a 1- or 2-sequence."""
    values = _int_list(size)
    return (values[0], values[0]) if len(values) == 1 else (values[0], values[1])


def resized_size(size: tuple[int, int], resize: int | Sequence[int] | None) -> tuple[int, int]:
    """``(height, width)`` of an image of ``size`` after :func:`preprocess`'s resize step.

    An int (or a 1-sequence) sets the shorter side and keeps the aspect ratio, with
    torchvision's rounding; ``(height, width)`` sets both; None keeps ``size``.
    """
    height, width = size
    if resize is None:
        return height, width
    values = _int_list(resize)
    if len(values) == 1:
        short = values[0]
        if height <= width:
            return short, int(short * width / height)
        return int(short * height / width), short
    return size_pair(resize)


def crop_box(
    size: tuple[int, int], resize: int | Sequence[int] | None, crop_size: int | Sequence[int] | None
) -> tuple[float, float, float, float]:
    """The part of an image of ``size`` that the network sees, in the image's own pixels.

    The inverse of :func:`preprocess`'s geometry: the centre crop's edges mapped back
    through the resize.

    Returns
    -------
    top, left, bottom, right : float
        Edges in original pixel coordinates; ``(0, 0, height, width)`` when nothing is cut.
    """
    height, width = size
    resized_h, resized_w = resized_size(size, resize)
    if crop_size is None:
        return 0.0, 0.0, float(height), float(width)
    crop_h, crop_w = size_pair(crop_size)
    crop_h, crop_w = min(crop_h, resized_h), min(crop_w, resized_w)
    # torchvision's centre crop: top = round((H - h) / 2).
    top, left = int(round((resized_h - crop_h) / 2.0)), int(round((resized_w - crop_w) / 2.0))
    scale_y, scale_x = height / resized_h, width / resized_w
    return top * scale_y, left * scale_x, (top + crop_h) * scale_y, (left + crop_w) * scale_x


def to_original_size(
    anomaly_map: torch.Tensor,
    size: tuple[int, int],
    resize: int | Sequence[int] | None,
    crop_size: int | Sequence[int] | None,
) -> torch.Tensor:
    """A map at the network's resolution put back onto its image's own pixel grid.

    The inverse of :func:`preprocess` for maps: the map is resized bilinearly onto
    :func:`crop_box`'s box; pixels the centre crop cut away were never seen and are NaN.

    Parameters
    ----------
    anomaly_map : Tensor, shape (height, width)
        At the network's input resolution.
    size : (height, width)
        The image's original size.
    resize, crop_size
        As given to :func:`preprocess`.

    Returns
    -------
    Tensor, shape ``size``
    """
    top, left, bottom, right = (int(round(v)) for v in crop_box(size, resize, crop_size))
    seen = F.interpolate(
        anomaly_map[None, None], size=(bottom - top, right - left), mode="bilinear", align_corners=False
    )[0, 0]
    if (top, left, bottom, right) == (0, 0, *size):
        return seen
    framed = torch.full(size, float("nan"), dtype=seen.dtype)
    framed[top:bottom, left:right] = seen
    return framed


def preprocess(
    image: torch.Tensor, resize: int | Sequence[int] | None = 256, crop_size: int | Sequence[int] | None = 224
) -> torch.Tensor:
    """Resize then centre-crop one ``(3, H, W)`` image, as the network sees it.

    ``resize`` as an int scales the shorter side to it (keeping the aspect ratio); as
    ``(height, width)`` it sets both. ``crop_size`` None keeps the whole resized image.
    :func:`crop_box` maps the result back onto the image.
    """
    if resize is not None:
        image = TF.resize(image, _int_list(resize), antialias=True)
    if crop_size is not None:
        image = TF.center_crop(image, _int_list(crop_size))
    return image


class ImageDataset(torch.utils.data.Dataset):
    """Images decoded and preprocessed on access, so DataLoader workers can run it in parallel.

    Items are ``(3, crop_h, crop_w)`` float32 tensors in [0, 1]. ``positions``, when given,
    are the images' indices in the user's input, used in error messages (default: their
    indices in ``images``).
    """

    def __init__(self, images: list, resize=256, crop_size=224, positions: Sequence[int] | None = None):
        self.images = images
        self.resize = resize
        self.crop_size = crop_size
        self.positions = positions

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor | DecodeFailure:
        position = index if self.positions is None else self.positions[index]
        try:
            return preprocess(load_image(self.images[index], position), self.resize, self.crop_size)
        except (ValueError, TypeError, OSError) as error:
            if torch.utils.data.get_worker_info() is None:
                raise
            # In a DataLoader worker a raised error reaches the user wrapped in the worker's
            # traceback; returned, it is raised as it is by the main process (raise_failures).
            return DecodeFailure(error)


class DecodeFailure:
    """An error met while decoding an image in a worker process, carried to the main process."""

    def __init__(self, error: Exception):
        self.error = error


def raise_failures(items: list) -> None:
    """Raise the first :class:`DecodeFailure` among a batch's items, as the error it carries."""
    for item in items:
        if isinstance(item, DecodeFailure):
            raise item.error


# ---------------------------------------------------------------------- defect masks
#: Largest relative difference between a mask's aspect ratio and its image's for the mask to
#: be resized onto the image (a mask saved at another resolution); beyond it the mask belongs
#: to another image or another crop, and is refused.
MASK_ASPECT_TOLERANCE = 0.02


def load_mask(mask, index: int = 0, image_shape: tuple[int, int] | None = None) -> np.ndarray:
    """One ground-truth mask as a boolean array on its image's pixel grid (True = defect).

    Parameters
    ----------
    mask : path, PIL image, ndarray or tensor
        A mask image file, or a 2-D array ``(height, width)``; nonzero pixels are defect.
    index : int
        The image's position in the caller's input, for error messages.
    image_shape : (height, width), optional
        The image's size. A mask of another size with the same aspect ratio (within
        :data:`MASK_ASPECT_TOLERANCE`) is resized onto it (nearest neighbour); one of
        another aspect ratio is refused. None keeps the mask's own size.

    Returns
    -------
    ndarray of bool, shape (height, width)

    Raises
    ------
    FileNotFoundError
        ``mask`` is a path to a file that does not exist.
    ValueError
        The file is not a readable image, the array is not 2-D, or its aspect ratio differs
        from the image's. The message names ``index`` (and the file).
    """
    label = f"The mask of image {index}"
    if isinstance(mask, (str, os.PathLike)):
        label = f"The mask of image {index} ({str(mask)!r})"
        if not os.path.isfile(mask):
            raise FileNotFoundError(f"{label} does not exist")
        try:
            with Image.open(mask) as opened:
                mask = ImageOps.exif_transpose(opened).convert("L")
        except (UnidentifiedImageError, OSError, SyntaxError) as error:
            raise ValueError(f"{label} is not a readable image file ({error})") from None
    if isinstance(mask, Image.Image):
        mask = np.asarray(mask.convert("L"))
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    try:
        mask = np.asarray(mask)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{label} is not an array ({error})") from None
    if mask.ndim != 2 or mask.dtype.kind not in "biuf":
        raise ValueError(f"{label} must be a 2-D (height, width) array, got shape {mask.shape} {mask.dtype}")
    defect = mask != 0
    if image_shape is None or defect.shape == tuple(image_shape):
        return defect
    (mask_h, mask_w), (image_h, image_w) = defect.shape, image_shape
    if abs((mask_h / mask_w) / (image_h / image_w) - 1.0) > MASK_ASPECT_TOLERANCE:
        raise ValueError(
            f"{label} is {mask_h} x {mask_w} pixels (height x width) but its image is {image_h} x "
            f"{image_w}: another aspect ratio, so it cannot be the image's mask"
        )
    resized = Image.fromarray(defect).resize((image_w, image_h), Image.Resampling.NEAREST)
    return np.asarray(resized, dtype=bool)


def mask_coverage(mask: np.ndarray, resize, crop_size) -> torch.Tensor:
    """A boolean mask ``(height, width)`` preprocessed like its image: the share of each pixel of
    the network's input that is defect, a float32 tensor ``(crop_h, crop_w)`` in [0, 1].

    :func:`preprocess`'s bilinear, antialiased resize and centre crop.
    """
    tensor = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None]
    return preprocess(tensor, resize, crop_size)[0].clamp_(0.0, 1.0)
