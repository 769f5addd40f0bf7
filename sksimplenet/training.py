"""The SimpleNet training loop over cached patch features."""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from .networks import add_gaussian_noise, truncated_l1_loss
from .precision import training_dtype

_VALIDATION_PATCHES = 16384  # held-out patches scored per epoch: a fixed, seeded subset


@dataclass
class TrainingHistory:
    """What training records per epoch.

    Attributes
    ----------
    loss : list of float
        Mean training loss of each epoch.
    validation : list of float
        Held-out criterion of each epoch (see :func:`validation_loss`); empty when no
        held-out features were given.
    dtype : {"float32", "bfloat16"}
        What the steps computed in: ``settings.precision`` resolved for the device.
    """

    loss: list[float] = field(default_factory=list)
    validation: list[float] = field(default_factory=list)
    dtype: str = "float32"


@dataclass(frozen=True)
class TrainingSettings:
    """The settings of one training run; every field is required (the estimator holds the
    defaults, :class:`~sksimplenet.SimpleNetDetector` documents them).

    Attributes
    ----------
    epochs : int
        Passes over the training images.
    batch_size : int
        Images per step.
    patch_fraction : float in (0, 1]
        Share of each step's patches used, drawn at random; 1.0 (the paper) uses all.
    sigma : float or tuple of float
        Standard deviation of the Gaussian noise that makes anomalous features; a tuple
        draws one of its values per patch.
    margin : float
        Truncation thresholds of the L1 loss.
    adaptor_lr, discriminator_lr, weight_decay : float
        Adam's learning rates and weight decay.
    weight_averaging : float in (0, 1) or None
        Decay per step of an exponential moving average of the weights, which is what
        training returns; None keeps the last step's weights (the paper).
    synthetic_share : float
        Synthetic anomalous features per step, as a share of the step's normal patches
        (used only when synthetic features are given).
    precision : {"float32", "bfloat16", "auto"}
        Arithmetic of the discriminator in the training steps and the held-out criterion
        (:func:`sksimplenet.precision.training_dtype`); the weights stay float32, and the
        BatchNorm pass after training runs in float32, as scoring does.
    seed : int
        Seeds the image order, the patch subsets, the synthetic draws and the noise.
    """

    epochs: int
    batch_size: int
    patch_fraction: float
    sigma: float | tuple[float, ...]
    margin: float
    adaptor_lr: float
    discriminator_lr: float
    weight_decay: float
    weight_averaging: float | None
    synthetic_share: float
    precision: str
    seed: int

    @classmethod
    def from_params(cls, params: dict, *, epochs: int, seed: int) -> TrainingSettings:
        """The settings named by a detector's parameters (``SimpleNetDetector.get_params()``),
        with ``epochs`` resolved to a number and the run's ``seed``; other keys are ignored."""
        sigma = params["sigma"]
        return cls(
            epochs=epochs,
            sigma=tuple(sigma) if isinstance(sigma, (tuple, list)) else sigma,
            precision=params["training_precision"],
            seed=seed,
            **{
                name: params[name]
                for name in cls.__dataclass_fields__
                if name not in ("epochs", "sigma", "precision", "seed")
            },
        )


@dataclass(frozen=True)
class WeakAnomalies:
    """Anomalous images known only by their label (no mask): multiple-instance learning.

    Each step draws ``images_per_step`` of them and trains their ``top_positions`` least
    normal positions (as the discriminator scores them at that moment) as anomalous: an image
    labelled anomalous has a defect somewhere, most likely where it looks least normal.

    Attributes
    ----------
    features : Tensor, shape (n_images, h, w, feature_dim)
    images_per_step : int
    top_positions : int
        Positions of each image taken, at most ``h * w``.
    """

    features: torch.Tensor
    images_per_step: int
    top_positions: int


