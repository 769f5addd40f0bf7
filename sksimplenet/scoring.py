"""From patch scores to anomaly maps and image scores, on the scores' own device."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gaussian_kernel1d(sigma: float, truncate: float = 4.0, dtype=torch.float32, device=None) -> torch.Tensor:
    """Normalised 1-D Gaussian kernel of radius ``int(truncate * sigma + 0.5)`` (as SciPy)."""
    radius = int(truncate * float(sigma) + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (x / float(sigma)) ** 2)
    return (kernel / kernel.sum()).to(dtype=dtype, device=device)


def gaussian_blur(maps: torch.Tensor, sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """Separable Gaussian filter of a batch of maps.

    Matches ``scipy.ndimage.gaussian_filter(map, sigma, mode="nearest", truncate=truncate)``
    applied to each map: borders are padded by repeating the edge pixel.

    Parameters
    ----------
    maps : Tensor, shape (n_maps, height, width)
    sigma : float
        Standard deviation in pixels; 0 returns the maps unchanged.

    Returns
    -------
    Tensor, shape (n_maps, height, width)
    """
    if sigma <= 0:
        return maps
    kernel = gaussian_kernel1d(sigma, truncate, dtype=maps.dtype, device=maps.device)
    radius = kernel.numel() // 2
    x = maps.unsqueeze(1)
    x = F.pad(x, (radius, radius, 0, 0), mode="replicate")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1))
    x = F.pad(x, (0, 0, radius, radius), mode="replicate")
    x = F.conv2d(x, kernel.view(1, 1, -1, 1))
    return x.squeeze(1)


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinearly resize ``(n_maps, h, w)`` maps to ``(n_maps, *size)``."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps.unsqueeze(1), size=tuple(size), mode="bilinear", align_corners=False).squeeze(1)


def score_maps(patch_scores: torch.Tensor, size: tuple[int, int], smoothing_sigma: float) -> torch.Tensor:
    """Anomaly maps: patch anomaly scores upsampled to ``size`` and Gaussian-smoothed.

    Parameters
    ----------
    patch_scores : Tensor, shape (n_images, h, w)
        Higher = more anomalous (SimpleNet's ``-D``).
    size : (height, width)
        Output resolution in pixels (the network's input resolution).
    smoothing_sigma : float
        Gaussian standard deviation in output pixels.

    Returns
    -------
    Tensor, shape (n_images, height, width)
    """
    return gaussian_blur(upsample(patch_scores, size), smoothing_sigma)


def image_scores(maps: torch.Tensor, image_score: str | float) -> torch.Tensor:
    """Image anomaly scores from anomaly maps.

    Parameters
    ----------
    maps : Tensor, shape (n_images, height, width)
    image_score : "max" or float in (0, 1]
        ``"max"``: the maximum of each map (the paper). A float: the mean of the highest
        ``image_score`` share of each map's pixels (at least one pixel).

    Returns
    -------
    Tensor, shape (n_images,)
    """
    flat = maps.flatten(1)
    if image_score == "max":
        return flat.amax(dim=1)
    if torch.jit.is_tracing():
        # Traced for ONNX export, where the map size is an input: the same mean over a share
        # of the sorted map, with the count computed in the graph.
        ordered = flat.sort(dim=1, descending=True).values
        size = torch._shape_as_tensor(flat)[1].to(flat.dtype)
        k = torch.clamp(torch.floor(float(image_score) * size + 0.5), min=1.0)
        kept = torch.arange(ordered.shape[1], dtype=flat.dtype, device=flat.device) < k
        return (ordered * kept).sum(dim=1) / k
    k = max(1, int(float(image_score) * int(flat.shape[1]) + 0.5))
    return flat.topk(k, dim=1).values.mean(dim=1)


def map_operators(
    shape: tuple[int, int],
    size: tuple[int, int],
    smoothing_sigma: float,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Matrices ``(K_h, K_w)`` such that ``score_maps(S, size, sigma) == K_h @ S @ K_w.T``.

    Bilinear upsampling and the Gaussian filter with edge padding are both linear and
    separable, so their composition along each axis is one matrix: two small matrix
    products then replace the upsampling and the two convolutions over the full-resolution
    map. Each matrix is obtained by passing unit vectors through :func:`score_maps` itself
    (in float64), so it follows that function exactly.

    Parameters
    ----------
    shape : (h, w)
        Size of the patch-score maps.
    size : (height, width)
        Output resolution in pixels.
    smoothing_sigma : float
        Gaussian standard deviation in output pixels.
    dtype, device
        Of the returned matrices.

    Returns
    -------
    K_h : Tensor, shape (height, h)
    K_w : Tensor, shape (width, w)
    """
    h, w = (int(v) for v in shape)
    height, width = (int(v) for v in size)
    rows = score_maps(torch.eye(h, dtype=torch.float64).unsqueeze(-1), (height, 1), smoothing_sigma)
    cols = score_maps(torch.eye(w, dtype=torch.float64).unsqueeze(1), (1, width), smoothing_sigma)
    k_h = rows[:, :, 0].T.to(dtype=dtype, device=device).contiguous()
    k_w = cols[:, 0, :].T.to(dtype=dtype, device=device).contiguous()
    return k_h, k_w


def apply_map_operators(patch_scores: torch.Tensor, k_h: torch.Tensor, k_w: torch.Tensor) -> torch.Tensor:
    """``K_h @ S @ K_w.T`` for a batch ``S`` of shape ``(n_images, h, w)``: the anomaly maps.

    See :func:`map_operators`; the result has shape ``(n_images, height, width)``.
    """
    return torch.matmul(torch.matmul(k_h, patch_scores), k_w.T)
