"""Local synthetic defects: training images with a region replaced, for anomalous features.

SimpleNet's Gaussian anomalous features lie in a thin shell around the normal ones; the
discriminator learns nothing about features far from everything normal. Local synthesis
(the idea of DRAEM, SuperSimpleNet and GLASS's local anomaly synthesis) paints defects into
the training images themselves, so that the features inside them are structured and far from
normal, as real defects' are. Nothing outside the training images is used:

- **where**: a blob-shaped region (smooth random noise, upsampled from a coarse grid of 2–8
  cells a side and thresholded, as Perlin-noise masks are) covering a share of the image
  drawn log-uniformly from :data:`DEFECT_AREA`;
- **what**: another training image of the batch, flipped, turned and with its contrast and
  brightness changed, or a generated texture (smooth colour noise), each half of the time;
- **how**: blended over the region with an opacity drawn from :data:`DEFECT_OPACITY`.

The patch features whose cell lies more than half inside the region
(:func:`inside_patches`) are the anomalous features; ``fit`` computes them once, with the
normal features, and trains on them beside the Gaussian ones.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

#: Range of the share of an image a synthetic defect covers (drawn log-uniformly).
DEFECT_AREA = (0.003, 0.1)
#: Range of the defect's opacity over its region (1 replaces the pixels there).
DEFECT_OPACITY = (0.5, 1.0)
_GRID_CELLS = (2, 3, 4, 6, 8)  # coarse noise grids the region masks are upsampled from
_TEXTURE_CELLS = (4, 8, 16, 32)


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return torch.empty(n).uniform_(low, high, generator=generator)


def defect_masks(n: int, size: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    """Blob-shaped region masks, one per image.

    Parameters
    ----------
    n : int
    size : (height, width)
    generator : torch.Generator
        On the CPU; the masks are made there.

    Returns
    -------
    Tensor, shape (n, 1, height, width), float32 in {0, 1}
        Each covers a share of its image drawn log-uniformly from :data:`DEFECT_AREA`.
    """
    height, width = size
    low, high = (math.log(a) for a in DEFECT_AREA)
    areas = torch.exp(_uniform(n, low, high, generator))
    masks = torch.empty(n, 1, height, width)
    for i in range(n):
        cells = _GRID_CELLS[int(torch.randint(len(_GRID_CELLS), (), generator=generator))]
        coarse = torch.randn(1, 1, cells + 1, cells + 1, generator=generator)
        noise = F.interpolate(coarse, size=size, mode="bicubic", align_corners=True).flatten()
        # Threshold at the quantile that leaves the drawn area above it (at least one pixel).
        k = max(1, int(round(float(areas[i]) * noise.numel())))
        threshold = noise.kthvalue(noise.numel() - k + 1).values
        masks[i, 0] = (noise >= threshold).view(height, width).float()
    return masks


def _textures(n: int, size: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    """Smooth random colour (or grey) textures ``(n, 3, height, width)`` in [0, 1]."""
    textures = []
    for _ in range(n):
        cells = _TEXTURE_CELLS[int(torch.randint(len(_TEXTURE_CELLS), (), generator=generator))]
        coarse = torch.rand(1, 3, cells, cells, generator=generator)
        if torch.rand((), generator=generator) < 0.5:
            coarse = coarse.mean(1, keepdim=True).expand(1, 3, cells, cells)
        textures.append(F.interpolate(coarse, size=size, mode="bilinear", align_corners=False)[0])
    return torch.stack(textures)


def _transformed(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``images`` ``(n, 3, H, W)`` flipped, turned (when square), with contrast and brightness changed."""
    n = len(images)
    out = images.clone()
    flips = torch.rand(n, 2, generator=generator) < 0.5
    turns = torch.randint(4, (n,), generator=generator)
    contrast = _uniform(n, 0.6, 1.6, generator).to(images.device)
    gain = _uniform(n, 0.6, 1.4, generator).to(images.device)
    shift = _uniform(n, -0.15, 0.15, generator).to(images.device)
    square = images.shape[-1] == images.shape[-2]
    for i in range(n):
        image = images[i]
        dims = [d for d, flip in zip((-1, -2), flips[i].tolist()) if flip]
        if dims:
            image = image.flip(dims)
        if square and turns[i]:
            image = torch.rot90(image, int(turns[i]), (-2, -1))
        mean = image.mean()
        out[i] = ((image - mean) * contrast[i] + mean) * gain[i] + shift[i]
    return out.clamp_(0, 1)


