"""The folded inference head computes what the reference path computes, and stays in step with it."""

import copy
import io
import pickle

import pytest
import torch

from sksimplenet import folded as folded_module
from sksimplenet.backbones import build_feature_extractor
from sksimplenet.features import embed_patches, reduce_channels
from sksimplenet.folded import channel_pooling_matrix
from sksimplenet.model import SimpleNetModel


def make_model(backbone="resnet18", layers=None, feature_dim=1536, hidden_dim=48, seed=0, **kwargs):
    """An eval-mode model whose scaler, adaptor bias and BatchNorm are far from the identity."""
    torch.manual_seed(seed)
    weights = "DEFAULT" if backbone == "efficientnet_lite0" else None
    extractor = build_feature_extractor(backbone, layers, weights)
    with torch.no_grad():
        maps = extractor(torch.rand(1, 3, 64, 64))
        width = embed_patches(maps, patch_size=3, count_padding=True, feature_dim=feature_dim).shape[1]
    settings = dict(
        patch_size=3,
        count_padding=True,
        adaptor_bias=False,
        adaptor_init="xavier",
        smoothing_sigma=4.0,
        image_score="max",
        precision="float32",
    )
    model = SimpleNetModel(
        extractor,
        width,
        feature_dim=feature_dim,
        hidden_dim=hidden_dim,
        generator=torch.Generator().manual_seed(seed),
        **{**settings, **kwargs},
    )
    randomise(model, seed)
    return model.eval()


def randomise(model, seed):
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            if name.startswith("extractor."):
                continue
            if name.endswith(("scale", "running_var")):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            elif tensor.ndim == 2:
                tensor.copy_(torch.randn(tensor.shape, generator=generator) / tensor.shape[1] ** 0.5)
            elif tensor.is_floating_point():
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.5)


def both_paths(model, images):
    """(folded, reference) outputs of ``model(images)``."""
    with torch.inference_mode():
        assert model.uses_folded_head()
        folded = model(images)
    with torch.enable_grad():
        assert not model.uses_folded_head()
        reference = tuple(t.detach() for t in model(images))
    return folded, reference


def assert_close(folded, reference, atol=1e-4):
    for got, expected in zip(folded, reference):
        assert got.shape == expected.shape
        torch.testing.assert_close(got, expected, rtol=0, atol=atol)


@pytest.mark.parametrize(
    "config",
    [
        dict(),  # resnet18 layer2 + layer3: 128 + 256 channels, kept
        dict(feature_dim=100),  # channel pooling (reduce_channels) inside the fold
        dict(layers=("layer1", "layer2", "layer3"), feature_dim=333),  # three levels, uneven pooling
        dict(layers=("layer3",)),  # one level
        dict(patch_size=5, adaptor_bias=True, smoothing_sigma=2.0),
        dict(patch_size=1, smoothing_sigma=0.0),
        dict(hidden_dim=200),  # wider than layer2: the neighbourhood mean is taken before projecting
        dict(hidden_dim=16),  # narrower than both levels: it is taken on the hidden maps
        dict(backbone="efficientnet_lite0"),
    ],
    ids=["default", "pooled", "three-levels", "one-level", "p5-bias", "p1", "wide", "narrow", "effnet"],
)
@pytest.mark.parametrize("count_padding", [True, False], ids=["padding-counted", "inside-only"])
def test_folded_head_matches_reference_path(config, count_padding):
    model = make_model(**{**config, "count_padding": count_padding})
    images = torch.rand(3, 3, 72, 88, generator=torch.Generator().manual_seed(5))
    folded, reference = both_paths(model, images)
    assert_close(folded, reference)
    # Not trivially equal: the maps vary and the scores differ between images.
    assert reference[0].std() > 1e-2 and reference[1].std() > 1e-3


@pytest.mark.parametrize(
    "config",
    [
        dict(),
        dict(layers=("layer1", "layer2", "layer3"), feature_dim=333),
        dict(layers=("layer3",)),
        dict(hidden_dim=16),
    ],
    ids=["default", "three-levels", "one-level", "narrow"],
)
def test_folded_head_in_chunks_of_one_image_matches_reference_path(config, monkeypatch):
    # On a CPU the folded head works through the batch a few images at a time, in a
    # reused buffer; a budget of one byte makes every image its own chunk.
    monkeypatch.setattr(folded_module, "_CPU_CHUNK_BYTES", 1)
    model = make_model(**config)
    images = torch.rand(3, 3, 72, 88, generator=torch.Generator().manual_seed(5))
    folded, reference = both_paths(model, images)
    assert_close(folded, reference)
    assert reference[1].std() > 1e-3


@pytest.mark.parametrize("hidden_dim", [200, 16], ids=["pooled-before-projecting", "pooled-after"])
def test_folded_patch_scores_match_at_the_border_under_either_rule(hidden_dim):
    images = torch.rand(2, 3, 64, 80, generator=torch.Generator().manual_seed(8))
    border = {}
    for count_padding in (True, False):
        model = make_model(hidden_dim=hidden_dim, count_padding=count_padding)
        with torch.inference_mode():
            folded = model.folded_head.scores_from_layer_maps(model.layer_maps(images))
        with torch.enable_grad():
            reference = model.patch_scores(model.patch_features(images).permute(0, 2, 3, 1)).detach()
        torch.testing.assert_close(folded, reference, rtol=0, atol=1e-4)
        border[count_padding] = reference[:, [0, -1]], reference[:, 1:-1, [0, -1]]
    # The two rules give other scores at the border (and the same ones well inside).
    assert (border[True][0] - border[False][0]).abs().max() > 1e-2


