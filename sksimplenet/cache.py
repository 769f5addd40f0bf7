"""The training feature cache: one preallocated tensor, in memory, on the GPU or on disk.

``fit`` runs the frozen backbone once over the training images and keeps their patch
features, ``(n_images, h, w, feature_dim)``, for all epochs. Each batch of features is
written into its slice of one tensor allocated up front, so the peak is the cache itself
(concatenating a list of chunks would briefly need twice as much).

Size per image: ``h * w * feature_dim * bytes per value`` with ``h = H / 8`` and
``w = W / 8`` for the default layers. At 224 × 224 pixels in float16:

=====================  ============  ==============  ===============
backbone               patch grid    feature_dim     bytes per image
=====================  ============  ==============  ===============
wide_resnet50_2        28 × 28       1536            2.41 MB
efficientnet_lite0     28 × 28       152             0.24 MB
=====================  ============  ==============  ===============

Where the cache lives:

- ``cache_dir`` given: a temporary file in that folder, memory-mapped. The operating system
  keeps in RAM what fits and reads the rest from disk; the file is deleted when ``fit``
  ends (on POSIX systems it is unlinked at once and vanishes with the mapping, even if the
  process dies). Disk space is reserved up front, so a full disk fails early and cleanly.
- training on CUDA with no ``cache_dir``: on the GPU when the cache takes at most half of
  its free memory, so that training steps copy nothing from the host; otherwise in RAM.
- otherwise: in RAM. A cache larger than the memory available fails before training
  with a :class:`MemoryError` that names its size and suggests ``cache_dir``.
"""

from __future__ import annotations

import errno
import math
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import torch

_GPU_SHARE = 0.5


def cache_nbytes(shape: tuple[int, ...], dtype: torch.dtype) -> int:
    """Bytes of a cache of ``shape`` ``(n_images, h, w, feature_dim)`` and ``dtype``."""
    return math.prod(int(v) for v in shape) * torch.empty((), dtype=dtype).element_size()


def available_memory() -> int | None:
    """Bytes of RAM available to new allocations (Linux ``MemAvailable``), or None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as file:
            for line in file:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _gib(nbytes: int) -> str:
    return f"{nbytes / 2**30:.2f} GiB"


class FeatureCache:
    """A preallocated ``(n_images, h, w, feature_dim)`` tensor, filled batch by batch.

    Parameters
    ----------
    n_images : int
        Number of images the cache holds.
    dtype : torch.dtype
        Storage type of the features.
    device : torch.device
        Device the features are computed on: with CUDA the cache stays on the GPU when it
        fits (see the module's description).
    directory : str, path or None
        If given, the cache is a memory-mapped temporary file in this folder.

    Attributes
    ----------
    tensor : Tensor or None
        The cache, allocated by the first :meth:`write` (which fixes ``h``, ``w`` and
        ``feature_dim``); None after :meth:`close`.
    location : str
        ``"memory"``, ``"gpu"`` or ``"disk"`` once allocated.
    """

    def __init__(self, n_images: int, dtype: torch.dtype, device: torch.device, directory=None):
        self.n_images = int(n_images)
        self.dtype = dtype
        self.device = torch.device(device)
        self.directory = None if directory is None else Path(directory)
        self.tensor: torch.Tensor | None = None
        self.location = ""
        self._path: Path | None = None

    def _allocate(self, item_shape: tuple[int, ...]) -> None:
        shape = (self.n_images, *item_shape)
        nbytes = cache_nbytes(shape, self.dtype)
        if self.directory is not None:
            self.tensor = self._allocate_file(shape, nbytes)
            self.location = "disk"
            return
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            if nbytes <= _GPU_SHARE * free:
                self.tensor = torch.empty(shape, dtype=self.dtype, device=self.device)
                self.location = "gpu"
                return
        available = available_memory()
        if available is not None and nbytes > available:
            raise MemoryError(
                f"The training feature cache needs {_gib(nbytes)} ({self.n_images} images × "
                f"{_gib(nbytes // self.n_images)} each) but only {_gib(available)} of memory is "
                "available. Pass cache_dir='<a folder on a disk with enough space>' to keep it "
                "on disk, memory-mapped; or lower feature_dim, or train on fewer images."
            )
        self.tensor = torch.empty(shape, dtype=self.dtype)
        self.location = "memory"

    def _allocate_file(self, shape: tuple[int, ...], nbytes: int) -> torch.Tensor:
        directory = self.directory
        if not directory.is_dir():
            raise FileNotFoundError(f"cache_dir {str(directory)!r} is not an existing folder")
        free = shutil.disk_usage(directory).free
        if nbytes > free:
            raise OSError(
                f"The training feature cache needs {_gib(nbytes)} on disk but {str(directory)!r} "
                f"has {_gib(free)} free"
            )
        handle, name = tempfile.mkstemp(prefix="sksimplenet-features-", suffix=".bin", dir=directory)
        self._path = Path(name)
        try:
            # Reserve the blocks now: writing into a sparse mapping on a full disk would kill
            # the process (SIGBUS) instead of raising.
            reserved = False
            if hasattr(os, "posix_fallocate"):
                try:
                    os.posix_fallocate(handle, 0, nbytes)
                    reserved = True
                except OSError as error:
                    if error.errno == errno.ENOSPC:
                        raise
            if not reserved:  # no such call here, or the file system does not support it
                os.ftruncate(handle, nbytes)
        except BaseException:
            os.close(handle)
            self._remove_file()
            raise
        os.close(handle)
        try:
            flat = torch.from_file(str(self._path), shared=True, size=math.prod(shape), dtype=self.dtype)
        except BaseException:
            self._remove_file()
            raise
        try:
            # The mapping keeps the data; the name is not needed any more (POSIX only).
            self._path.unlink()
            self._path = None
        except OSError:
            pass
        return flat.view(shape)

    def write(self, start: int, features: torch.Tensor) -> None:
        """Store ``features`` ``(batch, h, w, feature_dim)`` as images ``start …``."""
        if self.tensor is None:
            self._allocate(tuple(features.shape[1:]))
        if features.device != self.tensor.device:
            features = features.to(self.dtype)  # convert before the transfer: fewer bytes
        self.tensor[start : start + len(features)].copy_(features)

    def _remove_file(self) -> None:
        if self._path is not None:
            try:
                self._path.unlink(missing_ok=True)
            except OSError as error:  # still mapped elsewhere (Windows)
                warnings.warn(
                    f"Could not delete the feature cache file {str(self._path)!r}: {error}", stacklevel=3
                )
            self._path = None

    def close(self) -> None:
        """Release the cache and delete its file, if any."""
        self.tensor = None
        self._remove_file()

    def __enter__(self) -> FeatureCache:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