class _Steps:
    """The patches of each training step: a batch of images, a subset of their patches, and
    the anomalous features drawn in proportion (synthetic, labelled with a mask, the top
    positions of images labelled without one). Training and the BatchNorm pass after it draw
    from here, so that both see the same mix."""

    def __init__(
        self,
        features,
        synthetic,
        settings: TrainingSettings,
        generator: torch.Generator,
        labelled: torch.Tensor | None = None,
        weak: WeakAnomalies | None = None,
        extra_normal: torch.Tensor | None = None,
    ):
        self.features = features
        self.extra_normal = extra_normal if extra_normal is not None and len(extra_normal) else None
        self.synthetic = synthetic if synthetic is not None and len(synthetic) else None
        self.labelled = labelled if labelled is not None and len(labelled) else None
        self.weak = weak if weak is not None and len(weak.features) else None
        self.settings = settings
        self.generator = generator

    def patches(self, images: torch.Tensor, subset: bool = True, selector: Callable | None = None):
        """Normal patches ``(n, feature_dim)`` of ``images`` (indices) and anomalous ones or None.

        ``selector`` scores features ``(m, feature_dim)`` with the current networks (higher =
        more normal); it picks the positions of the weakly labelled images.
        """
        batch = self.features[images.to(self.features.device)]
        batch = batch.reshape(-1, batch.shape[-1])
        if subset and self.settings.patch_fraction < 1.0:
            keep = max(1, int(round(self.settings.patch_fraction * len(batch))))
            chosen = torch.randperm(len(batch), generator=self.generator)[:keep]
            batch = batch[chosen.to(batch.device)]
        if self.extra_normal is not None:
            # As many as if the extra positions were spread evenly over the normal images'.
            share = len(self.extra_normal) / math.prod(self.features.shape[:3])
            batch = torch.cat([batch, self._draw(self.extra_normal, max(1, round(share * len(batch))))])
        if self.settings.synthetic_share <= 0:
            return batch, None
        count = max(1, int(round(self.settings.synthetic_share * len(batch))))
        drawn = []
        if self.synthetic is not None:
            drawn.append(self._draw(self.synthetic, count))
        # Labelled anomalies add as many features as the synthetic ones, split between the
        # masked positions and the weakly labelled images' top positions when both exist.
        pools = [] if self.labelled is None else [self.labelled]
        if self.weak is not None:
            pools.append(self._top_positions(selector))
        for i, pool in enumerate(pools):
            drawn.append(self._draw(pool, count // len(pools) + (i < count % len(pools))))
        if not drawn:
            return batch, None
        return batch, drawn[0] if len(drawn) == 1 else torch.cat(drawn)

    def _draw(self, pool: torch.Tensor, count: int) -> torch.Tensor:
        drawn = torch.randint(len(pool), (count,), generator=self.generator)
        return pool[drawn.to(pool.device)]

    @torch.no_grad()
    def _top_positions(self, selector: Callable) -> torch.Tensor:
        """The least normal positions of ``images_per_step`` weakly labelled images, ``(n, feature_dim)``."""
        weak = self.weak
        chosen = torch.randint(len(weak.features), (weak.images_per_step,), generator=self.generator)
        images = weak.features[chosen.to(weak.features.device)]
        flat = images.reshape(len(images), -1, images.shape[-1])
        normality = selector(flat.reshape(-1, flat.shape[-1])).reshape(len(images), -1)
        top = normality.topk(weak.top_positions, dim=1, largest=False).indices.to(flat.device)
        return flat[torch.arange(len(flat), device=flat.device)[:, None], top].reshape(-1, flat.shape[-1])


def _selector(scaler, adaptor, discriminator, device):
    """Normality of features ``(m, feature_dim)`` with the networks as they are, in evaluation
    mode (BatchNorm's running statistics), without gradients or changes to the networks."""

    def normality(features: torch.Tensor) -> torch.Tensor:
        modes = adaptor.training, discriminator.training
        adaptor.eval()
        discriminator.eval()
        try:
            return discriminator(adaptor(scaler(features.to(device, non_blocking=True).float())))
        finally:
            adaptor.train(modes[0])
            discriminator.train(modes[1])

    return normality


def train_discriminator(
    features: torch.Tensor,
    scaler: nn.Module,
    adaptor: nn.Module,
    discriminator: nn.Module,
    settings: TrainingSettings,
    *,
    synthetic_features: torch.Tensor | None = None,
    labelled_features: torch.Tensor | None = None,
    weak_anomalies: WeakAnomalies | None = None,
    extra_normal_features: torch.Tensor | None = None,
    validation_features: torch.Tensor | None = None,
    device: torch.device | str,
    callback: Callable[[int, float], None] | None = None,
    progress: bool = False,
) -> TrainingHistory:
    """Train the adaptor and discriminator on normal patch features; return their history.

    Each step takes the patches of ``settings.batch_size`` images, adapts them (``q``), adds
    Gaussian noise (``q⁻ = q + ε``) and minimises the truncated L1 loss of the discriminator
    on both. Synthetic anomalous features, when given, are adapted and scored as anomalous
    beside ``q⁻`` (one loss term over all anomalous features), and so are the features of
    labelled anomalies. As in the official code, all
    of a step's features pass the discriminator in one batch, so its BatchNorm statistics
    cover them together.

    Parameters
    ----------
    features : Tensor, shape (n_images, h, w, feature_dim)
        Cached frozen features of the normal training images (any float dtype, any device;
        moved batch by batch).
    scaler, adaptor, discriminator : nn.Module
        Already on ``device``. ``scaler`` is fixed; the other two are trained in place and
        end with the weights kept (the averaged ones with ``settings.weight_averaging``).
    settings : TrainingSettings
    synthetic_features : Tensor, shape (n_synthetic, feature_dim), optional
        Features of synthetic defects (:mod:`sksimplenet.synthesis`), drawn at random,
        ``settings.synthetic_share`` of each step's normal patches.
    labelled_features : Tensor, shape (n_labelled, feature_dim), optional
        Features of real defects (positions inside the masks of images labelled anomalous):
        each step draws as many of them as synthetic features.
    weak_anomalies : WeakAnomalies, optional
        Images labelled anomalous without a mask: each step draws as many features from their
        least normal positions as synthetic features (half of them when
        ``labelled_features`` are given too, which take the other half).
    extra_normal_features : Tensor, shape (n_extra, feature_dim), optional
        More normal features (positions of anomalous images far from their defects): each
        step draws as many of them as if they were spread evenly over the images of
        ``features``.
    validation_features : Tensor, shape (n_held_out, h, w, feature_dim), optional
        Normal images kept out of the steps: after each epoch :func:`validation_loss` of
        the weights that would be returned is recorded.
    device : torch.device or str
    callback : callable, optional
        Called as ``callback(epoch, mean_loss)`` after each epoch (0-based); it may raise to
        stop training.
    progress : bool
        Show a progress bar over epochs, with the last loss (and held-out criterion).

    Returns
    -------
    TrainingHistory

    Raises
    ------
    FloatingPointError
        If the loss becomes NaN or infinite.
    """
    device = torch.device(device)
    dtype = training_dtype(settings.precision, device)
    n_images = features.shape[0]
    order_generator = torch.Generator().manual_seed(settings.seed)
    noise_generator = torch.Generator(device=device).manual_seed(settings.seed + 1)
    steps = _Steps(
        features,
        synthetic_features,
        settings,
        order_generator,
        labelled_features,
        weak_anomalies,
        extra_normal_features,
    )
    selector = _selector(scaler, adaptor, discriminator, device)
    optimizer = torch.optim.Adam(
        [
            {"params": adaptor.parameters(), "lr": settings.adaptor_lr},
            {"params": discriminator.parameters(), "lr": settings.discriminator_lr},
        ],
        weight_decay=settings.weight_decay,
    )
    parameters = [*adaptor.parameters(), *discriminator.parameters()]
    averager = None
    if settings.weight_averaging is not None:
        averager = _WeightAverage(parameters, settings.weight_averaging)
    adaptor.train()
    discriminator.train()
    history = TrainingHistory(dtype=str(dtype).removeprefix("torch."))
    epoch_range = range(settings.epochs)
    if progress:
        from tqdm.auto import tqdm

        epoch_range = tqdm(epoch_range, desc="training", unit="epoch")
    batch_size = settings.batch_size
    for epoch in epoch_range:
        # On the cache's device, once per epoch: a cache on the GPU is then read without host syncs.
        order = torch.randperm(n_images, generator=order_generator).to(features.device)
        total = torch.zeros((), device=device)
        for start in range(0, n_images, batch_size):
            normal, synthetic = steps.patches(order[start : start + batch_size], selector=selector)
            normal_scores, anomalous_scores = _discriminate(
                normal,
                synthetic,
                scaler,
                adaptor,
                discriminator,
                settings.sigma,
                noise_generator,
                device,
                dtype,
            )
            loss = truncated_l1_loss(normal_scores, anomalous_scores, settings.margin)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if averager is not None:
                averager.update()
            total += loss.detach() * len(order[start : start + batch_size])
        mean_loss = float(total) / n_images
        if not math.isfinite(mean_loss):
            raise FloatingPointError(
                f"The training loss became {mean_loss} in epoch {epoch + 1}. Likely causes: "
                "non-finite or huge feature values (check the images and the backbone's "
                "weights) or a learning rate that is too high."
            )
        history.loss.append(mean_loss)
        if validation_features is not None:
            with averager.swapped() if averager is not None else contextlib.nullcontext():
                held_out = validation_loss(
                    validation_features,
                    scaler,
                    adaptor,
                    discriminator,
                    sigma=settings.sigma,
                    margin=settings.margin,
                    seed=settings.seed,
                    dtype=dtype,
                )
            history.validation.append(held_out)
        if progress:
            shown = {"loss": f"{mean_loss:.4f}"}
            if history.validation:
                shown["held-out"] = f"{history.validation[-1]:.4f}"
            epoch_range.set_postfix(shown)
        if callback is not None:
            callback(epoch, mean_loss)
    if averager is not None:
        averager.copy_to_parameters()
    adaptor.eval()
    _recompute_batchnorm_statistics(steps, scaler, adaptor, discriminator, noise_generator, device)
    discriminator.eval()
    return history


class _WeightAverage:
    """Exponential moving average of parameters, updated in place after each step.

    The decay ramps up as ``min(decay, (1 + t) / (10 + t))`` over the first steps ``t``, so
    that a short training run is not dominated by its first weights.
    """

    def __init__(self, parameters: list[torch.Tensor], decay: float):
        self.parameters = parameters
        self.decay = decay
        self.steps = 0
        self.average = [p.detach().clone() for p in parameters]

    @torch.no_grad()
    def update(self) -> None:
        self.steps += 1
        decay = min(self.decay, (1 + self.steps) / (10 + self.steps))
        torch._foreach_lerp_(self.average, [p.detach() for p in self.parameters], 1.0 - decay)

    @torch.no_grad()
    def copy_to_parameters(self) -> None:
        torch._foreach_copy_(self.parameters, self.average)

    @contextlib.contextmanager
    def swapped(self):
        """Run the block with the averaged weights in the parameters, then put the live ones back."""
        with torch.no_grad():
            live = [p.detach().clone() for p in self.parameters]
            torch._foreach_copy_(self.parameters, self.average)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_(self.parameters, live)


@torch.no_grad()
def validation_loss(
    features: torch.Tensor,
    scaler: nn.Module,
    adaptor: nn.Module,
    discriminator: nn.Module,
    *,
    sigma: float | tuple[float, ...],
    margin: float,
    seed: int,
    max_patches: int = _VALIDATION_PATCHES,
    dtype: torch.dtype = torch.float32,
) -> float:
    """Held-out criterion: the truncated L1 loss on held-out normal patches against copies
    noised at **half** the training ``sigma``.

    At the training noise the held-out loss would follow the training loss down to about 0
    and could no longer tell one epoch from another; at half the noise the task stays hard,
    so the value keeps moving while the model changes. Lower is better. A fixed, seeded subset of at most
    ``max_patches`` patches and fixed noise make epochs comparable. BatchNorm uses the
    batch's statistics (normal and noised patches together), as in a training step; the
    modules' running statistics are left untouched.

    Parameters
    ----------
    features : Tensor, shape (n_images, h, w, feature_dim)
        Held-out normal images' patch features.
    dtype : torch.dtype
        The discriminator's arithmetic, that of the training steps.

    Returns
    -------
    float
    """
    device = scaler.mean.device
    patches = features.reshape(-1, features.shape[-1])
    generator = torch.Generator().manual_seed(seed)
    if len(patches) > max_patches:
        patches = patches[torch.randperm(len(patches), generator=generator)[:max_patches].to(patches.device)]
    half = tuple(s / 2 for s in sigma) if isinstance(sigma, (tuple, list)) else sigma / 2
    noise_generator = torch.Generator(device=device).manual_seed(seed + 2)
    norms = _batch_norms(discriminator)
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in norms]
    training = adaptor.training, discriminator.training
    adaptor.eval()
    discriminator.train()
    try:
        normal_scores, anomalous_scores = _discriminate(
            patches, None, scaler, adaptor, discriminator, half, noise_generator, device, dtype
        )
        return float(truncated_l1_loss(normal_scores, anomalous_scores, margin))
    finally:
        for norm, (mean, var, count) in zip(norms, saved):
            norm.running_mean.copy_(mean)
            norm.running_var.copy_(var)
            norm.num_batches_tracked.copy_(count)
        adaptor.train(training[0])
        discriminator.train(training[1])


def _batch_norms(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _discriminate(
    patches, synthetic, scaler, adaptor, discriminator, sigma, generator, device, dtype=torch.float32
):
    """Discriminator outputs for adapted patches ``q`` and for anomalous features: their noised
    copies ``q⁻`` and, when given, the adapted ``synthetic`` features.

    Everything passes in one batch, as in the official code, so BatchNorm's statistics cover
    it all; the statistics pass after training must see exactly what training saw. With a
    reduced ``dtype`` the discriminator runs under :func:`torch.autocast` (its hidden layer is
    most of a step's cost); the adaptor, the noise and the scores stay float32.

    Returns
    -------
    normal_scores : Tensor, shape (n_patches,)
    anomalous_scores : Tensor, shape (n_patches + n_synthetic,)
    """
    normal = adaptor(scaler(patches.to(device, non_blocking=True).float()))
    parts = [normal, add_gaussian_noise(normal, sigma, generator)]
    if synthetic is not None:
        parts.append(adaptor(scaler(synthetic.to(device, non_blocking=True).float())))
    with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        scores = discriminator(torch.cat(parts)).float()
    return scores[: len(normal)], scores[len(normal) :]


@torch.no_grad()
def _recompute_batchnorm_statistics(steps: _Steps, scaler, adaptor, discriminator, generator, device):
    """Set BatchNorm's running statistics to the final weights' averages over the training batches.

    The running averages lag the weights: after few training steps they are still close to
    their initial values, and the inference-mode discriminator is then arbitrary (it can
    even rank anomalies as normal). One pass over the training batches, every patch of each,
    normal, noised and synthetic in the proportions of training, without gradients, gives
    the exact averages for the weights kept.
    """
    norms = _batch_norms(discriminator)
    if not norms:
        return
    # Weakly labelled images' positions are picked with the statistics training ended with.
    selector = None
    if steps.weak is not None:
        selector = _selector(scaler, adaptor, copy.deepcopy(discriminator), device)
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the pass
    discriminator.train()
    n_images = steps.features.shape[0]
    for start in range(0, n_images, steps.settings.batch_size):
        images = torch.arange(start, min(start + steps.settings.batch_size, n_images))
        normal, synthetic = steps.patches(images, subset=False, selector=selector)
        _discriminate(
            normal, synthetic, scaler, adaptor, discriminator, steps.settings.sigma, generator, device
        )
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum


def held_out_split(n_images: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded split of ``n_images`` training images into the ones trained on and the held-out ones.

    ``ceil(fraction * n_images)`` images are held out, but at least one image is always
    trained on: with fewer than two images, or ``fraction == 0``, none is held out.

    Returns
    -------
    trained, held_out : list of int
        Sorted image indices.
    """
    n_held_out = min(math.ceil(fraction * n_images), n_images - 1) if fraction > 0 else 0
    order = torch.randperm(n_images, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(order[n_held_out:]), sorted(order[:n_held_out])
