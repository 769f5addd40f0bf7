"""Helpers shared by the benchmark scripts: data sets, the reference's features, settings."""

from __future__ import annotations

import ast
import contextlib
import copy
from pathlib import Path
from unittest import mock

import numpy as np
import torch

import sksimplenet.backbones
import sksimplenet.detector
from sksimplenet.backbones import build_feature_extractor
from sksimplenet.datasets import load_mtd, load_mvtec
from sksimplenet.features import embed_patches
from sksimplenet.image_io import ImageDataset
from sksimplenet.scoring import score_maps

DATASETS_ROOT = Path(__file__).resolve().parents[2] / "shared" / "datasets"
MTD_ROOT = DATASETS_ROOT / "mtd"


def mtd_split(seed: int = 0, root=MTD_ROOT) -> dict:
    if not Path(root).is_dir():
        raise SystemExit(f"MTD not found at {root}")
    return load_mtd(root, random_state=seed)


def dataset_split(name: str, seed: int = 0) -> dict:
    """The train/test split of a named data set: ``"mtd"`` (seeded split), or an MVTec-layout
    folder (``"elpv"`` under ``../shared/datasets``, or any path; its split is fixed and
    ``seed`` is unused). Masks are None where the data set has none."""
    if name == "mtd":
        return mtd_split(seed)
    root = Path(name) if Path(name).is_dir() else DATASETS_ROOT / name
    if not root.is_dir():
        raise SystemExit(f"no data set folder {root}")
    return load_mvtec(root.parent, root.name, require_masks=False)


def plain_layout(extractor):
    """A copy of ``extractor`` running in PyTorch's default (NCHW) memory layout."""
    plain = copy.deepcopy(extractor)
    plain.channels_last = False
    plain.body.to(memory_format=torch.contiguous_format)
    return plain


def library_backbone(backbone: str, weights=None):
    """The truncated backbone as its library defines it: NCHW layout, BatchNorm layers kept.

    The detector's extractor differs in two ways that leave its outputs the same up to
    rounding: channels-last layout and BatchNorm folded into the convolutions.
    """
    with mock.patch.object(sksimplenet.backbones, "fold_batch_norms", lambda body: (body, {})):
        return plain_layout(build_feature_extractor(backbone, None, weights))


@torch.inference_mode()
def layer_features(
    images,
    backbone="efficientnet_lite0",
    layers=None,
    weights="DEFAULT",
    resize=(224, 224),
    crop_size=None,
    batch=32,
    extractor=None,
) -> torch.Tensor:
    """Patch features ``(n, h, w, c)`` float16 of images (files or arrays), embedded as the
    official code embeds them: each level's 3 x 3 neighbourhood mean counting the zero padding
    (unfolding with padding), levels resized to the largest map and concatenated. ``extractor``,
    when given, is used instead of building one from ``backbone``, ``layers`` and ``weights``."""
    if extractor is None:
        extractor = build_feature_extractor(backbone, layers, weights)
    loader = torch.utils.data.DataLoader(ImageDataset(list(images), resize, crop_size), batch_size=batch)
    chunks = [
        embed_patches(extractor(x), patch_size=3, count_padding=True, feature_dim=None)
        .permute(0, 2, 3, 1)
        .half()
        for x in loader
    ]
    return torch.cat(chunks)


def random_bank(train: torch.Tensor, fraction=0.1, seed=0) -> torch.Tensor:
    """A seeded random ``fraction`` of the patch features ``(n, h, w, c)``, as ``(m, c)`` float32."""
    bank = train.reshape(-1, train.shape[-1]).float()
    generator = torch.Generator().manual_seed(seed)
    return bank[torch.randperm(len(bank), generator=generator)[: int(fraction * len(bank))]]


@torch.inference_mode()
def nearest_patch_scores(
    bank: torch.Tensor, test: torch.Tensor, size=(224, 224), smoothing_sigma=4.0
) -> tuple[np.ndarray, np.ndarray]:
    """PatchCore-style scoring: distance of each test patch ``(n, h, w, c)`` to its nearest
    patch in ``bank`` ``(m, c)``.

    Maps: the patch distances upsampled and smoothed like SimpleNet's. Image score: the
    largest raw patch distance, PatchCore's own rule (its authors score an image by its
    most anomalous patch, before any upsampling or smoothing).

    Returns image scores (n,) and maps (n, H, W), higher = more anomalous.
    """
    bank = bank.float()
    maps, scores = [], []
    for start in range(0, len(test), 8):
        batch = test[start : start + 8].float()
        n, h, w, c = batch.shape
        distances = torch.cdist(batch.reshape(-1, c), bank).amin(dim=1).reshape(n, h, w)
        scores.append(distances.flatten(1).amax(1))
        maps.append(score_maps(distances, size, smoothing_sigma))
    return torch.cat(scores).numpy(), torch.cat(maps).numpy()


