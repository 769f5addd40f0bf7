import pytest
import torch
from sklearn.metrics import roc_auc_score

from sksimplenet.networks import Adaptor, Discriminator, FeatureScaler
from sksimplenet.training import TrainingSettings, held_out_split, train_discriminator, validation_loss


def _parts(dim=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    adaptor = Adaptor(dim, bias=False, init="identity", generator=generator)
    return FeatureScaler(dim), adaptor, Discriminator(dim, 16, generator=generator)


def _settings(**changes):
    """Short runs on 4 images a step, the estimator's other values."""
    values = dict(
        epochs=3,
        batch_size=4,
        patch_fraction=1.0,
        sigma=0.5,
        margin=0.5,
        adaptor_lr=1e-4,
        discriminator_lr=2e-4,
        weight_decay=1e-5,
        weight_averaging=None,
        synthetic_share=0.5,
        precision="float32",
        seed=0,
    )
    return TrainingSettings(**{**values, **changes})


def _train(features, parts, **changes):
    return train_discriminator(features, *parts, _settings(**changes), device="cpu")


def _features(seed=0):
    # 12 "images" of 4x4 positions with 8-d features clustered around a mean.
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(12, 4, 4, 8, generator=generator) * 0.1 + 1.0).half()


def test_settings_come_from_a_detectors_parameters():
    from sksimplenet import SimpleNetDetector

    params = SimpleNetDetector(sigma=[0.1, 0.2], batch_size=8, weight_averaging=None).get_params()
    settings = TrainingSettings.from_params(params, epochs=3, seed=5)
    assert settings.sigma == (0.1, 0.2) and settings.batch_size == 8 and settings.weight_averaging is None
    assert (settings.epochs, settings.seed, settings.patch_fraction) == (3, 5, params["patch_fraction"])
    without_margin = {name: value for name, value in params.items() if name != "margin"}
    with pytest.raises(KeyError, match="margin"):
        TrainingSettings.from_params(without_margin, epochs=1, seed=0)


def test_loss_falls_when_noise_is_distinguishable():
    history = _train(_features(), _parts(), epochs=60, sigma=1.0, adaptor_lr=3e-3, discriminator_lr=3e-3)
    assert len(history.loss) == 60
    assert history.loss[-1] < 0.5 * history.loss[0]
    assert history.validation == []  # no held-out features given


def test_training_is_reproducible_with_a_seed():
    a_parts, b_parts = _parts(), _parts()
    a = _train(_features(), a_parts, seed=7)
    b = _train(_features(), b_parts, seed=7)
    assert a == b
    assert torch.equal(a_parts[1].linear.weight, b_parts[1].linear.weight)


def test_callback_sees_every_epoch_and_can_stop_training():
    seen = []

    def stop_after_two(epoch, loss):
        seen.append((epoch, loss))
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_discriminator(
            _features(), *_parts(), _settings(epochs=10), device="cpu", callback=stop_after_two
        )
    assert [epoch for epoch, _ in seen] == [0, 1]


def test_non_finite_loss_names_the_epoch():
    features = _features()
    features[3, 0, 0, 0] = float("inf")
    with pytest.raises(FloatingPointError, match="epoch 1"):
        _train(features, _parts(), epochs=2)


def test_batchnorm_statistics_match_the_final_weights():
    # After a single short epoch the running averages would still be near their initial
    # values; training ends by recomputing them for the weights it keeps.
    scaler, adaptor, discriminator = _parts()
    features = _features()
    _train(features, (scaler, adaptor, discriminator), epochs=1)
    norm = discriminator.body[1]
    with torch.no_grad():
        hidden = discriminator.body[0](adaptor(scaler(features.reshape(-1, 8).float())))
    # The statistics cover normal and noised features; the normal half alone is close.
    assert torch.allclose(norm.running_mean, hidden.mean(0), atol=0.2)
    assert not torch.allclose(norm.running_var, torch.ones_like(norm.running_var))


