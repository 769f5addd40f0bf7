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
  through LeakyReLU and the last Linear layer; on a CPU a few images at a time, so that the
  hidden pre-activations stay in the cache. Upsampling and smoothing of the patch scores
  are two small matrix products (:func:`~sksimplenet.scoring.map_operators`).

The folded weights are computed on first use and cached outside the state dict (saved
model files and ``load_state_dict`` are unaffected); the cache is rebuilt when a weight
changes, moves or changes dtype, and is not pickled.
"""

from __future__ import annotations

import threading

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import FeatureExtractor
from .features import aggregate_neighbourhood, embed_patches
from .networks import Adaptor, Discriminator, FeatureScaler
from .precision import backbone_dtype
from .scoring import apply_map_operators, image_scores, map_operators, score_maps

_MAX_OPERATORS = 8
# Size of the hidden pre-activations the folded head builds at once on a CPU: small enough
# to stay in the cache between the product, LeakyReLU and the last layer (docs/performance.md).
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


def _version(tensor: torch.Tensor):
    try:
        return tensor._version
    except RuntimeError:  # inference tensors carry no version counter
        return None


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
    precision : {"float32", "bfloat16", "float16", "auto"}
        Arithmetic of the frozen backbone (:mod:`sksimplenet.precision`); everything after
        it stays float32. Kept as the attribute ``precision``, which may be changed.
    generator : torch.Generator, optional
        Seeds the initial weights.
    """

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
        precision: str = "float32",
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        self.extractor = extractor
        self.patch_size = patch_size
        self.max_feature_dim = max_feature_dim
        self.smoothing_sigma = smoothing_sigma
        self.precision = precision
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
        and resizing are fastest. On a CPU the pre-activations of the discriminator's hidden
        layer are built a few images at a time, in one reused buffer of about
        ``_CPU_CHUNK_BYTES``, so that the last steps find them in the cache.
        """
        _, bias = self.folded_head()
        weights = self._weights_per_level(tuple(int(m.shape[1]) for m in layer_maps))
        areas = [int(m.shape[-2]) * int(m.shape[-1]) for m in layer_maps]
        target = tuple(int(v) for v in layer_maps[areas.index(max(areas))].shape[-2:])
        hidden_dim = bias.shape[0]
        channels_last = torch.channels_last
        # Levels projected now, for the whole batch: hidden maps (n, hidden_dim, h, w), resized
        # to the target grid chunk by chunk. Levels already on that grid: feature rows
        # (n, H * W, channels), projected chunk by chunk into the hidden pre-activations.
        hidden_maps, target_rows = [], []
        # Smallest map first: it takes the bias (a constant survives averaging and resizing).
        for level in sorted(range(len(layer_maps)), key=areas.__getitem__):
            feature_map = layer_maps[level].to(bias.dtype).contiguous(memory_format=channels_last)
            _, channels, h, w = feature_map.shape
            # Average over neighbourhoods on whichever side of the projection has fewer channels.
            pool_first = channels <= hidden_dim
            if pool_first:
                feature_map = aggregate_neighbourhood(feature_map, self.patch_size)
            rows = feature_map.permute(0, 2, 3, 1).flatten(1, 2)  # (n, h * w, channels)
            if pool_first and (h, w) == target:
                target_rows.append((rows, weights[level]))
                continue
            rows = rows.flatten(0, 1)
            projected = rows @ weights[level] if hidden_maps else torch.addmm(bias, rows, weights[level])
            maps = projected.view(-1, h, w, hidden_dim).permute(0, 3, 1, 2)
            hidden_maps.append(maps if pool_first else aggregate_neighbourhood(maps, self.patch_size))

        if torch.jit.is_tracing():  # the ONNX exporter knows no out= arguments: no buffer
            hidden = _preactivations(hidden_maps, target_rows, bias, target, slice(None))
            return self._discriminator_tail(hidden).view(-1, *target)
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
            scores.append(self._discriminator_tail(hidden))
        return torch.cat(scores).view(n, *target)

    def layer_maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The frozen backbone's layer maps, float32, from images ``(n, 3, H, W)``.

        With a reduced :attr:`precision` the backbone runs under :func:`torch.autocast`
        in that dtype; its maps are returned as float32.
        """
        dtype = backbone_dtype(getattr(self, "precision", "float32"), images.device)
        if dtype == torch.float32:
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
