"""Patch embedding: backbone layer maps → one locally aware feature vector per position."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def aggregate_neighbourhood(
    feature_map: torch.Tensor, patch_size: int, *, count_padding: bool
) -> torch.Tensor:
    """Average every position's features over its ``patch_size × patch_size`` neighbourhood.

    Parameters
    ----------
    feature_map : Tensor, shape (n_images, channels, h, w)
    patch_size : int
        Odd neighbourhood side ``p``; 1 leaves the map unchanged.
    count_padding : bool
        At the borders, part of the neighbourhood lies outside the map. True: the map is
        padded with zeros and every mean is over ``p²`` values, zeros included (what the
        official SimpleNet and PatchCore code computes by unfolding with ``padding=p // 2``),
        so that border positions are pulled towards zero. False: only the positions inside
        the map are averaged. In the interior both give the same mean.

    Returns
    -------
    Tensor, shape (n_images, channels, h, w)
    """
    if patch_size == 1:
        return feature_map
    return F.avg_pool2d(
        feature_map, patch_size, stride=1, padding=patch_size // 2, count_include_pad=count_padding
    )


def reduce_channels(features: torch.Tensor, feature_dim: int) -> torch.Tensor:
    """Average groups of neighbouring channels down to ``feature_dim`` channels.

    Adaptive average pooling along the channel axis (the official SimpleNet code's
    projection). Maps with ``feature_dim`` channels or fewer are returned unchanged.

    Parameters
    ----------
    features : Tensor, shape (n_images, channels, h, w)
    feature_dim : int

    Returns
    -------
    Tensor, shape (n_images, min(channels, feature_dim), h, w)
    """
    n, c, h, w = features.shape
    if c <= feature_dim:
        return features
    flat = features.permute(0, 2, 3, 1).reshape(n * h * w, 1, c)
    pooled = F.adaptive_avg_pool1d(flat, feature_dim)
    return pooled.reshape(n, h, w, feature_dim).permute(0, 3, 1, 2)


def embed_patches(
    layer_maps: Sequence[torch.Tensor],
    *,
    patch_size: int,
    count_padding: bool,
    feature_dim: int | None,
) -> torch.Tensor:
    """Aggregate, resize to the largest map and concatenate the layer maps.

    Parameters
    ----------
    layer_maps : sequence of Tensor, each (n_images, channels_l, h_l, w_l)
    patch_size, count_padding
        Neighbourhood side ``p`` and border rule of :func:`aggregate_neighbourhood`.
    feature_dim : int or None
        Upper bound on the output width (see :func:`reduce_channels`); None keeps all.

    Returns
    -------
    Tensor, shape (n_images, sum(channels_l) or feature_dim, H, W)
        ``H × W`` is the size of the largest (first, shallowest) layer map.
    """
    target = max((m.shape[-2:] for m in layer_maps), key=lambda s: s[0] * s[1])
    resized = []
    for feature_map in layer_maps:
        feature_map = aggregate_neighbourhood(feature_map, patch_size, count_padding=count_padding)
        if feature_map.shape[-2:] != target:
            feature_map = F.interpolate(feature_map, size=tuple(target), mode="bilinear", align_corners=False)
        resized.append(feature_map)
    features = torch.cat(resized, dim=1)
    return features if feature_dim is None else reduce_channels(features, feature_dim)
