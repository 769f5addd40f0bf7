"""Safe model files: a fitted :class:`~sksimplenet.SimpleNetDetector` without pickle.

One `safetensors <https://huggingface.co/docs/safetensors>`_ file holds every tensor of
``model_.state_dict()`` (the frozen backbone's weights included, so a file scores the same
with no network and no weights cache) and, in the file's string metadata, one JSON document
with the rest:

- ``format`` and ``format_version`` (this module writes and reads version
  :data:`FORMAT_VERSION`),
- ``package_version``: the ``sksimplenet.__version__`` that wrote the file,
- ``params``: ``get_params()``; tuples, paths and torchvision weight enums are tagged so
  that they come back as the same types,
- ``fitted``: the fitted attributes (``offset_``, ``threshold_``, ``loss_history_``,
  ``validation_history_``, ``n_train_images_``, ``feature_shape_``, ``input_size_``,
  ``fit_time_``, ...), everything but ``model_``. Files written before ``threshold_``,
  ``validation_history_``, ``n_held_out_images_`` and ``held_out_indices_`` existed load
  with ``-offset_``, ``[]``, 0 and ``[]``.

A SHA-256 digest of the JSON document and of every tensor is stored next to it, so a file
that was truncated, corrupted or edited after it was written is refused. The digest guards
against accidents, not against an attacker, who can recompute it; what makes the format safe
to open is that loading never executes code from the file: the network is rebuilt from the
parameters and only plain numbers are read into it.

Compatibility rule: a file loads in any sksimplenet with the same major version as the one
that wrote it (``1.x`` reads files of every ``1.y``); a file whose format version is unknown
is refused. Parameters added to the estimator after a file was written take their defaults;
parameters of the file that this version does not know are refused. Files written before the
backbone's BatchNorm layers were folded into its convolutions store those layers apart;
they are folded as the file is read.

A custom ``nn.Module`` backbone cannot be stored safely (it is code): the file records its
class name only, and :func:`load` needs the module, ``load(path, backbone=MyNet())``; its
weights are then read from the file.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
import numbers
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from sklearn.utils.validation import check_is_fitted
from torch import nn

from .backbones import build_feature_extractor
from .detector import SimpleNetDetector

FORMAT = "sksimplenet.SimpleNetDetector"
FORMAT_VERSION = 1
_DOCUMENT_KEY = "sksimplenet"
_DIGEST_KEY = "sksimplenet.sha256"
_REQUIRED_FITTED = (
    "offset_",
    "loss_history_",
    "n_train_images_",
    "feature_shape_",
    "input_size_",
    "fit_time_",
)
_TAGS = ("__tuple__", "__path__", "__ndarray__", "__weights__", "__module__")
_SUPPORTED = (
    "None, bool, int, float, str, lists, tuples, dicts with str keys, paths, NumPy arrays "
    "and torchvision weight enums"
)


class ModelFileError(ValueError):
    """A model file cannot be loaded: not a model file, truncated, corrupted or edited,
    written by an incompatible version, or missing entries."""


def _package_version() -> str:
    from . import __version__

    return __version__


# ---------------------------------------------------------------------- JSON encoding
def _encode(value, where: str):
    """Plain JSON for ``value``; tuples, paths, arrays and weight enums become tagged dicts."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        if not math.isfinite(value):
            raise ValueError(f"Cannot save {where}: it is {value}, and the file stores finite numbers only")
        return float(value)
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, f"{where}[{i}]") for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            raise TypeError(f"Cannot save {where}: a dict whose keys are not all strings")
        if len(value) == 1 and next(iter(value)) in _TAGS:
            raise TypeError(f"Cannot save {where}: the key {next(iter(value))!r} is reserved")
        return {key: _encode(v, f"{where}[{key!r}]") for key, v in value.items()}
    if isinstance(value, os.PathLike):
        return {"__path__": os.fspath(value)}
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise ValueError(f"Cannot save {where}: the array holds NaN or infinite values")
        return {"__ndarray__": value.tolist(), "dtype": value.dtype.str, "shape": list(value.shape)}
    if isinstance(value, enum.Enum) and type(value).__module__.startswith("torchvision."):
        return {"__weights__": f"{type(value).__name__}.{value.name}"}
    raise TypeError(
        f"Cannot save {where}: a {type(value).__module__}.{type(value).__qualname__} cannot be "
        f"stored in the safe format, which holds {_SUPPORTED}. Use a plain value (for example an "
        "int for random_state), or pickle/joblib for files you will only load yourself."
    )


def _decode(value):
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if "__tuple__" in value:
        return tuple(_decode(v) for v in value["__tuple__"])
    if "__path__" in value:
        return Path(value["__path__"])
    if "__ndarray__" in value:
        return np.array(value["__ndarray__"], dtype=np.dtype(value["dtype"])).reshape(value["shape"])
    if "__weights__" in value:
        import torchvision

        return torchvision.models.get_weight(value["__weights__"])
    return {key: _decode(v) for key, v in value.items()}