def test_weight_averaging_returns_the_average_of_the_steps():
    # With a decay near 0 the average follows the last step; with a decay near 1 it stays
    # between the first and the last weights, so the two results differ.
    runs = {}
    for decay in (None, 1e-6, 0.999):
        scaler, adaptor, discriminator = _parts()
        _train(_features(), (scaler, adaptor, discriminator), epochs=5, weight_averaging=decay)
        runs[decay] = adaptor.linear.weight.detach().clone()
    torch.testing.assert_close(runs[1e-6], runs[None])
    assert not torch.allclose(runs[0.999], runs[None], atol=1e-4)
    initial = _parts()[1].linear.weight
    # The slow average lies closer to the start than the last step does.
    assert (runs[0.999] - initial).norm() < (runs[None] - initial).norm()


def test_held_out_criterion_is_recorded_per_epoch_and_falls():
    history = train_discriminator(
        _features(0),
        *_parts(),
        _settings(epochs=30, sigma=1.0, adaptor_lr=3e-3, discriminator_lr=3e-3),
        validation_features=_features(1)[:4],
        device="cpu",
    )
    assert len(history.validation) == 30
    assert history.validation[-1] < history.validation[0]


def test_validation_loss_leaves_batchnorm_statistics_alone():
    scaler, adaptor, discriminator = _parts()
    norm = discriminator.body[1]
    before = norm.running_mean.clone(), norm.running_var.clone()
    value = validation_loss(_features(), scaler, adaptor, discriminator, sigma=0.5, margin=0.5, seed=0)
    again = validation_loss(_features(), scaler, adaptor, discriminator, sigma=0.5, margin=0.5, seed=0)
    assert value == again > 0  # seeded subset and noise: the same number twice
    torch.testing.assert_close(norm.running_mean, before[0])
    torch.testing.assert_close(norm.running_var, before[1])


def _shifted_features(seed):
    """Anomalous features: normal ones moved by a structured shift (not Gaussian noise)."""
    return (_features(seed).reshape(-1, 8)[:64].float() + 0.3 * torch.linspace(-1, 1, 8)).half()


def test_synthetic_features_teach_the_discriminator_structured_anomalies():
    # Trained against Gaussian noise alone, the discriminator scores many shifted features
    # as normal as normal patches; with shifted features as synthetic anomalous features it
    # separates new shifted features (another draw) from new normal patches.
    separation = {}
    for synthetic in (None, _shifted_features(2)):
        scaler, adaptor, discriminator = parts = _parts()
        train_discriminator(
            _features(),
            *parts,
            _settings(epochs=40, sigma=0.05, adaptor_lr=3e-3, discriminator_lr=3e-3),
            synthetic_features=synthetic,
            device="cpu",
        )
        with torch.no_grad():
            normal = discriminator(adaptor(scaler(_features(1).reshape(-1, 8).float())))
            shifted = discriminator(adaptor(scaler(_shifted_features(1).float())))
        labels = [0] * len(normal) + [1] * len(shifted)
        separation[synthetic is not None] = roc_auc_score(labels, -torch.cat([normal, shifted]).numpy())
    assert separation[True] >= 0.99
    assert separation[True] > separation[False] + 0.03


def test_training_with_synthetic_features_is_reproducible():
    a_parts, b_parts = _parts(), _parts()
    a = train_discriminator(
        _features(), *a_parts, _settings(seed=3), synthetic_features=_shifted_features(2), device="cpu"
    )
    b = train_discriminator(
        _features(), *b_parts, _settings(seed=3), synthetic_features=_shifted_features(2), device="cpu"
    )
    assert a == b
    assert torch.equal(a_parts[2].head.weight, b_parts[2].head.weight)


@pytest.mark.parametrize(
    ("n_images", "fraction", "n_held_out"),
    [(100, 0.1, 10), (20, 0.1, 2), (5, 0.1, 1), (1, 0.5, 0), (9, 0.0, 0)],
)
def test_held_out_split_is_seeded_disjoint_and_complete(n_images, fraction, n_held_out):
    trained, held_out = held_out_split(n_images, fraction, seed=3)
    assert len(held_out) == n_held_out
    assert sorted(trained + held_out) == list(range(n_images))
    assert held_out_split(n_images, fraction, seed=3) == (trained, held_out)
