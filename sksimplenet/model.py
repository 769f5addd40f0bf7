"""The whole SimpleNet inference graph as one ``nn.Module``: images → anomaly maps, scores."""

from __future__ import annotations

import torch
from torch import nn

from .backbones import FeatureExtractor
from .features import embed_patches
from .networks import Adaptor, Discriminator, FeatureScaler
from .scoring import image_scores, score_maps


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
    smoothing_sigma : float
        Gaussian smoothing of the anomaly map, in pixels of the input.
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
        smoothing_sigma: float = 4.0,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        self.extractor = extractor
        self.patch_size = patch_size
        self.max_feature_dim = max_feature_dim
        self.smoothing_sigma = smoothing_sigma
        self.scaler = FeatureScaler(feature_dim)
        self.adaptor = Adaptor(feature_dim, bias=adaptor_bias, generator=generator)
        self.discriminator = Discriminator(feature_dim, hidden_dim, generator=generator)

    def patch_features(self, images: torch.Tensor) -> torch.Tensor:
        """Frozen patch features, shape ``(n_images, feature_dim, h, w)``, from ``(n, 3, H, W)``."""
        return embed_patches(self.extractor(images), self.patch_size, self.max_feature_dim)

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
        flat = features.reshape(n * h * w, c).to(self.scaler.mean.dtype)
        normality = self.discriminator(self.adaptor(self.scaler(flat)))
        return -normality.reshape(n, h, w)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Anomaly maps ``(n_images, H, W)`` and image scores ``(n_images,)``; higher = worse."""
        features = self.patch_features(images).permute(0, 2, 3, 1)
        maps = score_maps(self.patch_scores(features), images.shape[-2:], self.smoothing_sigma)
        return maps, image_scores(maps)
