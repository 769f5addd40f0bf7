"""The training set of one fit: images, labels and masks → the cached parts training uses.

``fit`` runs the frozen backbone once over every image it is given and keeps the patch
features in one :class:`~sksimplenet.cache.FeatureCache`, in this order of rows:

1. the normal images trained on,
2. the normal images held out (criterion per epoch, threshold),
3. the images labelled anomalous: those with a defect mask first, then those without.

Beside the cache it keeps the features of synthetic defects (:mod:`sksimplenet.synthesis`)
and, from the images labelled anomalous, the features training uses as real defects:

- **with a mask**: the positions whose cell of the feature grid lies more than
  :data:`MASK_COVERAGE` inside the mask (the mask preprocessed like its image);
- **without a mask**: the images themselves, for multiple-instance learning
  (:class:`~sksimplenet.training.WeakAnomalies`): each step takes the least normal
  positions of a few of them. With ``masked_as_images`` the images with a mask are taken
  this way too, beside their masked positions (``labelled_anomalies="learn_both"``).

Masks are read and checked here, before any feature is computed, so that bad input fails
fast and names the image (:func:`read_masks`).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .cache import FeatureCache
from .image_io import image_size, load_mask, mask_coverage
from .model import SimpleNetModel
from .synthesis import DefectFeatures
from .training import WeakAnomalies, held_out_split

#: A feature position of a masked anomalous image trains as a defect when more than this share
#: of its cell of the feature grid is inside the mask (the patch features average a 3 × 3
#: neighbourhood, so a position partly covered already sees the defect).
MASK_COVERAGE = 0.25
#: Images labelled anomalous without a mask drawn in each training step, as a share of
#: ``batch_size`` (at least one).
WEAK_IMAGES_PER_STEP = 0.25
#: The share of an image labelled anomalous without a mask that each step trains as anomalous:
#: its least normal positions (at least one). Measured against one position and the top 1 %
#: (docs/quality.md#labelled-defects).
WEAK_POSITION_SHARE = 0.05
#: Positions of a masked anomalous image at least this many feature cells (in both directions)
#: from every cell the mask touches train as *normal*, beside the normal images' positions;
#: None: they are not used. Measured on MTD and left off (docs/quality.md#labelled-defects).
OUTSIDE_MASK_MARGIN: int | None = None


def _describe(images: Sequence, index: int) -> str:
    item = images[index]
    if isinstance(item, (str, os.PathLike)):
        return f"image {index} ({os.fspath(item)!r})"
    return f"image {index}"


def read_masks(masks, images: Sequence, labels: np.ndarray | None) -> list[np.ndarray | None]:
    """Every mask ``fit`` is given, read and checked against its image and label.

    Parameters
    ----------
    masks : sequence of length n_images, or None
        Per image: a mask file path, a PIL image, an array ``(H, W)`` (nonzero = defect) on
        the image's own grid, or None (no mask).
    images : sequence
        The validated images (:func:`sksimplenet.image_io.as_image_list`).
    labels : ndarray of shape (n_images,) or None
        +1 normal / -1 anomalous.

    Returns
    -------
    list of (ndarray of bool, shape of the image) or None
        The defect pixels of each anomalous image with a mask that marks some; None for
        the others (normal images, images without a mask, empty masks). An anomalous image
        whose mask is empty counts as labelled without a mask: one warning says how many.

    Raises
    ------
    ValueError
        ``masks`` without ``labels``, or of another length than the images; a mask not 2-D,
        unreadable, or of another aspect ratio than its image (a mask of the same aspect
        ratio at another resolution is resized); defect pixels in the mask of an image
        labelled +1. Each message names the image's index (and file).
    FileNotFoundError
        A mask path that does not exist.
    """
    n_images = len(images)
    if masks is None:
        return [None] * n_images
    if labels is None:
        raise ValueError("masks were given without y: pass the labels, -1 for the images the masks mark")
    if isinstance(masks, (str, os.PathLike)) or not hasattr(masks, "__len__"):
        raise ValueError(f"masks must be a sequence with one item per image, got {type(masks).__name__}")
    if len(masks) != n_images:
        raise ValueError(f"masks has {len(masks)} items but X has {n_images} images: give one per image")
    out: list[np.ndarray | None] = []
    empty = []
    for index, (mask, label) in enumerate(zip(masks, labels)):
        if mask is None:
            out.append(None)
            continue
        try:
            defect = load_mask(mask, index, image_size(images[index]))
        except (ValueError, FileNotFoundError) as error:
            item = images[index]
            if isinstance(item, (str, os.PathLike)):
                raise type(error)(f"{error} (the image: {os.fspath(item)!r})") from None
            raise
        if label == 1:
            if defect.any():
                raise ValueError(
                    f"The mask of {_describe(images, index)} marks {int(defect.sum())} defect pixels but "
                    "the image is labelled +1 (normal): label it -1, or give None as its mask"
                )
            out.append(None)
            continue
        if not defect.any():
            empty.append(index)
            defect = None
        out.append(defect)
    if empty:
        some = "image labelled -1 has" if len(empty) == 1 else "images labelled -1 have"
        warnings.warn(
            f"{len(empty)} {some} an empty mask (first: {_describe(images, empty[0])}): they are "
            "trained on as anomalous images without a mask",
            UserWarning,
            stacklevel=3,
        )
    return out


@dataclass(frozen=True)
class ImageRoles:
    """Which images of ``X`` play which part in a fit (indices into ``X``).

    Attributes
    ----------
    trained : list of int
        Normal images in the gradient steps.
    held_out : list of int
        Normal images held out of them.
    masked : list of int
        Images labelled anomalous, with a mask, learned from.
    weak : list of int
        Images labelled anomalous without a mask, learned from.
    scored : list of int
        Images labelled anomalous that are only scored (``labelled_anomalies="ignore"``).
    """

    trained: list[int]
    held_out: list[int]
    masked: list[int]
    weak: list[int]
    scored: list[int]

    @property
    def order(self) -> list[int]:
        """The ``X`` index of each cache row."""
        return self.trained + self.held_out + self.masked + self.weak + self.scored


def assign_roles(
    labels: np.ndarray | None,
    n_images: int,
    masks: Sequence[np.ndarray | None],
    *,
    learn: bool,
    validation_fraction: float,
    seed: int,
) -> ImageRoles:
    """The seeded split of the normal images into trained and held out, and the anomalous
    images' part: learned from (with or without a mask) when ``learn``, else scored only.

    The labelled anomalies are all trained on: the held-out images that set the threshold
    are normal ones only.
    """
    if labels is None:
        normal, anomalous = list(range(n_images)), []
    else:
        normal, anomalous = np.flatnonzero(labels == 1).tolist(), np.flatnonzero(labels == -1).tolist()
        if not normal:
            raise ValueError("Every image is labelled -1 (anomalous): nothing normal to train on")
    trained, held_out = held_out_split(len(normal), validation_fraction, seed)
    if not learn:
        masked, weak, scored = [], [], anomalous
    else:
        masked = [i for i in anomalous if masks[i] is not None]
        weak, scored = [i for i in anomalous if masks[i] is None], []
    return ImageRoles([normal[i] for i in trained], [normal[i] for i in held_out], masked, weak, scored)


@dataclass
class TrainingSet:
    """The cached parts of one fit (see the module's description).

    Attributes
    ----------
    features : Tensor, shape (n_images, h, w, feature_dim)
        The cache, rows in :attr:`ImageRoles.order`.
    roles : ImageRoles
    input_size : (int, int)
        The preprocessed images' ``(height, width)``.
    synthetic : Tensor, shape (n, feature_dim), or None
        Features inside synthetic defects.
    labelled : Tensor, shape (n, feature_dim), or None
        Features inside the masks of the images labelled anomalous.
    weak : Tensor, shape (n_weak, h, w, feature_dim), or None
        The rows of the images labelled anomalous that train by multiple-instance learning:
        those without a mask, and those with one too when ``masked_as_images``.
    outside : Tensor, shape (n, feature_dim), or None
        Features of masked anomalous images far from their masks, trained as normal
        (:data:`OUTSIDE_MASK_MARGIN`).
    """

    features: torch.Tensor
    roles: ImageRoles
    input_size: tuple[int, int]
    synthetic: torch.Tensor | None
    labelled: torch.Tensor | None
    weak: torch.Tensor | None
    outside: torch.Tensor | None = None

    @property
    def n_trained(self) -> int:
        return len(self.roles.trained)

    @property
    def n_fitted(self) -> int:
        """Normal images, trained and held out."""
        return len(self.roles.trained) + len(self.roles.held_out)

    @property
    def trained(self) -> torch.Tensor:
        return self.features[: self.n_trained]

    @property
    def held_out(self) -> torch.Tensor | None:
        return self.features[self.n_trained : self.n_fitted] if self.roles.held_out else None

    def weak_anomalies(self, batch_size: int) -> WeakAnomalies | None:
        """The images labelled without a mask as training takes them, or None."""
        if self.weak is None:
            return None
        per_step = max(1, round(WEAK_IMAGES_PER_STEP * batch_size))
        top_positions = max(1, math.ceil(WEAK_POSITION_SHARE * math.prod(self.weak.shape[1:3])))
        return WeakAnomalies(self.weak, per_step, top_positions)


def positions_inside(coverage: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Which feature positions train as defect: more than :data:`MASK_COVERAGE` of their cell
    inside the mask, or, for a defect too small for that, the positions it covers most.

    Parameters
    ----------
    coverage : Tensor, shape (height, width)
        The mask at the network's input resolution (:func:`sksimplenet.image_io.mask_coverage`).
    grid : (h, w)

    Returns
    -------
    Tensor, shape (h, w), bool
    """
    share = F.adaptive_avg_pool2d(coverage[None, None], tuple(grid))[0, 0]
    inside = share > MASK_COVERAGE
    if not inside.any():
        inside = share == share.max()
    return inside


def positions_far_from(coverage: torch.Tensor, grid: tuple[int, int], margin: int) -> torch.Tensor:
    """Which feature positions lie at least ``margin`` cells from every cell the mask touches.

    Parameters
    ----------
    coverage : Tensor, shape (height, width)
        As for :func:`positions_inside`.
    grid : (h, w)
    margin : int
        Chebyshev distance in feature cells; 1 keeps every position whose own cell is clear.

    Returns
    -------
    Tensor, shape (h, w), bool
    """
    touched = F.adaptive_max_pool2d(coverage[None, None].float(), tuple(grid)) > 0
    near = F.max_pool2d(touched.float(), 2 * margin - 1, stride=1, padding=margin - 1) > 0
    return ~near[0, 0]


def build_training_set(
    model: SimpleNetModel,
    images: Sequence,
    roles: ImageRoles,
    masks: Sequence[np.ndarray | None],
    cache: FeatureCache,
    batches: Callable[[list, list[int]], Iterator[torch.Tensor]],
    *,
    resize,
    crop_size,
    defects: DefectFeatures | None,
    masked_as_images: bool,
) -> TrainingSet:
    """Extract every image's patch features into ``cache`` and gather the parts training uses.

    Parameters
    ----------
    model : SimpleNetModel
        Its extractor and patch embedding compute the features.
    images : sequence
        The validated images of ``X``.
    roles : ImageRoles
    masks : sequence of (ndarray of bool) or None
        :func:`read_masks`' result.
    cache : FeatureCache
        Holds ``len(roles.order)`` images.
    batches : callable
        ``batches(images, positions)`` yields preprocessed batches of ``images`` on the
        model's device (``positions``: their indices in ``X``, for error messages).
    resize, crop_size
        The images' preprocessing, applied to the masks too.
    defects : DefectFeatures or None
        Filled with synthetic defects made from the trained images.
    masked_as_images : bool
        Whether the images with a mask also train by multiple-instance learning, as the
        images labelled anomalous without one do.

    Raises
    ------
    ValueError
        The images have more than one size after preprocessing.
    """
    input_sizes: set[tuple[int, int]] = set()

    def embed(batch: torch.Tensor) -> torch.Tensor:
        return model.patch_features(batch).permute(0, 2, 3, 1)

    # One pass per part: a batch never mixes images of two parts, and synthetic defects are
    # made from trained images only.
    parts = (
        (roles.trained, defects),
        (roles.held_out, None),
        (roles.masked + roles.weak + roles.scored, None),
    )
    start = 0
    with torch.inference_mode():
        for positions, part_defects in parts:
            if not positions:
                continue
            for batch in batches([images[p] for p in positions], positions):
                input_sizes.add(tuple(batch.shape[-2:]))
                if len(input_sizes) == 1:  # after a second size, only sizes are collected
                    cache.write(start, embed(batch))
                    if part_defects is not None:
                        part_defects.add(batch, embed, cache.tensor.device)
                start += len(batch)
    if len(input_sizes) > 1:
        raise ValueError(
            f"Training images have different sizes after preprocessing {sorted(input_sizes)}: "
            "set crop_size, or resize=(height, width)"
        )
    input_size = input_sizes.pop()
    features = cache.tensor
    first_masked = len(roles.trained) + len(roles.held_out)
    labelled = outside = None
    if roles.masked:
        grid = tuple(features.shape[1:3])
        chunks, far = [], []
        for row, position in enumerate(roles.masked, start=first_masked):
            coverage = mask_coverage(masks[position], resize, crop_size)
            if tuple(coverage.shape) != input_size:  # the image and its mask were both checked
                raise RuntimeError(f"mask {position} is {tuple(coverage.shape)}, not {input_size}")
            chunks.append(features[row][positions_inside(coverage, grid).to(features.device)])
            if OUTSIDE_MASK_MARGIN is not None:
                clear = positions_far_from(coverage, grid, OUTSIDE_MASK_MARGIN)
                far.append(features[row][clear.to(features.device)])
        labelled = torch.cat(chunks)
        outside = torch.cat(far) if far and sum(map(len, far)) else None
    # The masked rows come right before the rows without a mask: one slice takes both.
    first_weak = first_masked + len(roles.masked)
    first_by_image = first_masked if masked_as_images else first_weak
    end = first_weak + len(roles.weak)
    weak = features[first_by_image:end] if end > first_by_image else None
    synthetic = None if defects is None else defects.features()
    return TrainingSet(features, roles, input_size, synthetic, labelled, weak, outside)
