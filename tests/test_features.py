import torch

from sksimplenet.features import aggregate_neighbourhood, embed_patches, reduce_channels


def test_neighbourhood_mean_counts_the_zero_padding_at_the_border():
    feature_map = torch.arange(1, 26, dtype=torch.float32).view(1, 1, 5, 5)
    out = aggregate_neighbourhood(feature_map, patch_size=3, count_padding=True)
    assert out.shape == feature_map.shape
    assert out[0, 0, 2, 2] == feature_map[0, 0, 1:4, 1:4].mean()
    # Corner: 4 positions inside the map and 5 zeros, averaged over all 9.
    assert out[0, 0, 0, 0] == feature_map[0, 0, :2, :2].sum() / 9


def test_neighbourhood_mean_is_what_unfolding_with_padding_gives():
    # The official SimpleNet / PatchCore embedding: unfold 3 x 3 patches with padding 1, average them.
    feature_map = torch.randn(2, 4, 6, 7, generator=torch.Generator().manual_seed(0))
    patches = torch.nn.functional.unfold(feature_map, kernel_size=3, padding=1)  # (n, c * 9, h * w)
    unfolded_mean = patches.view(2, 4, 9, 6, 7).mean(dim=2)
    out = aggregate_neighbourhood(feature_map, 3, count_padding=True)
    torch.testing.assert_close(out, unfolded_mean)


def test_neighbourhood_mean_without_counting_the_padding_averages_inside_the_map():
    feature_map = torch.arange(1, 26, dtype=torch.float32).view(1, 1, 5, 5)
    out = aggregate_neighbourhood(feature_map, patch_size=3, count_padding=False)
    assert out[0, 0, 2, 2] == feature_map[0, 0, 1:4, 1:4].mean()
    assert out[0, 0, 0, 0] == feature_map[0, 0, :2, :2].mean()


def test_patch_size_one_is_identity():
    feature_map = torch.randn(2, 3, 4, 4)
    for count_padding in (True, False):
        assert torch.equal(aggregate_neighbourhood(feature_map, 1, count_padding=count_padding), feature_map)


def test_embedding_resizes_to_largest_level_and_concatenates():
    shallow = torch.randn(2, 8, 16, 16)
    deep = torch.randn(2, 16, 8, 8)
    out = embed_patches([shallow, deep], patch_size=3, count_padding=True, feature_dim=None)
    assert out.shape == (2, 24, 16, 16)
    assert torch.allclose(out[:, :8], aggregate_neighbourhood(shallow, 3, count_padding=True))


def test_a_constant_deep_map_stays_constant_after_resizing():
    deep = torch.full((1, 4, 4, 4), 2.5)
    out = embed_patches([torch.zeros(1, 2, 8, 8), deep], patch_size=1, count_padding=True, feature_dim=None)
    assert torch.allclose(out[:, 2:], torch.full((1, 4, 8, 8), 2.5))
    # Averaged inside the map only, a constant stays constant at the border too.
    out = embed_patches([torch.zeros(1, 2, 8, 8), deep], patch_size=3, count_padding=False, feature_dim=None)
    assert torch.allclose(out[:, 2:], torch.full((1, 4, 8, 8), 2.5))


def test_channel_reduction_averages_neighbouring_channels():
    features = torch.arange(8, dtype=torch.float32).view(1, 8, 1, 1).expand(1, 8, 2, 2)
    reduced = reduce_channels(features, 4)
    assert reduced.shape == (1, 4, 2, 2)
    assert torch.equal(reduced[0, :, 0, 0], torch.tensor([0.5, 2.5, 4.5, 6.5]))
    # Narrower inputs are kept as they are.
    assert reduce_channels(features, 16) is features


def test_paper_width_is_kept_for_wide_resnet_levels():
    out = embed_patches(
        [torch.randn(1, 512, 28, 28), torch.randn(1, 1024, 14, 14)],
        patch_size=3,
        count_padding=True,
        feature_dim=1536,
    )
    assert out.shape == (1, 1536, 28, 28)