def knn_baseline(
    train: torch.Tensor, test: torch.Tensor, size=(224, 224), bank_fraction=0.1, seed=0, smoothing_sigma=4.0
) -> tuple[np.ndarray, np.ndarray]:
    """The reference of docs/quality.md: :func:`nearest_patch_scores` against a seeded random
    ``bank_fraction`` of the training patches ``(n, h, w, c)``."""
    return nearest_patch_scores(random_bank(train, bank_fraction, seed), test, size, smoothing_sigma)


def parse_settings(items: list[str]) -> dict:
    """``--set NAME=VALUE`` options as detector parameters; values are Python literals where
    they parse as one (``0.5``, ``None``, ``(224, 224)``), else strings."""
    settings = {}
    for item in items:
        name, _, text = item.partition("=")
        try:
            settings[name] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            settings[name] = text
    return settings


class Int8Body(torch.nn.Module):
    """A backbone body quantised to int8 on its first call, for measuring int8 inference.

    Post-training static quantisation with ``torch.ao.quantization``'s FX mode (x86 backend:
    int8 weights per output channel, activations per tensor), calibrated on the first batch it
    is called with: in ``fit``, the first training images. Not something the package offers
    (``precision`` has no int8; docs/performance.md says why): it only lets ``precision.py``
    and ``speed.py`` measure what int8 would give. The quantised graph is fixed to the first
    batch's image size, since EfficientNet-Lite's same-padding convolutions become plain ones.

    Parameters
    ----------
    body : nn.Module
        A :class:`~sksimplenet.backbones.FeatureExtractor`'s ``body``: normalised images
        ``(n, 3, H, W)`` → ``{layer: (n, c, h, w)}``.
    """

    def __init__(self, body: torch.nn.Module):
        super().__init__()
        self.float_body = body
        self.quantised = None
        self.size = None

    def forward(self, images: torch.Tensor) -> dict:
        if self.quantised is None:
            import warnings

            from torch.ao.quantization import get_default_qconfig_mapping
            from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

            torch.backends.quantized.engine = "x86"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # FX quantisation is deprecated in favour of torchao
                body = static_same_padding(self.float_body, images[:1])
                prepared = prepare_fx(body.eval(), get_default_qconfig_mapping("x86"), (images[:1],))
                prepared(images)  # calibration: the activations' ranges
                self.quantised = convert_fx(prepared)
            self.size = tuple(images.shape[-2:])
        if tuple(images.shape[-2:]) != self.size:
            raise ValueError(f"quantised for {self.size} images, got {tuple(images.shape[-2:])}")
        return self.quantised(images)


def static_same_padding(body: torch.nn.Module, example: torch.Tensor) -> torch.nn.Module:
    """A copy of ``body`` in which every EfficientNet-Lite same-padding convolution is a plain
    ``nn.Conv2d`` (after an ``nn.ZeroPad2d`` where the padding is asymmetric) with the padding
    it computes for ``example``'s image size: the same outputs at that size, and a graph
    torch.fx's quantisation can trace. Bodies without them are copied unchanged."""
    from sksimplenet._efficientnet_lite import SamePaddingConv2d

    body = copy.deepcopy(body)
    sizes = {}

    def record(name):
        def hook(_module, args):
            sizes.setdefault(name, args[0].shape[-2:])

        return hook

    hooks = [
        module.register_forward_pre_hook(record(name))
        for name, module in body.named_modules()
        if isinstance(module, SamePaddingConv2d)
    ]
    with torch.no_grad():
        body(example)
    for hook in hooks:
        hook.remove()
    for name, size in sizes.items():
        same = body.get_submodule(name)
        pads = same.same_padding(size)
        symmetric = pads[0] == pads[1] and pads[2] == pads[3]
        conv = torch.nn.Conv2d(
            same.in_channels, same.out_channels, same.kernel_size, same.stride,
            (pads[2], pads[0]) if symmetric else 0, same.dilation, same.groups, same.bias is not None,
        )  # fmt: skip
        conv.load_state_dict(same.state_dict())
        plain = conv if symmetric else torch.nn.Sequential(torch.nn.ZeroPad2d(pads), conv)
        parent, _, leaf = name.rpartition(".")
        setattr(body.get_submodule(parent), leaf, plain)
    return body


@contextlib.contextmanager
def int8_backbones():
    """Within the block, every detector's backbone body is wrapped in :class:`Int8Body`: its
    fit calibrates and extracts features in int8, and it scores in int8."""
    build = sksimplenet.detector.build_feature_extractor

    def build_int8(*args, **kwargs):
        extractor = build(*args, **kwargs)
        extractor.body = Int8Body(extractor.body)
        return extractor

    with mock.patch.object(sksimplenet.detector, "build_feature_extractor", build_int8):
        yield
