"""SimpleNet's trainable parts: feature adaptor, anomalous feature generator, discriminator, loss.

All modules work on flat batches of patch features, shape ``(n_patches, n_features)``.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import nn

_SCALER_BLOCK = 1 << 22  # values per block when FeatureScaler.fit sums over the cache


def _init_linear(layer: nn.Linear, generator: torch.Generator | None) -> None:
    # Xavier-normal weights as in the official code; PyTorch's default bias range.
    nn.init.xavier_normal_(layer.weight, generator=generator)
    if layer.bias is not None:
        bound = 1.0 / math.sqrt(layer.in_features)
        nn.init.uniform_(layer.bias, -bound, bound, generator=generator)


class FeatureScaler(nn.Module):
    """Per-channel affine standardisation ``(x - mean) / scale`` with fixed statistics.

    With ``mean = 0`` and ``scale = 1`` it is the identity (the paper's setting).
    """

    def __init__(self, n_features: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("scale", torch.ones(n_features))

    def fit(self, features: torch.Tensor, eps: float = 1e-6) -> FeatureScaler:
        """Set the statistics from training features of shape ``(n_patches, n_features)``.

        Two passes over row blocks with float64 sums: the features (any dtype, any device,
        possibly memory-mapped) are never copied whole. Channels whose spread is at most
        ``eps`` (dead channels) keep a scale of 1, as in scikit-learn's ``StandardScaler``:
        dividing by a near-zero spread would turn float rounding into huge values.
        """
        n_rows, width = features.shape
        step = max(1, _SCALER_BLOCK // max(width, 1))
        blocks = [features[start : start + step] for start in range(0, n_rows, step)]
        total = torch.zeros(width, dtype=torch.float64, device=features.device)
        for block in blocks:
            total += block.double().sum(0)
        mean = total / n_rows
        squares = torch.zeros_like(total)
        for block in blocks:
            squares += (block.double() - mean).square().sum(0)
        std = (squares / max(n_rows - 1, 1)).sqrt()
        self.mean.copy_(mean)
        self.scale.copy_(torch.where(std > eps, std, torch.ones_like(std)))
        return self

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return (features - self.mean) / self.scale

    def affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``forward`` as ``features * diagonal + bias``, in float64.

        Returns
        -------
        diagonal : Tensor, shape (n_features,)
            The diagonal of the (diagonal) weight matrix.
        bias : Tensor, shape (n_features,)
        """
        scale = self.scale.detach().double()
        return 1.0 / scale, -self.mean.detach().double() / scale


class Adaptor(nn.Module):
    """Feature adaptor: one fully-connected layer, no bias, same input and output width.

    ``init="identity"`` starts it as the identity map; ``"xavier"`` draws Xavier-normal
    weights as the official code does.
    """

    def __init__(self, n_features: int, *, bias: bool, init: str, generator: torch.Generator | None = None):
        super().__init__()
        self.linear = nn.Linear(n_features, n_features, bias=bias)
        if init == "identity":
            # Training starts from the features themselves, so the noise scale applies to them.
            with torch.no_grad():
                self.linear.weight.copy_(torch.eye(n_features))
                if bias:
                    self.linear.bias.zero_()
        elif init == "xavier":
            _init_linear(self.linear, generator)
        else:
            raise ValueError(f"Unknown adaptor init {init!r}: use 'identity' or 'xavier'")

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features)

    def affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``forward`` as ``features @ weight.T + bias``, in float64.

        Returns
        -------
        weight : Tensor, shape (n_features, n_features)
        bias : Tensor, shape (n_features,); zeros without a bias
        """
        weight = self.linear.weight.detach().double()
        bias = self.linear.bias
        return weight, torch.zeros_like(weight[:, 0]) if bias is None else bias.detach().double()


class Discriminator(nn.Module):
    """Linear → BatchNorm → LeakyReLU(0.2) → Linear: one normality score per patch.

    Input ``(n_patches, n_features)``; output ``(n_patches,)``, positive = normal.

    In evaluation mode the first two layers are one affine map (:meth:`affine`) and the rest
    is :meth:`tail`: ``forward(f) == tail(f @ weight.T + bias)``. The folded inference head
    (:mod:`sksimplenet.folded`) uses the two, so that this class alone knows its layout.
    """

    def __init__(self, n_features: int, hidden_dim: int, *, generator: torch.Generator | None = None):
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(n_features, hidden_dim),
            nn.BatchNorm1d(hidden_dim),
            nn.LeakyReLU(0.2),
        )
        self.head = nn.Linear(hidden_dim, 1)
        _init_linear(self.body[0], generator)
        _init_linear(self.head, generator)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(features)).squeeze(-1)

    def affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Linear and BatchNorm (with its running statistics) as one affine map, in float64.

        Returns
        -------
        weight : Tensor, shape (hidden_dim, n_features)
        bias : Tensor, shape (hidden_dim,)
            The hidden pre-activations are ``features @ weight.T + bias``.
        """
        linear, norm = self.body[0], self.body[1]
        gain = norm.weight.detach().double() / torch.sqrt(norm.running_var.detach().double() + norm.eps)
        weight = gain[:, None] * linear.weight.detach().double()
        bias = gain * (linear.bias.detach().double() - norm.running_mean.detach().double())
        return weight, bias + norm.bias.detach().double()

    def tail(self, hidden: torch.Tensor) -> torch.Tensor:
        """LeakyReLU and the last Linear layer: normality scores ``(n_rows,)`` from hidden
        pre-activations ``(n_rows, hidden_dim)``, which are overwritten (in place)."""
        hidden = nn.functional.leaky_relu(hidden, self.body[2].negative_slope, inplace=True)
        return torch.mv(hidden, self.head.weight[0].to(hidden.dtype)) + self.head.bias[0].to(hidden.dtype)


def add_gaussian_noise(
    features: torch.Tensor, sigma, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Anomalous feature generator: ``features + ε`` with ``ε ~ N(0, sigma²)`` i.i.d.

    Parameters
    ----------
    features : Tensor, shape (n_patches, n_features)
    sigma : float or sequence of float
        Noise standard deviation. A sequence draws one of its values for each patch
        (noise at several scales, as the official code's ``mix_noise``).
    generator : torch.Generator, optional
        On the features' device.
    """
    noise = torch.randn(features.shape, generator=generator, device=features.device, dtype=features.dtype)
    if isinstance(sigma, numbers.Real):  # NumPy scalars too
        return features + float(sigma) * noise
    scales = torch.as_tensor(sigma, dtype=features.dtype, device=features.device)
    choice = torch.randint(len(scales), (len(features), 1), generator=generator, device=features.device)
    return features + scales[choice] * noise


def truncated_l1_loss(
    normal_scores: torch.Tensor, anomalous_scores: torch.Tensor, margin: float = 0.5
) -> torch.Tensor:
    """``mean(max(0, margin − D(q))) + mean(max(0, margin + D(q⁻)))``.

    Parameters
    ----------
    normal_scores : Tensor, shape (n_patches,)
        Discriminator outputs on adapted normal features.
    anomalous_scores : Tensor, shape (n_patches,)
        Discriminator outputs on the noised features.
    margin : float
        The truncation thresholds ``th+ = th- = margin``.
    """
    normal_loss = torch.clamp(margin - normal_scores, min=0).mean()
    anomalous_loss = torch.clamp(margin + anomalous_scores, min=0).mean()
    return normal_loss + anomalous_loss
