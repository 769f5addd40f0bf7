import pytest
import torch

from sksimplenet.networks import (
    Adaptor,
    Discriminator,
    FeatureScaler,
    add_gaussian_noise,
    truncated_l1_loss,
)


def test_truncated_l1_loss_on_known_scores():
    normal = torch.tensor([1.0, 0.5, 0.0, -1.0])  # losses 0, 0, 0.5, 1.5 -> mean 0.5
    anomalous = torch.tensor([-1.0, -0.5, 0.0, 1.0])  # losses 0, 0, 0.5, 1.5 -> mean 0.5
    assert truncated_l1_loss(normal, anomalous).item() == pytest.approx(1.0)
    assert truncated_l1_loss(normal, anomalous, margin=0.0).item() == pytest.approx(0.25 + 0.25)


def test_loss_is_zero_once_both_margins_are_met():
    assert truncated_l1_loss(torch.full((5,), 0.7), torch.full((5,), -0.6)).item() == 0.0


def test_adaptor_is_one_square_linear_layer_without_bias():
    adaptor = Adaptor(12, bias=False, init="xavier")
    params = dict(adaptor.named_parameters())
    assert list(params) == ["linear.weight"]
    assert params["linear.weight"].shape == (12, 12)


def test_discriminator_layout_and_output_shape():
    discriminator = Discriminator(12, hidden_dim=32)
    kinds = [type(m).__name__ for m in discriminator.modules()][1:]
    assert kinds == ["Sequential", "Linear", "BatchNorm1d", "LeakyReLU", "Linear"]
    assert discriminator.body[2].negative_slope == 0.2
    assert discriminator(torch.randn(10, 12)).shape == (10,)


def test_seeded_initialisation_is_reproducible():
    a = Discriminator(8, 16, generator=torch.Generator().manual_seed(3))
    b = Discriminator(8, 16, generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_noise_has_the_requested_spread_and_is_seeded():
    features = torch.zeros(200_000, 4)
    noised = add_gaussian_noise(features, 0.015, torch.Generator().manual_seed(0))
    assert noised.std().item() == pytest.approx(0.015, rel=0.01)
    assert noised.mean().abs().item() < 1e-3 * 0.015 * 10
    again = add_gaussian_noise(features, 0.015, torch.Generator().manual_seed(0))
    assert torch.equal(noised, again)


def test_feature_scaler_leaves_dead_channels_unscaled():
    features = torch.randn(100, 3)
    features[:, 1] = 2.0  # e.g. a ReLU channel that never fires on the training images
    scaler = FeatureScaler(3).fit(features)
    assert scaler.scale[1] == 1.0
    probe = torch.tensor([[0.0, 2.5, 0.0]])
    assert scaler(probe)[0, 1] == pytest.approx(0.5)  # not 0.5 / eps


def test_feature_scaler_standardises_channels():
    features = torch.randn(5000, 3) * torch.tensor([1.0, 10.0, 0.1]) + torch.tensor([0.0, 5.0, -2.0])
    scaler = FeatureScaler(3).fit(features)
    scaled = scaler(features)
    assert torch.allclose(scaled.mean(0), torch.zeros(3), atol=1e-4)
    assert torch.allclose(scaled.std(0), torch.ones(3), atol=1e-4)
    assert torch.equal(FeatureScaler(3)(features), features)  # unfitted: identity
