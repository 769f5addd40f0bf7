"""The backbone's arithmetic precision: ``"float32"``, ``"bfloat16"``, ``"float16"`` or ``"auto"``.

Reduced precision runs the frozen backbone under :func:`torch.autocast`; everything after
it (patch embedding, adaptor, discriminator, maps) stays float32. Separately,
``training_precision`` runs the discriminator's layers of ``fit``'s training steps under
autocast (:func:`training_dtype`); the weights, the optimiser and the scoring stay float32.
Reduced precision is fast only where the hardware computes in that type natively:

- CPU: bfloat16 needs AVX512-BF16 or AMX-BF16 (x86) or the BF16 extension (Arm);
  float16 needs AVX512-FP16 or AMX-FP16. Without them PyTorch emulates the type, and
  the backbone runs many times slower (docs/performance.md measures how much).
- CUDA: float16 everywhere; bfloat16 from compute capability 8.0 (Ampere).

``"auto"`` picks bfloat16 on a CPU with native bfloat16, float16 on CUDA, float32
otherwise. Asking for a type the device lacks warns once per process, naming the missing
feature; it is not refused, since the results are still right, only slower.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

import torch

PRECISIONS = ("float32", "bfloat16", "float16", "auto")
#: What ``training_precision`` accepts: float16 is left out, since its gradients underflow
#: without loss scaling.
TRAINING_PRECISIONS = ("float32", "bfloat16", "auto")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# CPU capability flags (torch's names) any one of which computes the type natively.
_CPU_FEATURES = {
    torch.bfloat16: ("avx512_bf16", "amx_bf16"),
    torch.float16: ("avx512_fp16", "amx_fp16"),
}
_warned: set[tuple[str, str]] = set()


@functools.cache
def cpu_capabilities() -> Mapping[str, object]:
    """PyTorch's view of this CPU's instruction-set extensions (``{"avx512_bf16": True, ...}``),
    read once: ``precision="auto"`` consults it for every batch."""
    try:
        return MappingProxyType(dict(torch._C._cpu._get_cpu_capability()))
    except (AttributeError, RuntimeError):
        return MappingProxyType({})


@functools.cache
def _arm_has(flag: str) -> bool:
    try:
        return any(
            line.startswith("Features") and flag in line.split()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
        )
    except OSError:
        return False


def missing_feature(dtype: torch.dtype, device: torch.device) -> str | None:
    """The hardware feature ``device`` lacks to compute in ``dtype`` natively, or None.

    Parameters
    ----------
    dtype : torch.dtype
        ``torch.float32``, ``torch.bfloat16`` or ``torch.float16``.
    device : torch.device

    Returns
    -------
    str or None
        For example ``"AVX512-BF16 or AMX-BF16"``; None when ``dtype`` is native there.
    """
    if dtype == torch.float32:
        return None
    if device.type == "cuda":
        if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported(including_emulation=False):
            return "compute capability 8.0 (bfloat16 tensor cores)"
        return None
    if device.type != "cpu":
        return None
    capabilities = cpu_capabilities()
    if capabilities.get("architecture", "") in ("aarch64", "arm64"):
        flag = "bf16" if dtype == torch.bfloat16 else "fphp"
        return None if _arm_has(flag) else f"the Arm {flag.upper()} extension"
    features = _CPU_FEATURES[dtype]
    if any(capabilities.get(feature, False) for feature in features):
        return None
    return " or ".join(feature.upper().replace("_", "-") for feature in features)


def backbone_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The dtype the backbone computes in for ``precision`` on ``device``.

    Warns (once per precision and device type) when ``device`` lacks native support for
    an explicitly requested reduced precision.
    """
    if precision == "auto":
        if device.type == "cuda":
            return torch.float16
        if device.type == "cpu" and missing_feature(torch.bfloat16, device) is None:
            return torch.bfloat16
        return torch.float32
    dtype = _DTYPES[precision]
    missing = missing_feature(dtype, device)
    if missing is not None and (precision, device.type) not in _warned:
        _warned.add((precision, device.type))
        warnings.warn(
            f"precision={precision!r} on a {device.type.upper()} without {missing}: PyTorch emulates "
            f"{precision} there, and the backbone runs many times slower than in float32 (measured "
            "in docs/performance.md). Use precision='auto' or 'float32' on this machine.",
            UserWarning,
            stacklevel=3,
        )
    return dtype


def training_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The dtype the discriminator's training steps compute in for ``training_precision``.

    ``"auto"`` is bfloat16 where ``device`` computes it natively (a CPU with AVX512-BF16,
    AMX-BF16 or Arm's BF16; CUDA from compute capability 8.0) and float32 elsewhere. An
    explicit ``"bfloat16"`` the device lacks warns as :func:`backbone_dtype` does.
    """
    if precision == "auto":
        native = device.type in ("cpu", "cuda") and missing_feature(torch.bfloat16, device) is None
        return torch.bfloat16 if native else torch.float32
    return backbone_dtype(precision, device)