def _digest(document: str, tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 of the JSON document and of every tensor's name, dtype, shape and bytes."""
    digest = hashlib.sha256(document.encode("utf-8"))
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"\0{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


# ---------------------------------------------------------------------- save
def save(detector: SimpleNetDetector, path: str | os.PathLike) -> None:
    """Write a fitted detector to ``path`` in the safe format (a safetensors file).

    The file is written next to ``path`` and renamed into place, so an interrupted save never
    leaves a partial file under ``path``. Suggested extension: ``.safetensors``.

    Parameters
    ----------
    detector : SimpleNetDetector
        A fitted detector.
    path : str or path
        Destination file; replaced if it exists.

    Raises
    ------
    sklearn.exceptions.NotFittedError
        ``detector`` is not fitted.
    TypeError
        A parameter or fitted attribute cannot be stored (for example ``random_state`` as a
        ``RandomState``); the message names it.
    ValueError
        A parameter or fitted attribute is NaN or infinite.
    """
    check_is_fitted(detector, "model_")
    params = {}
    for name, value in detector.get_params(deep=False).items():
        if name == "backbone" and isinstance(value, nn.Module):
            params[name] = {"__module__": type(value).__qualname__}
        else:
            params[name] = _encode(value, f"parameter {name!r}")
    fitted = {
        name: _encode(value, f"fitted attribute {name!r}")
        for name, value in vars(detector).items()
        if name.endswith("_") and not name.startswith("_") and name != "model_"
    }
    document = json.dumps(
        {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "package_version": _package_version(),
            "torch_version": torch.__version__,
            "params": params,
            "fitted": fitted,
        },
        sort_keys=True,
        allow_nan=False,
    )

    tensors, storages = {}, set()
    for name, tensor in detector.model_.state_dict().items():
        tensor = tensor.detach().to("cpu").contiguous()
        storage = tensor.untyped_storage().data_ptr()
        if storage in storages:  # safetensors refuses tensors that share memory
            tensor = tensor.clone()
        storages.add(tensor.untyped_storage().data_ptr())
        tensors[name] = tensor
    metadata = {_DOCUMENT_KEY: document, _DIGEST_KEY: _digest(document, tensors)}

    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(
            f"Cannot save to {str(path)!r}: the folder {str(path.parent)!r} does not exist"
        )
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        save_file(tensors, partial, metadata=metadata)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


# ---------------------------------------------------------------------- load
def _major(version: str, path: Path) -> int:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        raise ModelFileError(f"{str(path)!r}: package_version {version!r} is not a version number") from None


def _read(path: Path) -> tuple[dict, str, dict[str, torch.Tensor], str | None]:
    try:
        with safe_open(path, framework="pt", device="cpu") as file:
            metadata = file.metadata() or {}
            tensors = {name: file.get_tensor(name) for name in file.keys()}
    except (SafetensorError, OSError, RuntimeError, ValueError) as error:
        raise ModelFileError(
            f"{str(path)!r} is not a readable model file: it is truncated, corrupted or not a "
            f"safetensors file ({error})"
        ) from error
    if _DOCUMENT_KEY not in metadata:
        raise ModelFileError(
            f"{str(path)!r} is a safetensors file but not a sksimplenet model file (its metadata "
            f"has no {_DOCUMENT_KEY!r} entry)"
        )
    try:
        header = json.loads(metadata[_DOCUMENT_KEY])
    except json.JSONDecodeError as error:
        raise ModelFileError(
            f"{str(path)!r} is corrupted: its JSON metadata does not parse ({error})"
        ) from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ModelFileError(f"{str(path)!r} is not a sksimplenet model file (format is not {FORMAT!r})")
    return header, metadata[_DOCUMENT_KEY], tensors, metadata.get(_DIGEST_KEY)


def is_safetensors_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds a safetensors file, judged by its content, never by its name.

    A safetensors file starts with the length of its JSON header (8 bytes, little-endian),
    then the header itself, which opens with ``{``; the length fits inside the file.
    Nothing else is read, and nothing is executed.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            prefix = handle.read(9)
    except OSError:
        return False
    if len(prefix) < 9:
        return False
    header_length = int.from_bytes(prefix[:8], "little")
    return 2 <= header_length <= size - 8 and prefix[8:9] == b"{"


def _check_versions(header: dict, path: Path) -> None:
    if "format_version" not in header:
        raise ModelFileError(f"{str(path)!r} is missing the key 'format_version'")
    if header["format_version"] != FORMAT_VERSION:
        raise ModelFileError(
            f"{str(path)!r} has unknown format version {header['format_version']!r}: this "
            f"sksimplenet ({_package_version()}) reads format version {FORMAT_VERSION}. The file was "
            f"written by sksimplenet {header.get('package_version', '(unknown)')}."
        )
    if "package_version" not in header:
        raise ModelFileError(f"{str(path)!r} is missing the key 'package_version'")
    saved, current = header["package_version"], _package_version()
    if _major(saved, path) != _major(current, path):
        raise ModelFileError(
            f"{str(path)!r} was written by sksimplenet {saved}, which is incompatible with this "
            f"sksimplenet {current}: files load only in versions with the same major version "
            f"({_major(saved, path)}.x). Load it with sksimplenet {_major(saved, path)}.x, or fit again."
        )


def load(path: str | os.PathLike, backbone: nn.Module | None = None) -> SimpleNetDetector:
    """Read a detector written by :func:`save` (or :meth:`SimpleNetDetector.save`).

    Nothing in the file is executed: the network is rebuilt from the stored parameters (with
    no download; ``weights=None``) and the stored tensors are loaded into it strictly, so
    that the detector scores exactly as the saved one did.

    Parameters
    ----------
    path : str or path
        A file written by :func:`save`.
    backbone : torch.nn.Module, optional
        Required, and only allowed, when the detector was fitted with a custom module as its
        backbone: a module of the same architecture (its weights are replaced by the file's).

    Returns
    -------
    SimpleNetDetector
        Fitted, with the saved parameters and fitted attributes; on the CPU until it scores.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ModelFileError
        The file is not a sksimplenet model file, is truncated, corrupted or edited, has an
        unknown format version, was written by a sksimplenet with another major version, or
        lacks entries or weights; also when a custom backbone is needed but not given.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Model file {str(path)!r} does not exist")
    header, document, tensors, digest = _read(path)
    _check_versions(header, path)
    for key in ("params", "fitted"):
        if not isinstance(header.get(key), dict):
            raise ModelFileError(f"{str(path)!r} is missing the key {key!r}")
    missing = [name for name in _REQUIRED_FITTED if name not in header["fitted"]]
    if missing:
        raise ModelFileError(f"{str(path)!r} is missing the fitted attributes {missing}")
    if digest is None:
        raise ModelFileError(f"{str(path)!r} is missing its checksum entry {_DIGEST_KEY!r}")
    if _digest(document, tensors) != digest:
        raise ModelFileError(
            f"{str(path)!r} is corrupted: its contents do not match the checksum written with "
            "them (the file was modified or damaged after it was saved)"
        )

    stored = header["params"]
    known = SimpleNetDetector().get_params(deep=False)
    unknown = sorted(set(stored) - set(known))
    if unknown:
        raise ModelFileError(
            f"{str(path)!r} has parameters {unknown} that this sksimplenet ({_package_version()}) does "
            f"not know: it was written by sksimplenet {header['package_version']}"
        )
    params = {name: _decode(value) for name, value in stored.items() if name != "backbone"}
    stored_backbone = stored.get("backbone", known["backbone"])
    if isinstance(stored_backbone, dict) and "__module__" in stored_backbone:
        class_name = stored_backbone["__module__"]
        if backbone is None:
            raise ModelFileError(
                f"{str(path)!r} was fitted with a custom nn.Module backbone of class {class_name!r}, "
                f"whose code the file does not store: pass it, load(path, backbone={class_name}(...))"
            )
        if not isinstance(backbone, nn.Module):
            raise TypeError(f"backbone must be an nn.Module, got {type(backbone).__name__}")
        if type(backbone).__qualname__ != class_name:
            warnings.warn(
                f"The file's backbone was a {class_name}, the given one is a "
                f"{type(backbone).__qualname__}; its weights are still loaded strictly",
                stacklevel=2,
            )
        params["backbone"] = backbone
    else:
        if backbone is not None:
            raise ValueError(
                f"backbone= is only for files fitted with a custom nn.Module backbone; this file's "
                f"backbone is {stored_backbone!r}, which is rebuilt from the file"
            )
        params["backbone"] = stored_backbone
    detector = SimpleNetDetector(**params)
    fitted = {name: _decode(value) for name, value in header["fitted"].items()}

    try:
        extractor = build_feature_extractor(detector.backbone, detector.layers, weights=None)
    except (ValueError, TypeError, RuntimeError) as error:
        raise ModelFileError(f"{str(path)!r}: cannot rebuild the backbone: {error}") from error
    model = detector._make_model(extractor, int(fitted["feature_shape_"][-1]))
    # Files written before the backbone's batch norms were folded hold them separately.
    tensors = extractor.fold_batch_norm_entries(tensors, prefix="extractor.")
    expected = set(model.state_dict())
    absent, extra = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
    if absent or extra:
        details = []
        if absent:
            details.append(f"missing {len(absent)} weight tensors (e.g. {absent[:3]})")
        if extra:
            details.append(f"{len(extra)} unexpected weight tensors (e.g. {extra[:3]})")
        raise ModelFileError(f"{str(path)!r} does not match its parameters: {'; '.join(details)}")
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as error:
        raise ModelFileError(f"{str(path)!r} does not match its parameters: {error}") from error
    model.eval()

    detector.model_ = model
    for name, value in fitted.items():
        setattr(detector, name, value)
    # Files written before held-out images existed: what those fits amount to.
    detector.__dict__.setdefault("threshold_", -float(detector.offset_))
    detector.__dict__.setdefault("validation_history_", [])
    detector.__dict__.setdefault("n_held_out_images_", 0)
    detector.__dict__.setdefault("held_out_indices_", [])
    return detector
