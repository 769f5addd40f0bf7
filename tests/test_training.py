import pytest
import torch

from sksimplenet.networks import Adaptor, Discriminator, FeatureScaler
from sksimplenet.training import train_discriminator


def _parts(dim=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return FeatureScaler(dim), Adaptor(dim, generator=generator), Discriminator(dim, 16, generator=generator)


def _features(seed=0):
    # 12 "images" of 4x4 positions with 8-d features clustered around a mean.
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(12, 4, 4, 8, generator=generator) * 0.1 + 1.0).half()


def test_loss_falls_when_noise_is_distinguishable():
    history = train_discriminator(
        _features(), *_parts(), epochs=60, sigma=1.0, adaptor_lr=3e-3, discriminator_lr=3e-3, seed=0
    )
    assert len(history) == 60
    assert history[-1] < 0.5 * history[0]


def test_training_is_reproducible_with_a_seed():
    a_parts, b_parts = _parts(), _parts()
    a = train_discriminator(_features(), *a_parts, epochs=3, sigma=0.5, seed=7)
    b = train_discriminator(_features(), *b_parts, epochs=3, sigma=0.5, seed=7)
    assert a == b
    assert torch.equal(a_parts[1].linear.weight, b_parts[1].linear.weight)


def test_callback_sees_every_epoch_and_can_stop_training():
    seen = []

    def stop_after_two(epoch, loss):
        seen.append((epoch, loss))
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_discriminator(_features(), *_parts(), epochs=10, sigma=0.5, callback=stop_after_two)
    assert [epoch for epoch, _ in seen] == [0, 1]


def test_non_finite_loss_names_the_epoch():
    features = _features()
    features[3, 0, 0, 0] = float("inf")
    with pytest.raises(FloatingPointError, match="epoch 1"):
        train_discriminator(features, *_parts(), epochs=2, sigma=0.5)


def test_batchnorm_statistics_match_the_final_weights():
    # After a single short epoch the running averages would still be near their initial
    # values; training ends by recomputing them for the weights it keeps.
    scaler, adaptor, discriminator = _parts()
    features = _features()
    train_discriminator(features, scaler, adaptor, discriminator, epochs=1, sigma=0.5, seed=0)
    norm = discriminator.body[1]
    with torch.no_grad():
        hidden = discriminator.body[0](adaptor(scaler(features.reshape(-1, 8).float())))
    # The statistics cover normal and noised features; the normal half alone is close.
    assert torch.allclose(norm.running_mean, hidden.mean(0), atol=0.2)
    assert not torch.allclose(norm.running_var, torch.ones_like(norm.running_var))
