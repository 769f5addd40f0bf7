"""sksimplenet: SimpleNet image anomaly detection as a scikit-learn estimator.

The public names are imported on first use (PEP 562), so that ``import sksimplenet`` and
the command line's ``--help`` do not load PyTorch; ``from sksimplenet import
SimpleNetDetector`` works as usual.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.3.0"
__all__ = ["SimpleNetDetector", "PAPER_PARAMS", "ModelFileError", "evaluate", "load", "save", "__version__"]

# Public name -> the submodule that defines it.
_LAZY = {
    "SimpleNetDetector": ".detector",
    "PAPER_PARAMS": ".detector",
    "ModelFileError": ".persistence",
    "load": ".persistence",
    "save": ".persistence",
    "evaluate": ".inspection",
}

if TYPE_CHECKING:  # what static tools see; at run time the names come from __getattr__
    from .detector import PAPER_PARAMS, SimpleNetDetector
    from .inspection import evaluate
    from .persistence import ModelFileError, load, save


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
