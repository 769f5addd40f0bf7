"""The folded inference head: SimpleNet's scoring from layer maps in a few matrix products.

In evaluation mode everything from the backbone's layer maps up to the discriminator's
BatchNorm is affine: neighbourhood averaging, bilinear resizing, concatenation, channel
pooling, the feature scaler, the adaptor, the discriminator's first Linear layer and its
BatchNorm. :class:`FoldedHead` composes the last four (each module states its own affine
part) into one map and splits its columns by backbone level. Each level's part is applied
to that level's map at its own (smaller) resolution, the hidden maps are averaged and
resized (linear operations commute with a per-position linear map) and summed; the
discriminator's :meth:`~sksimplenet.networks.Discriminator.tail` (LeakyReLU, last Linear
layer) finishes. On a CPU a few images go through at a time, so that the hidden
pre-activations stay in the cache. Upsampling and smoothing of the patch scores are two
small matrix products (:func:`~sksimplenet.scoring.map_operators`).

A :class:`FoldedHead` is a snapshot of the weights it was built from:
:class:`~sksimplenet.model.SimpleNetModel` builds a new one whenever it enters evaluation
mode, loads a state dict, moves or changes dtype.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .features import aggregate_neighbourhood
from .networks import Adaptor, Discriminator, FeatureScaler
from .scoring import map_operators

_MAX_OPERATORS = 8
# Size of the hidden pre-activations built at once on a CPU: small enough to stay in the
# cache between the product, LeakyReLU and the last layer (docs/performance.md).
_CPU_CHUNK_BYTES = 8 << 20  # two images at 224 x 224 with 1024 hidden units


def _resize(maps: torch.Tensor, size: tuple[int, int], out: torch.Tensor | None = None) -> torch.Tensor:
    """Bilinear resizing of ``(n, channels, h, w)`` maps to ``size``, into ``out`` when given."""
    if out is None:
        return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)
    return torch.ops.aten.upsample_bilinear2d.out(maps, list(size), False, None, None, out=out)


def channel_pooling_matrix(channels: int, feature_dim: int, dtype=torch.float64, device=None) -> torch.Tensor:
    """The matrix ``P`` of :func:`~sksimplenet.features.reduce_channels`: ``reduced = P @ features``.

    Parameters
    ----------
    channels : int
        Width of the concatenated layer maps.
    feature_dim : int
        Width after pooling; at least ``channels`` gives the identity.

    Returns
    -------
    Tensor, shape (min(channels, feature_dim), channels)
    """
    eye = torch.eye(channels, dtype=dtype, device=device)
    if channels <= feature_dim:
        return eye
    return F.adaptive_avg_pool1d(eye.unsqueeze(1), feature_dim).squeeze(1).T.contiguous()


def _rows(maps: torch.Tensor) -> torch.Tensor:
    """Channels-last maps ``(n, channels, h, w)`` as rows ``(n * h * w, channels)`` (a view)."""
    return maps.permute(0, 2, 3, 1).reshape(-1, maps.shape[1])


def _preactivations(hidden_maps, target_rows, bias, target, images: slice, out=None) -> torch.Tensor:
    """The folded head's hidden pre-activations for some images, one row per target position.

    Parameters
    ----------
    hidden_maps : list of Tensor, shape (n, hidden_dim, h_l, w_l)
        Levels already projected (the first includes ``bias``), resized here.
    target_rows : list of (Tensor (n, H * W, channels_l), Tensor (channels_l, hidden_dim))
        Levels on the target grid, as feature rows and their part of the folded weight.
    bias : Tensor, shape (hidden_dim,)
        Taken by the first product when ``hidden_maps`` is empty.
    target : (H, W)
    images : slice
        Which images.
    out : Tensor, shape (n_images, hidden_dim, H, W), channels-last, optional
        Written and returned (as rows) instead of allocating.

    Returns
    -------
    Tensor, shape (n_images * H * W, hidden_dim)
    """
    hidden = None
    for maps in hidden_maps:
        part = maps[images]
        if tuple(part.shape[-2:]) != target:
            part = _resize(part, target, out=out if hidden is None else None)
        hidden = part if hidden is None else hidden.add_(part)
    hidden = None if hidden is None else _rows(hidden)
    for rows, weight in target_rows:
        rows = rows[images].flatten(0, 1)
        start = bias if hidden is None else hidden
        if out is None:
            hidden = torch.addmm(start, rows, weight)
        else:  # into the buffer, or in place into what is already accumulated
            hidden = torch.addmm(start, rows, weight, out=_rows(out) if hidden is None else hidden)
    return hidden


class FoldedHead:
    """Patch anomaly scores ``-D(adaptor(scaler(f)))`` of a model in evaluation mode, folded.

    Parameters
    ----------
    scaler : FeatureScaler
    adaptor : Adaptor
    discriminator : Discriminator
        In evaluation mode; their weights are read once, here.
    patch_size : int
    count_padding : bool
        Neighbourhood side and border rule of :func:`~sksimplenet.features.aggregate_neighbourhood`.
    feature_dim : int or None
        Upper bound on the patch-feature width (channel pooling of
        :func:`~sksimplenet.features.reduce_channels`).
    smoothing_sigma : float
        Gaussian smoothing of the maps, in pixels.

    Attributes
    ----------
    weight : Tensor, shape (hidden_dim, n_features)
    bias : Tensor, shape (hidden_dim,)
        ``scaler → adaptor → Linear → BatchNorm`` is ``features @ weight.T + bias``; in the
        adaptor's dtype and on its device.
    """

    def __init__(
        self,
        scaler: FeatureScaler,
        adaptor: Adaptor,
        discriminator: Discriminator,
        *,
        patch_size: int,
        count_padding: bool,
        feature_dim: int | None,
        smoothing_sigma: float,
    ):
        with torch.no_grad():
            scale, scale_bias = scaler.affine()
            adaptor_weight, adaptor_bias = adaptor.affine()
            hidden_weight, hidden_bias = discriminator.affine()
            combined = hidden_weight @ adaptor_weight  # (hidden, feature_dim)
            weight = combined * scale[None, :]
            bias = combined @ scale_bias + hidden_weight @ adaptor_bias + hidden_bias
        reference = adaptor.linear.weight
        self.weight = weight.to(reference.dtype).contiguous()
        self.bias = bias.to(reference.dtype).contiguous()
        self.tail: Callable[[torch.Tensor], torch.Tensor] = discriminator.tail
        self.patch_size = patch_size
        self.count_padding = count_padding
        self.feature_dim = feature_dim
        self.smoothing_sigma = smoothing_sigma
        self._level_weights: dict[tuple[int, ...], list[torch.Tensor]] = {}
        self._operators: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def aggregate(self, maps: torch.Tensor) -> torch.Tensor:
        """The model's neighbourhood mean of ``(n, channels, h, w)`` maps."""
        return aggregate_neighbourhood(maps, self.patch_size, count_padding=self.count_padding)

    def scores_from_features(self, features: torch.Tensor) -> torch.Tensor:
        """Patch anomaly scores ``(n_images, h, w)`` from patch features ``(n_images, h, w, n_features)``."""
        n, h, w, c = features.shape
        rows = features.reshape(n * h * w, c).to(self.weight.dtype)
        return -self.tail(torch.addmm(self.bias, rows, self.weight.T)).view(n, h, w)

    def level_weights(self, channels: tuple[int, ...]) -> list[torch.Tensor]:
        """The folded weight split by backbone level: one ``(channels_l, hidden_dim)`` matrix each."""
        parts = self._level_weights.get(channels)
        if parts is not None:
            return parts
        total = sum(channels)
        bound = total if self.feature_dim is None else self.feature_dim
        pooling = channel_pooling_matrix(total, bound, device=self.weight.device)
        if pooling.shape[0] != self.weight.shape[1]:
            raise ValueError(
                f"The layer maps have {total} channels in all, which give {pooling.shape[0]} patch "
                f"features; the model was built for {self.weight.shape[1]}"
            )
        full = self.weight.double() @ pooling  # (hidden, total)
        parts = [part.T.to(self.weight.dtype).contiguous() for part in full.split(list(channels), dim=1)]
        self._level_weights[channels] = parts
        return parts

    def map_operators(self, shape, size, dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`~sksimplenet.scoring.map_operators` for this head's smoothing, kept per shape."""
        key = (tuple(shape), tuple(size), dtype, device)
        operators = self._operators.get(key)
        if operators is None:
            operators = map_operators(shape, size, self.smoothing_sigma, dtype=dtype, device=device)
            if len(self._operators) >= _MAX_OPERATORS:
                self._operators = {}
            self._operators[key] = operators
        return operators

    def scores_from_layer_maps(self, layer_maps: list[torch.Tensor]) -> torch.Tensor:
        """Patch anomaly scores ``(n_images, h, w)`` straight from the backbone's layer maps.

        Equal (up to rounding) to the model's ``patch_scores(patch_features(images))`` in
        evaluation mode, at a fraction of the cost: see the module's description. Works in channels-last
        layout, where the per-position products are single matrix products and averaging
        and resizing are fastest. On a CPU the pre-activations of the discriminator's hidden
        layer are built a few images at a time, in one reused buffer of about
        ``_CPU_CHUNK_BYTES``, so that the last steps find them in the cache.
        """
        bias = self.bias
        weights = self.level_weights(tuple(int(m.shape[1]) for m in layer_maps))
        areas = [int(m.shape[-2]) * int(m.shape[-1]) for m in layer_maps]
        target = tuple(layer_maps[areas.index(max(areas))].shape[-2:])
        if not torch.jit.is_tracing():  # traced (ONNX export), the sizes stay the input's, symbolic
            target = tuple(int(v) for v in target)
        hidden_dim = bias.shape[0]
        channels_last = torch.channels_last
        # Levels projected now, for the whole batch: hidden maps (n, hidden_dim, h, w), resized
        # to the target grid chunk by chunk. Levels already on that grid: feature rows
        # (n, H * W, channels), projected chunk by chunk into the hidden pre-activations.
        hidden_maps, target_rows = [], []
        # Smallest map first: it takes the bias, which survives resizing (a constant does) but
        # is added after any neighbourhood mean (with counted padding a constant does not survive it).
        for level in sorted(range(len(layer_maps)), key=areas.__getitem__):
            feature_map = layer_maps[level].to(bias.dtype).contiguous(memory_format=channels_last)
            _, channels, h, w = feature_map.shape
            # Average over neighbourhoods on whichever side of the projection has fewer channels
            # (both are linear; zero padding stays zero through the projection).
            pool_first = channels <= hidden_dim
            if pool_first:
                feature_map = self.aggregate(feature_map)
            rows = feature_map.permute(0, 2, 3, 1).flatten(1, 2)  # (n, h * w, channels)
            if pool_first and (h, w) == target:
                target_rows.append((rows, weights[level]))
                continue
            rows = rows.flatten(0, 1)
            takes_bias = not hidden_maps
            if pool_first:
                projected = torch.addmm(bias, rows, weights[level]) if takes_bias else rows @ weights[level]
                hidden_maps.append(projected.view(-1, h, w, hidden_dim).permute(0, 3, 1, 2))
                continue
            maps = self.aggregate((rows @ weights[level]).view(-1, h, w, hidden_dim).permute(0, 3, 1, 2))
            hidden_maps.append(maps.add_(bias.view(1, -1, 1, 1)) if takes_bias else maps)

        if torch.jit.is_tracing():  # the ONNX exporter knows no out= arguments: no buffer
            hidden = _preactivations(hidden_maps, target_rows, bias, target, slice(None))
            return (-self.tail(hidden)).view(-1, *target)
        n = int(layer_maps[0].shape[0])
        chunk = n
        if bias.device.type == "cpu":
            chunk = max(1, _CPU_CHUNK_BYTES // (target[0] * target[1] * hidden_dim * bias.element_size()))
        shape = (min(chunk, n), hidden_dim, *target)
        buffer = torch.empty(shape, dtype=bias.dtype, device=bias.device, memory_format=channels_last)
        scores = []
        for start in range(0, n, chunk):
            out = buffer[: min(chunk, n - start)]
            hidden = _preactivations(hidden_maps, target_rows, bias, target, slice(start, start + chunk), out)
            scores.append(-self.tail(hidden))
        return torch.cat(scores).view(n, *target)