def test_patch_scores_of_cached_features_use_the_fold():
    model = make_model(feature_dim=100)
    features = torch.randn(2, 5, 6, 100, generator=torch.Generator().manual_seed(0)).half()
    with torch.inference_mode():
        folded = model.patch_scores(features)
    with torch.enable_grad():
        reference = model.patch_scores(features).detach()
    torch.testing.assert_close(folded, reference, rtol=0, atol=1e-4)


def test_channel_pooling_matrix_is_reduce_channels():
    features = torch.randn(2, 37, 3, 4, dtype=torch.float64)
    for width in (5, 16, 36, 37, 50):
        pooling = channel_pooling_matrix(37, width)
        expected = reduce_channels(features, width)
        torch.testing.assert_close(torch.einsum("dc,nchw->ndhw", pooling, features), expected)


def test_fold_follows_weight_changes_at_the_next_eval():
    model = make_model()
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        before = model(images)[0].clone()
    with torch.no_grad():  # an in-place change, as an optimiser step makes
        model.discriminator.body[0].weight.mul_(1.5)
        model.discriminator.body[1].running_mean.add_(0.3)
    model.eval()  # the folded head is a snapshot: entering evaluation mode rebuilds it
    folded, reference = both_paths(model, images)
    assert_close(folded, reference)
    assert (folded[0] - before).abs().max() > 1e-2

    other = make_model(seed=7)
    model.load_state_dict(other.state_dict())
    folded, reference = both_paths(model, images)
    assert_close(folded, reference)
    assert_close(folded, both_paths(other, images)[1])


def test_fold_follows_dtype_changes():
    model = make_model().double()
    images = torch.rand(2, 3, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    folded, reference = both_paths(model, images)
    assert folded[0].dtype == torch.float64
    assert_close(folded, reference, atol=1e-10)


def test_training_mode_takes_the_reference_path():
    model = make_model()
    model.discriminator.train()
    with torch.inference_mode():
        assert not model.uses_folded_head()
    model.eval()
    with torch.no_grad():
        assert model.uses_folded_head()
    with torch.enable_grad():
        assert not model.uses_folded_head()


def test_state_dict_and_pickles_carry_no_folded_weights():
    model = make_model()
    keys = list(model.state_dict())
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        expected = model(images)
    assert list(model.state_dict()) == keys
    assert model.folded_head is not None and model.folded_head._operators

    blob = pickle.dumps(model)
    empty = make_model()
    assert abs(len(blob) - len(pickle.dumps(empty))) < 1024  # the cached matrices are not in it
    for restored in (pickle.loads(blob), copy.deepcopy(model)):
        assert restored.folded_head is not None and not restored.folded_head._operators  # rebuilt
        assert not any(module.training for module in restored.modules())
        with torch.inference_mode():
            assert_close(restored(images), expected, atol=0)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    fresh = make_model(seed=9)
    fresh.load_state_dict(torch.load(buffer), strict=True)
    with torch.inference_mode():
        assert_close(fresh(images), expected, atol=0)


def test_folded_head_is_built_on_entering_eval_mode_and_dropped_in_training():
    model = make_model()
    head = model.folded_head
    assert head is not None
    with torch.inference_mode():
        model(torch.rand(1, 3, 64, 64))
    assert model.folded_head is head  # scoring reuses it
    model.train()
    assert model.folded_head is None
    model.eval()
    assert model.folded_head is not None and model.folded_head is not head


def test_folded_head_uses_each_modules_own_affine_part_and_tail():
    model = make_model(adaptor_bias=True)
    features = torch.randn(7, model.scaler.mean.shape[0], dtype=torch.float64)
    with torch.no_grad():
        scale, offset = model.scaler.affine()
        torch.testing.assert_close(features * scale + offset, model.scaler.double()(features))
        weight, bias = model.adaptor.affine()
        adapted = model.adaptor.double()(features)
        torch.testing.assert_close(features @ weight.T + bias, adapted)
        weight, bias = model.discriminator.affine()
        hidden = features @ weight.T + bias
        torch.testing.assert_close(
            model.discriminator.tail(hidden.clone()), model.discriminator.double()(features)
        )


def test_channels_last_backbones_give_the_same_features():
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    torch.manual_seed(0)
    named = build_feature_extractor("resnet18", None, None)
    assert named.channels_last
    plain = copy.deepcopy(named)
    plain.channels_last = False
    plain.body.to(memory_format=torch.contiguous_format)
    with torch.inference_mode():
        for fast, slow in zip(named(images), plain(images)):
            assert fast.is_contiguous(memory_format=torch.channels_last)
            torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-4)


def test_models_pickled_under_the_old_attribute_names_unpickle():
    model = make_model(image_score=0.01)
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(6))
    with torch.inference_mode():
        expected = model(images)
    state = model.__getstate__()
    state["max_feature_dim"] = state.pop("feature_dim")
    state["top_fraction"] = state.pop("image_score")
    del state["precision"]
    old = SimpleNetModel.__new__(SimpleNetModel)
    old.__setstate__(state)
    assert (old.feature_dim, old.image_score, old.precision) == (1536, 0.01, "float32")
    with torch.inference_mode():
        assert_close(old(images), expected, atol=0)


def test_models_pickled_before_count_padding_keep_averaging_inside_the_map():
    model = make_model(count_padding=False)
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(6))
    with torch.inference_mode():
        expected = model(images)
    state = model.__getstate__()
    del state["count_padding"]
    old = SimpleNetModel.__new__(SimpleNetModel)
    old.__setstate__(state)
    assert old.count_padding is False
    with torch.inference_mode():
        assert_close(old(images), expected, atol=0)