def paste_defects(
    images: torch.Tensor, count: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` copies of ``images`` with one synthetic defect each.

    Parameters
    ----------
    images : Tensor, shape (n, 3, height, width), float in [0, 1]
        Preprocessed training images (any device). Copy ``i`` is of image ``i % n``; its
        defect is cut from another image of the batch (when there is one) or is a
        generated texture.
    count : int
        Number of defective copies.
    generator : torch.Generator
        On the CPU: every random choice is made there, so that results do not depend on
        the device.

    Returns
    -------
    defective : Tensor, shape (count, 3, height, width)
    masks : Tensor, shape (count, 1, height, width), float32 in {0, 1}, on the images' device
    """
    n, _, height, width = images.shape
    device = images.device
    bases = torch.arange(count) % n
    others = (bases + torch.randint(1, max(n, 2), (count,), generator=generator)) % n
    masks = defect_masks(count, (height, width), generator).to(device)
    sources = _transformed(images[others.to(device)], generator)
    use_texture = (torch.rand(count, generator=generator) < 0.5) | (n == 1)  # n == 1: no other image
    textures = _textures(count, (height, width), generator).to(device)
    sources = torch.where(use_texture.to(device)[:, None, None, None], textures, sources)
    opacity = _uniform(count, *DEFECT_OPACITY, generator).to(device).view(count, 1, 1, 1) * masks
    base_images = images[bases.to(device)]
    return base_images * (1 - opacity) + sources * opacity, masks


def inside_patches(masks: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Which feature positions lie more than half inside the defect regions.

    Parameters
    ----------
    masks : Tensor, shape (n, 1, height, width)
    grid : (h, w)
        The patch-feature grid.

    Returns
    -------
    Tensor, shape (n, h, w), bool
    """
    return F.adaptive_avg_pool2d(masks, tuple(grid))[:, 0] > 0.5


class DefectFeatures:
    """Features of synthetic defects, made batch by batch while ``fit`` extracts the training images.

    Parameters
    ----------
    per_image : float > 0
        Synthetic defect images made per training image (on average over the batches).
    generator : torch.Generator
        On the CPU; seeds every defect.
    dtype : torch.dtype
        Storage type of the features kept.
    """

    def __init__(self, per_image: float, generator: torch.Generator, dtype: torch.dtype):
        self.per_image = per_image
        self.generator = generator
        self.dtype = dtype
        self.n_seen = 0
        self.n_images = 0
        self._chunks: list[torch.Tensor] = []

    def add(self, images: torch.Tensor, embed, device: torch.device) -> None:
        """Make this batch's defect images and keep the features inside their defects.

        Parameters
        ----------
        images : Tensor, shape (n, 3, height, width)
            A batch of preprocessed training images.
        embed : callable
            Patch features ``(n, h, w, feature_dim)`` of images ``(n, 3, height, width)``.
        device : torch.device
            Where the kept features are stored.
        """
        n = len(images)
        count = round(self.per_image * (self.n_seen + n)) - round(self.per_image * self.n_seen)
        self.n_seen += n
        for start in range(0, count, n):  # at most one batch's worth through the backbone at once
            defective, masks = paste_defects(images, min(n, count - start), self.generator)
            features = embed(defective)
            inside = inside_patches(masks, tuple(features.shape[1:3]))
            self._chunks.append(features[inside].to(device=device, dtype=self.dtype))
            self.n_images += len(defective)

    def features(self) -> torch.Tensor | None:
        """All kept features, ``(n_patches, feature_dim)``; None when none were kept."""
        if not self._chunks or not sum(len(chunk) for chunk in self._chunks):
            return None
        return torch.cat(self._chunks)
