"""The whole SimpleNet inference graph as one ``nn.Module``: images → anomaly maps, scores.

Two paths compute the same numbers:

- the reference path follows the method step by step (patch embedding of the layer maps,
  scaler, adaptor, discriminator, upsampling, smoothing); training uses it;
- the folded path, used for inference (evaluation mode, no gradients), exploits that
  everything from the layer maps up to the discriminator's BatchNorm is affine.
  Neighbourhood averaging, bilinear resizing, concatenation, channel pooling, the scaler,
  the adaptor, the first Linear layer and BatchNorm in evaluation mode compose into one
  affine map, whose columns split by backbone level. Each level's part is applied to that
  level's map at its own (smaller) resolution, the hidden maps are then averaged and
  resized (linear operations commute with a per-position linear map), summed, and go
  through LeakyReLU and the last Linear layer. Upsampling and smoothing of the patch scores
  are two small matrix products (:func:`~sksimplenet.scoring.map_operators`).

The folded weights are computed on first use and cached outside the state dict (saved
model files and ``load_state_dict`` are unaffected); the cache is rebuilt when a weight
changes, moves or changes dtype, and is not pickled.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from types import MappingProxyType

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import FeatureExtractor
from .features import aggregate_neighbourhood, embed_patches
from .networks import Adaptor, Discriminator, FeatureScaler
from .scoring import apply_map_operators, image_scores, map_operators, score_maps

_MAX_OPERATORS = 8


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


def _version(tensor: torch.Tensor):
    try:
        return tensor._version
    except RuntimeError:  # inference tensors carry no version counter
        return None


class SimpleNetModel(nn.Module):
    """Frozen feature extractor, feature scaler, adaptor and discriminator in one module.

    Parameters
    ----------
    extractor : FeatureExtractor
    feature_dim : int
        Width of the patch features after :func:`~sksimplenet.features.embed_patches`.
    patch_size, max_feature_dim : int
        Passed to :func:`~sksimplenet.features.embed_patches`.
    hidden_dim : int
        Width of the discriminator's hidden layer.
    adaptor_bias : bool
        The paper's adaptor has no bias; the official code's has one.
    adaptor_init : {"identity", "xavier"}
        Initial adaptor weights.
    smoothing_sigma : float
        Gaussian smoothing of the anomaly map, in pixels of the input.
    image_score : "max" or float
        How a map becomes an image score: its maximum, or the mean of its highest
        ``image_score`` share of pixels (see :func:`~sksimplenet.scoring.image_scores`).
    generator : torch.Generator, optional
        Seeds the initial weights.

    Attributes
    ----------
    backbone_autocast : mapping of str to torch.dtype
        Device types on which the frozen backbone runs under :func:`torch.autocast`, with
        its dtype, e.g. ``{"cuda": torch.float16}`` (set on an instance; not saved). Empty
        by default: float16 and bfloat16 backbones move image scores by several percent of
        their spread (docs/performance.md), and on a CPU they are slower.
    """

    backbone_autocast: Mapping[str, torch.dtype] = MappingProxyType({})

    def __init__(
        self,
        extractor: FeatureExtractor,
        feature_dim: int,
        *,
        patch_size: int = 3,
        max_feature_dim: int | None = 1536,
        hidden_dim: int = 1024,
        adaptor_bias: bool = False,
        adaptor_init: str = "xavier",
        smoothing_sigma: float = 4.0,
        image_score: str | float = "max",
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        self.extractor = extractor
        self.patch_size = patch_size
        self.max_feature_dim = max_feature_dim
        self.smoothing_sigma = smoothing_sigma
        self.top_fraction = None if image_score == "max" else float(image_score)
        self.scaler = FeatureScaler(feature_dim)
        self.adaptor = Adaptor(feature_dim, bias=adaptor_bias, init=adaptor_init, generator=generator)
        self.discriminator = Discriminator(feature_dim, hidden_dim, generator=generator)
        self._init_inference_cache()

    # ------------------------------------------------------------------ folded inference head
    def _init_inference_cache(self) -> None:
        # Plain attributes (not buffers): they never enter the state dict.
        self._fold_lock = threading.Lock()
        self._fold = None  # (key, weight (hidden, feature_dim), bias (hidden,))
        self._level_weights = {}  # layer channel counts → per-level weights, for self._fold
        self._operators = {}  # (shape, size, sigma, dtype, device) → (K_h, K_w)

    def __getstate__(self):
        state = super().__getstate__()
        for name in ("_fold_lock", "_fold", "_level_weights", "_operators"):
            state.pop(name, None)
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self._init_inference_cache()

    def _folded_tensors(self) -> list[torch.Tensor]:
        linear, batch_norm = self.discriminator.body[0], self.discriminator.body[1]
        tensors = [self.scaler.mean, self.scaler.scale, self.adaptor.linear.weight, linear.weight]
        tensors += [linear.bias, batch_norm.running_mean, batch_norm.running_var]
        tensors += [batch_norm.weight, batch_norm.bias, self.adaptor.linear.bias]
        return tensors

    def uses_folded_head(self) -> bool:
        """Whether calls now take the folded path: evaluation mode and gradients disabled."""
        return not (self.adaptor.training or self.discriminator.training or torch.is_grad_enabled())

    def folded_head(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The affine map of scaler → adaptor → Linear → BatchNorm (evaluation mode).

        ``BN(Linear(adaptor(scaler(f)))) == f @ weight.T + bias`` for patch features ``f`` of
        shape ``(n_patches, feature_dim)``. Computed in float64, returned in the parameters'
        dtype and device, and cached until one of the weights or statistics changes.

        Returns
        -------
        weight : Tensor, shape (hidden_dim, feature_dim)
        bias : Tensor, shape (hidden_dim,)
        """
        tensors = self._folded_tensors()
        key = tuple(
            None if t is None else (t.data_ptr(), _version(t), t.dtype, t.device, tuple(t.shape))
            for t in tensors
        )
        fold = self._fold
        if fold is not None and fold[0] == key:
            return fold[1], fold[2]
        with self._fold_lock, torch.no_grad():
            fold = self._fold
            if fold is not None and fold[0] == key:
                return fold[1], fold[2]
            mean, scale, adaptor_w, linear_w, linear_b, running_mean, running_var, gamma, beta, adaptor_b = (
                None if t is None else t.detach().double() for t in tensors
            )
            batch_norm = self.discriminator.body[1]
            gain = gamma / torch.sqrt(running_var + batch_norm.eps)
            combined = linear_w @ adaptor_w  # (hidden, feature_dim)
            weight = gain[:, None] * combined / scale[None, :]
            adapted_offset = -(adaptor_w @ (mean / scale))
            if adaptor_b is not None:
                adapted_offset = adapted_offset + adaptor_b
            bias = gain * (linear_w @ adapted_offset + linear_b - running_mean) + beta
            dtype = self.adaptor.linear.weight.dtype
            self._fold = (key, weight.to(dtype).contiguous(), bias.to(dtype).contiguous())
            self._level_weights = {}
            return self._fold[1], self._fold[2]

    def _weights_per_level(self, channels: tuple[int, ...]) -> list[torch.Tensor]:
        """The folded weight split by backbone level: one ``(channels_l, hidden_dim)`` matrix each."""
        weight, _ = self.folded_head()
        cached = self._level_weights.get(channels)
        if cached is not None and cached[0] is weight:
            return cached[1]
        total = sum(channels)
        pooling = channel_pooling_matrix(
            total, total if self.max_feature_dim is None else self.max_feature_dim, device=weight.device
        )
        if pooling.shape[0] != weight.shape[1]:
            raise ValueError(
                f"The layer maps have {total} channels in all, which give {pooling.shape[0]} patch "
                f"features; the model was built for {weight.shape[1]}"
            )
        full = weight.double() @ pooling  # (hidden, total)
        parts = [part.T.to(weight.dtype).contiguous() for part in full.split(list(channels), dim=1)]
        self._level_weights = {channels: (weight, parts)}
        return parts

    def _map_operators(self, shape, size, dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
        key = (tuple(shape), tuple(size), float(self.smoothing_sigma), dtype, device)
        operators = self._operators.get(key)
        if operators is None:
            operators = map_operators(shape, size, self.smoothing_sigma, dtype=dtype, device=device)
            if len(self._operators) >= _MAX_OPERATORS:
                self._operators = {}
            self._operators[key] = operators
        return operators

    def _discriminator_tail(self, hidden: torch.Tensor) -> torch.Tensor:
        """LeakyReLU and the last Linear layer on pre-activations ``(n_rows, hidden_dim)``, in place.

        Returns ``-D``, shape ``(n_rows,)``.
        """
        head = self.discriminator.head
        hidden = F.leaky_relu(hidden, self.discriminator.body[2].negative_slope, inplace=True)
        return -(torch.mv(hidden, head.weight[0]) + head.bias[0])

    def folded_patch_scores(self, layer_maps: list[torch.Tensor]) -> torch.Tensor:
        """Patch anomaly scores ``(n_images, h, w)`` straight from the backbone's layer maps.

        Equal (up to rounding) to ``patch_scores(patch_features(images))`` in evaluation
        mode, at a fraction of the cost: see the module's description. Works in channels-last
        layout, where the per-position products are single matrix products and averaging
        and resizing are fastest.
        """
        _, bias = self.folded_head()
        weights = self._weights_per_level(tuple(int(m.shape[1]) for m in layer_maps))
        areas = [int(m.shape[-2]) * int(m.shape[-1]) for m in layer_maps]
        target = tuple(int(v) for v in layer_maps[areas.index(max(areas))].shape[-2:])
        hidden_dim = bias.shape[0]
        channels_last = torch.channels_last
        # Pre-activations, one row per position of the largest map: (n * H * W, hidden_dim).
        hidden = None
        # Smallest map first: it takes the bias (a constant survives averaging and resizing).
        for level in sorted(range(len(layer_maps)), key=areas.__getitem__):
            feature_map = layer_maps[level].to(bias.dtype).contiguous(memory_format=channels_last)
            n, channels, h, w = feature_map.shape
            # Average over neighbourhoods on whichever side of the projection has fewer channels.
            pool_first = channels <= hidden_dim
            if pool_first:
                feature_map = aggregate_neighbourhood(feature_map, self.patch_size)
            rows = feature_map.permute(0, 2, 3, 1).reshape(n * h * w, channels)
            if hidden is not None and pool_first and (h, w) == target:
                if torch.jit.is_tracing():  # the ONNX exporter knows no out= arguments
                    hidden = torch.addmm(hidden, rows, weights[level])
                else:
                    torch.addmm(hidden, rows, weights[level], out=hidden)  # accumulate in place
                continue
            projected = torch.addmm(bias, rows, weights[level]) if hidden is None else rows @ weights[level]
            if not pool_first or (h, w) != target:
                maps = projected.view(n, h, w, hidden_dim).permute(0, 3, 1, 2)
                if not pool_first:
                    maps = aggregate_neighbourhood(maps, self.patch_size)
                if (h, w) != target:
                    maps = F.interpolate(maps, size=target, mode="bilinear", align_corners=False)
                projected = maps.contiguous(memory_format=channels_last).permute(0, 2, 3, 1)
                projected = projected.reshape(-1, hidden_dim)
            hidden = projected if hidden is None else hidden.add_(projected)
        return self._discriminator_tail(hidden).view(-1, *target)

    def layer_maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The frozen backbone's layer maps, float32, from images ``(n, 3, H, W)``.

        On device types listed in :attr:`backbone_autocast` the backbone runs under
        :func:`torch.autocast` with that dtype; everything after it stays in float32.
        """
        dtype = self.backbone_autocast.get(images.device.type) if self.backbone_autocast else None
        if dtype is None:
            return self.extractor(images)
        with torch.autocast(images.device.type, dtype=dtype):
            maps = self.extractor(images)
        return [m.float() for m in maps]

    def patch_features(self, images: torch.Tensor) -> torch.Tensor:
        """Frozen patch features, shape ``(n_images, feature_dim, h, w)``, from ``(n, 3, H, W)``."""
        return embed_patches(self.layer_maps(images), self.patch_size, self.max_feature_dim)

    def patch_scores(self, features: torch.Tensor) -> torch.Tensor:
        """Patch anomaly scores ``-D(adaptor(scaler(f)))``.

        Parameters
        ----------
        features : Tensor, shape (n_images, h, w, feature_dim)
            Channels last, as stored in the training cache.

        Returns
        -------
        Tensor, shape (n_images, h, w)
        """
        n, h, w, c = features.shape
        if self.uses_folded_head():
            weight, bias = self.folded_head()
            rows = features.reshape(n * h * w, c).to(weight.dtype)
            return self._discriminator_tail(torch.addmm(bias, rows, weight.T)).view(n, h, w)
        flat = features.reshape(n * h * w, c).to(self.scaler.mean.dtype)
        normality = self.discriminator(self.adaptor(self.scaler(flat)))
        return -normality.reshape(n, h, w)

    def score_patches(self, patch_scores: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Anomaly maps ``(n_images, *size)``: patch scores upsampled and smoothed.

        :func:`~sksimplenet.scoring.score_maps`; on the folded path as two matrix products.
        """
        if not self.uses_folded_head():
            return score_maps(patch_scores, size, self.smoothing_sigma)
        k_h, k_w = self._map_operators(patch_scores.shape[-2:], size, patch_scores.dtype, patch_scores.device)
        return apply_map_operators(patch_scores, k_h, k_w)

    def maps_and_scores(
        self, patch_scores: torch.Tensor, size: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Anomaly maps ``(n_images, *size)`` and image scores ``(n_images,)`` from patch scores."""
        maps = self.score_patches(patch_scores, size)
        return maps, image_scores(maps, self.top_fraction)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Anomaly maps ``(n_images, H, W)`` and image scores ``(n_images,)``; higher = worse.

        In evaluation mode without gradients this takes the folded path (see the module's
        description); otherwise the reference path.
        """
        if self.uses_folded_head():
            patch_scores = self.folded_patch_scores(self.layer_maps(images))
        else:
            patch_scores = self.patch_scores(self.patch_features(images).permute(0, 2, 3, 1))
        return self.maps_and_scores(patch_scores, images.shape[-2:])
