"""The SimpleNet training loop over cached patch features."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from .networks import add_gaussian_noise, truncated_l1_loss


def train_discriminator(
    features: torch.Tensor,
    scaler: nn.Module,
    adaptor: nn.Module,
    discriminator: nn.Module,
    *,
    epochs: int = 160,
    batch_size: int = 4,
    sigma: float = 0.015,
    margin: float = 0.5,
    adaptor_lr: float = 1e-4,
    discriminator_lr: float = 2e-4,
    weight_decay: float = 1e-5,
    patch_fraction: float = 1.0,
    seed: int = 0,
    device: torch.device | str = "cpu",
    callback: Callable[[int, float], None] | None = None,
    progress: bool = False,
) -> list[float]:
    """Train the adaptor and discriminator on normal patch features; return the loss history.

    Each step takes the patches of ``batch_size`` images, adapts them (``q``), adds Gaussian
    noise (``q⁻ = q + ε``) and minimises the truncated L1 loss of the discriminator on both.
    As in the official code, ``q`` and ``q⁻`` pass the discriminator in one batch, so its
    BatchNorm statistics cover both.

    Parameters
    ----------
    features : Tensor, shape (n_images, h, w, feature_dim)
        Cached frozen features of the normal training images (any float dtype, any device;
        moved batch by batch).
    scaler, adaptor, discriminator : nn.Module
        Already on ``device``. ``scaler`` is fixed; the other two are trained in place.
    epochs, batch_size, sigma, margin, adaptor_lr, discriminator_lr, weight_decay
        The method's hyper-parameters (see :class:`~sksimplenet.SimpleNetDetector`).
    patch_fraction : float
        Share of each batch's patches used in a step, drawn at random; 1.0 (the paper)
        uses all. Smaller values make epochs proportionally cheaper.
    seed : int
        Seeds the image order, the patch subsets and the noise.
    callback : callable, optional
        Called as ``callback(epoch, mean_loss)`` after each epoch (0-based); it may raise to
        stop training.
    progress : bool
        Show a progress bar over epochs.

    Returns
    -------
    list of float
        Mean loss of each epoch.

    Raises
    ------
    FloatingPointError
        If the loss becomes NaN or infinite.
    """
    device = torch.device(device)
    n_images = features.shape[0]
    order_generator = torch.Generator().manual_seed(seed)
    noise_generator = torch.Generator(device=device).manual_seed(seed + 1)
    optimizer = torch.optim.Adam(
        [
            {"params": adaptor.parameters(), "lr": adaptor_lr},
            {"params": discriminator.parameters(), "lr": discriminator_lr},
        ],
        weight_decay=weight_decay,
    )
    adaptor.train()
    discriminator.train()
    history: list[float] = []
    epoch_range = range(epochs)
    if progress:
        from tqdm.auto import tqdm

        epoch_range = tqdm(epoch_range, desc="training", unit="epoch")
    for epoch in epoch_range:
        order = torch.randperm(n_images, generator=order_generator)
        # Indices on the cache's device: a cache on the GPU is then read without host syncs.
        order_on_cache = order.to(features.device)
        total = torch.zeros((), device=device)
        for start in range(0, n_images, batch_size):
            batch = features[order_on_cache[start : start + batch_size]]
            batch = batch.reshape(-1, batch.shape[-1])
            if patch_fraction < 1.0:
                keep = max(1, int(round(patch_fraction * len(batch))))
                subset = torch.randperm(len(batch), generator=order_generator)[:keep]
                batch = batch[subset.to(batch.device)]
            normal_scores, anomalous_scores = _discriminate(
                batch, scaler, adaptor, discriminator, sigma, noise_generator, device
            )
            loss = truncated_l1_loss(normal_scores, anomalous_scores, margin)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach() * len(order[start : start + batch_size])
        mean_loss = float(total) / n_images
        if not math.isfinite(mean_loss):
            raise FloatingPointError(
                f"The training loss became {mean_loss} in epoch {epoch + 1}. Likely causes: "
                "non-finite or huge feature values (check the images and the backbone's "
                "weights) or a learning rate that is too high."
            )
        history.append(mean_loss)
        if callback is not None:
            callback(epoch, mean_loss)
    adaptor.eval()
    _recompute_batchnorm_statistics(
        features, scaler, adaptor, discriminator, batch_size, sigma, noise_generator, device
    )
    discriminator.eval()
    return history


def _discriminate(patches, scaler, adaptor, discriminator, sigma, generator, device):
    """Discriminator outputs for adapted patches ``q`` and their noised copies ``q⁻``.

    ``q`` and ``q⁻`` pass in one batch, as in the official code, so BatchNorm's statistics
    cover both; the statistics pass after training must see exactly what training saw.

    Returns
    -------
    normal_scores, anomalous_scores : Tensor, shape (n_patches,) each
    """
    normal = adaptor(scaler(patches.to(device, non_blocking=True).float()))
    anomalous = add_gaussian_noise(normal, sigma, generator)
    scores = discriminator(torch.cat([normal, anomalous]))
    return scores[: len(normal)], scores[len(normal) :]


@torch.no_grad()
def _recompute_batchnorm_statistics(
    features, scaler, adaptor, discriminator, batch_size, sigma, generator, device
):
    """Set BatchNorm's running statistics to the final weights' averages over the training batches.

    The running averages lag the weights: after few training steps they are still close to
    their initial values, and the inference-mode discriminator is then arbitrary (it can
    even rank anomalies as normal). One pass over the training batches, normal and noised
    as in training, without gradients, gives the exact averages for the weights kept.
    """
    norms = [m for m in discriminator.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the pass
    discriminator.train()
    for start in range(0, features.shape[0], batch_size):
        patches = features[start : start + batch_size].reshape(-1, features.shape[-1])
        _discriminate(patches, scaler, adaptor, discriminator, sigma, generator, device)
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
