import torch

from sksimplenet.features import aggregate_neighbourhood, embed_patches, reduce_channels


def test_neighbourhood_mean_in_the_interior_and_at_the_border():
    feature_map = torch.arange(25, dtype=torch.float32).view(1, 1, 5, 5)
    out = aggregate_neighbourhood(feature_map, patch_size=3)
    assert out.shape == feature_map.shape
    assert out[0, 0, 2, 2] == feature_map[0, 0, 1:4, 1:4].mean()
    # Corner: only the 4 positions inside the map are averaged.
    assert out[0, 0, 0, 0] == feature_map[0, 0, :2, :2].mean()


def test_patch_size_one_is_identity():
    feature_map = torch.randn(2, 3, 4, 4)
    assert torch.equal(aggregate_neighbourhood(feature_map, 1), feature_map)


def test_embedding_resizes_to_largest_level_and_concatenates():
    shallow = torch.randn(2, 8, 16, 16)
    deep = torch.randn(2, 16, 8, 8)
    out = embed_patches([shallow, deep], patch_size=3, feature_dim=None)
    assert out.shape == (2, 24, 16, 16)
    assert torch.allclose(out[:, :8], aggregate_neighbourhood(shallow, 3))


def test_a_constant_deep_map_stays_constant_after_resizing():
    deep = torch.full((1, 4, 4, 4), 2.5)
    out = embed_patches([torch.zeros(1, 2, 8, 8), deep], patch_size=3, feature_dim=None)
    assert torch.allclose(out[:, 2:], torch.full((1, 4, 8, 8), 2.5))


def test_channel_reduction_averages_neighbouring_channels():
    features = torch.arange(8, dtype=torch.float32).view(1, 8, 1, 1).expand(1, 8, 2, 2)
    reduced = reduce_channels(features, 4)
    assert reduced.shape == (1, 4, 2, 2)
    assert torch.equal(reduced[0, :, 0, 0], torch.tensor([0.5, 2.5, 4.5, 6.5]))
    # Narrower inputs are kept as they are.
    assert reduce_channels(features, 16) is features


def test_paper_width_is_kept_for_wide_resnet_levels():
    out = embed_patches([torch.randn(1, 512, 28, 28), torch.randn(1, 1024, 14, 14)], 3, 1536)
    assert out.shape == (1, 1536, 28, 28)
