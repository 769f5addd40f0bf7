"""Images through a model in batches: the loader, and scoring from images or cached features.

Plain functions over a :class:`~sksimplenet.model.SimpleNetModel`; the estimator passes its
settings as values (these functions have no defaults of their own for them).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import joblib
import numpy as np
import torch

from .image_io import DecodeFailure, ImageDataset, raise_failures
from .model import SimpleNetModel

#: Images per network pass when ``inference_batch_size`` is None: a GPU needs larger batches.
DEFAULT_BATCH = {"cpu": 16, "cuda": 64}


def batch_size_for(setting: int | None, device: torch.device) -> int:
    """Images per network pass: ``setting``, or :data:`DEFAULT_BATCH` for the device."""
    if setting is not None:
        return int(setting)
    return DEFAULT_BATCH["cuda"] if device.type == "cuda" else DEFAULT_BATCH["cpu"]


def _collate(images: list[torch.Tensor]):
    """One ``(n, 3, H, W)`` batch when the images have one size (so that the loader pins the
    batch itself for an asynchronous copy to the GPU), else the list of images (decode
    failures from workers included, for the main process to raise)."""
    if any(isinstance(image, DecodeFailure) for image in images):
        return images
    if all(image.shape == images[0].shape for image in images):
        return torch.stack(images)
    return images


def to_host(tensor: torch.Tensor) -> torch.Tensor:
    """A float32 copy on the host; from a GPU into pinned memory without waiting for it."""
    if tensor.device.type == "cpu":
        return tensor.float()
    host = torch.empty(tensor.shape, dtype=torch.float32, pin_memory=True)
    return host.copy_(tensor, non_blocking=True)


def image_batches(
    images: list,
    *,
    resize,
    crop_size,
    batch_size: int,
    device: torch.device,
    n_jobs: int | None,
    progress: bool,
    desc: str,
    positions: Sequence[int] | None = None,
) -> Iterator[torch.Tensor]:
    """Preprocessed image batches ``(n, 3, H, W)`` on ``device``, in order.

    Consecutive images of one size form a batch; an image of another size goes alone.
    Files are decoded by ``n_jobs`` worker processes (None or 1: in this process).

    Parameters
    ----------
    images : list
        Validated images (:func:`sksimplenet.image_io.as_image_list`).
    resize, crop_size
        As :func:`sksimplenet.image_io.preprocess` takes them.
    positions : sequence of int, optional
        The images' indices in the user's input, for error messages.
    """
    dataset = ImageDataset(images, resize, crop_size, positions)
    files = isinstance(images[0], (str, bytes)) or hasattr(images[0], "__fspath__")
    workers = joblib.effective_n_jobs(n_jobs) if files and n_jobs not in (None, 1) else 0
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=_collate,
        pin_memory=device.type == "cuda",
    )
    if progress:
        from tqdm.auto import tqdm

        loader = tqdm(loader, desc=desc, unit="batch")
    for batch in loader:
        if isinstance(batch, torch.Tensor):
            yield batch.to(device, non_blocking=True)
        else:
            raise_failures(batch)
            for image in batch:
                yield image.unsqueeze(0).to(device, non_blocking=True)


@torch.inference_mode()
def score_images(
    model: SimpleNetModel, batches: Iterator[torch.Tensor], keep_maps: bool
) -> tuple[list[torch.Tensor], np.ndarray]:
    """Anomaly maps (when ``keep_maps``) and image anomaly scores of image batches, one pass.

    Returns
    -------
    maps : list of Tensor, each (height, width), float32 on the host; empty without ``keep_maps``
    scores : ndarray of shape (n_images,), higher = more anomalous
    """
    maps, scores, device = [], [], None
    for batch in batches:
        device = batch.device
        batch_maps, batch_scores = model(batch)
        if keep_maps:
            maps.extend(to_host(batch_maps).unbind(0))
        scores.append(to_host(batch_scores))
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)  # the copies to the host above do not wait
    return maps, torch.cat(scores).numpy()


@torch.inference_mode()
def scores_from_features(
    model: SimpleNetModel, features: torch.Tensor, size: tuple[int, int], batch_size: int, device
) -> np.ndarray:
    """Image anomaly scores ``(n_images,)`` from cached patch features ``(n_images, h, w, c)``,
    as :func:`score_images` computes them from the images."""
    scores = []
    for start in range(0, len(features), batch_size):
        batch = features[start : start + batch_size].to(device, non_blocking=True)
        scores.append(model.maps_and_scores(model.patch_scores(batch), size)[1])
    return torch.cat(scores).float().cpu().numpy()
