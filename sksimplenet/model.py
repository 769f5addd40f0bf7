"""The whole SimpleNet inference graph as one ``nn.Module``: images → anomaly maps, scores.

Two paths compute the same numbers:

- the reference path follows the method step by step (patch embedding of the layer maps,
  scaler, adaptor, discriminator, upsampling, smoothing); training uses it;
- the folded path, used for inference (evaluation mode, no gradients), is a
  :class:`~sksimplenet.folded.FoldedHead`: everything from the layer maps up to the
  discriminator's BatchNorm composed into per-level matrix products.

The folded head is built from the weights whenever the model enters evaluation mode
(``eval()``), loads a state dict, moves or changes dtype; it is not part of the state dict
and not pickled. Weights changed in place afterwards are seen after the next ``eval()``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from .backbones import FeatureExtractor
from .features import embed_patches
from .folded import FoldedHead
from .networks import Adaptor, Discriminator, FeatureScaler
from .precision import backbone_dtype
from .scoring import apply_map_operators, image_scores, score_maps

#: The estimator parameters a :class:`SimpleNetModel` is built from (:func:`make_model`).
MODEL_PARAMS = (
    "patch_size",
    "count_padding",
    "feature_dim",
    "hidden_dim",
    "adaptor_bias",
    "adaptor_init",
    "smoothing_sigma",
    "image_score",
    "precision",
)


def make_model(
    extractor: FeatureExtractor,
    n_features: int,
    params: Mapping[str, object],
    generator: torch.Generator | None = None,
) -> SimpleNetModel:
    """A fresh :class:`SimpleNetModel` with an estimator's settings (fit and loading use it).

    Parameters
    ----------
    extractor : FeatureExtractor
    n_features : int
        Width of the patch features.
    params : mapping
        ``SimpleNetDetector.get_params()``, or any mapping with the keys of :data:`MODEL_PARAMS`.
    generator : torch.Generator, optional
        Seeds the adaptor's and the discriminator's initial weights.
    """
    return SimpleNetModel(
        extractor, n_features, **{name: params[name] for name in MODEL_PARAMS}, generator=generator
    )


def _refold_after_loading(model: SimpleNetModel, incompatible_keys) -> None:
    model._refold()


class SimpleNetModel(nn.Module):
    """Frozen feature extractor, feature scaler, adaptor and discriminator in one module.

    Parameters
    ----------
    extractor : FeatureExtractor
    n_features : int
        Width of the patch features :func:`~sksimplenet.features.embed_patches` gives.
    patch_size : int
    count_padding : bool
    feature_dim : int or None
        Passed to :func:`~sksimplenet.features.embed_patches`: the neighbourhood size, its
        border rule and the upper bound on the patch-feature width.
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
        n_features: int,
        *,
        patch_size: int,
        count_padding: bool,
        feature_dim: int | None,
        hidden_dim: int,
        adaptor_bias: bool,
        adaptor_init: str,
        smoothing_sigma: float,
        image_score: str | float,
        precision: str,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        self.extractor = extractor
        self.patch_size = patch_size
        self.count_padding = count_padding
        self.feature_dim = feature_dim
        self.smoothing_sigma = smoothing_sigma
        self.precision = precision
        self.image_score = image_score
        self.scaler = FeatureScaler(n_features)
        self.adaptor = Adaptor(n_features, bias=adaptor_bias, init=adaptor_init, generator=generator)
        self.discriminator = Discriminator(n_features, hidden_dim, generator=generator)
        self.folded_head: FoldedHead | None = None
        self.register_load_state_dict_post_hook(_refold_after_loading)

    # ------------------------------------------------------------------ folded inference head
    def _refold(self) -> None:
        """Build the folded head from the current weights when evaluating, else drop it."""
        if "discriminator" not in self._modules:  # still in __init__
            return
        evaluating = not (self.adaptor.training or self.discriminator.training)
        self.folded_head = (
            FoldedHead(
                self.scaler,
                self.adaptor,
                self.discriminator,
                patch_size=self.patch_size,
                count_padding=self.count_padding,
                feature_dim=self.feature_dim,
                smoothing_sigma=self.smoothing_sigma,
            )
            if evaluating
            else None
        )

    def train(self, mode: bool = True) -> SimpleNetModel:
        super().train(mode)
        self._refold()
        return self

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        self._refold()  # moved or converted: a head in the new device and dtype
        return self

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("folded_head", None)
        return state

    def __setstate__(self, state):
        # Pickles written before the names followed the estimator's parameters.
        if "max_feature_dim" in state:
            state["feature_dim"] = state.pop("max_feature_dim")
        if "top_fraction" in state:
            fraction = state.pop("top_fraction")
            state["image_score"] = "max" if fraction is None else fraction
        state.setdefault("precision", "float32")
        # Before count_padding existed, border neighbourhoods averaged only the map's positions.
        state.setdefault("count_padding", False)
        super().__setstate__(state)
        self.folded_head = None
        self._refold()

    def uses_folded_head(self) -> bool:
        """Whether calls now take the folded path: evaluation mode and gradients disabled."""
        return (
            self.folded_head is not None
            and not (self.adaptor.training or self.discriminator.training)
            and not torch.is_grad_enabled()
        )

    def layer_maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The frozen backbone's layer maps, float32, from images ``(n, 3, H, W)``.

        With a reduced :attr:`precision` the backbone runs under :func:`torch.autocast`
        in that dtype; its maps are returned as float32.
        """
        dtype = backbone_dtype(self.precision, images.device)
        if dtype == torch.float32:
            return self.extractor(images)
        with torch.autocast(images.device.type, dtype=dtype):
            maps = self.extractor(images)
        return [m.float() for m in maps]

    def patch_features(self, images: torch.Tensor) -> torch.Tensor:
        """Frozen patch features, shape ``(n_images, feature_dim, h, w)``, from ``(n, 3, H, W)``."""
        return embed_patches(
            self.layer_maps(images),
            patch_size=self.patch_size,
            count_padding=self.count_padding,
            feature_dim=self.feature_dim,
        )

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
        if self.uses_folded_head():
            return self.folded_head.scores_from_features(features)
        n, h, w, c = features.shape
        flat = features.reshape(n * h * w, c).to(self.scaler.mean.dtype)
        normality = self.discriminator(self.adaptor(self.scaler(flat)))
        return -normality.reshape(n, h, w)

    def score_patches(self, patch_scores: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Anomaly maps ``(n_images, *size)``: patch scores upsampled and smoothed.

        :func:`~sksimplenet.scoring.score_maps`; on the folded path as two matrix products.
        """
        if not self.uses_folded_head() or torch.jit.is_tracing():  # traced: sizes stay symbolic
            return score_maps(patch_scores, size, self.smoothing_sigma)
        k_h, k_w = self.folded_head.map_operators(
            patch_scores.shape[-2:], size, patch_scores.dtype, patch_scores.device
        )
        return apply_map_operators(patch_scores, k_h, k_w)

    def maps_and_scores(
        self, patch_scores: torch.Tensor, size: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Anomaly maps ``(n_images, *size)`` and image scores ``(n_images,)`` from patch scores."""
        maps = self.score_patches(patch_scores, size)
        return maps, image_scores(maps, self.image_score)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Anomaly maps ``(n_images, H, W)`` and image scores ``(n_images,)``; higher = worse.

        In evaluation mode without gradients this takes the folded path (see the module's
        description); otherwise the reference path.
        """
        if self.uses_folded_head():
            patch_scores = self.folded_head.scores_from_layer_maps(self.layer_maps(images))
        else:
            patch_scores = self.patch_scores(self.patch_features(images).permute(0, 2, 3, 1))
        return self.maps_and_scores(patch_scores, images.shape[-2:])
