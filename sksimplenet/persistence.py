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
- ``fitted``: the fitted attributes of :data:`~sksimplenet.detector.FITTED_ATTRIBUTES`
  (everything but ``model_``). Files written before some of them existed load with the
  value that table gives for earlier fits; files without ``decision_scores_`` and
  ``labels_`` (which need the training images) load without them.

A SHA-256 digest of the JSON document and of every tensor is stored next to it, so a file
that was truncated, corrupted or edited after it was written is refused. The digest guards
against accidents, not against an attacker, who can recompute it; what makes the format safe
to open is that loading never executes code from the file and builds nothing before every
entry is checked (:func:`load` lists the checks; docs/security.md describes them): the
network is rebuilt from validated parameters and only plain numbers are read into it.

Compatibility rule: a file loads in any sksimplenet with the same major version as the one
that wrote it (``1.x`` reads files of every ``1.y``); a file whose format version is unknown
is refused. Parameters added to the estimator after a file was written take their defaults,
except those of :data:`~sksimplenet.detector.EARLIER_VALUES` (``count_padding=False``,
``synthetic_defects=0``), which take the value that describes how such files were fitted;
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
import re
import warnings
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from sklearn.utils.validation import check_is_fitted
from torch import nn

from ._constraints import is_integer
from .backbones import build_feature_extractor
from .detector import (
    EARLIER_VALUES,
    FITTED_ATTRIBUTES,
    PARAMETER_CONSTRAINTS,
    REQUIRED,
    SimpleNetDetector,
    complete_fitted_attributes,
    validate_params,
)
from .model import make_model

FORMAT = "sksimplenet.SimpleNetDetector"
FORMAT_VERSION = 1
_DOCUMENT_KEY = "sksimplenet"
_DIGEST_KEY = "sksimplenet.sha256"
_TAGS = ("__tuple__", "__path__", "__ndarray__", "__weights__", "__module__")
_DOCUMENT_KEYS = frozenset(
    {"format", "format_version", "package_version", "torch_version", "params", "fitted"}
)
#: The longest JSON document :func:`load` reads, in characters (a model's document is a few
#: kilobytes; one entry per training image, such as ``held_out_indices_``, adds a few bytes each).
MAX_DOCUMENT_CHARS = 32 << 20
_MAX_NESTING = 32  # save writes at most 4 levels (and one per dimension of an array)
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


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


class _Invalid(Exception):
    """An entry of a model file's document that is not what :func:`save` writes."""


# What __ndarray__ entries may hold: booleans and numbers of at most 8 bytes.
_ARRAY_KINDS = "biuf"
_TAG_KEYS = {
    "__tuple__": {"__tuple__"},
    "__path__": {"__path__"},
    "__ndarray__": {"__ndarray__", "dtype", "shape"},
    "__weights__": {"__weights__"},
}


def _decode(value, where: str):
    """The value :func:`_encode` was given, from its JSON form; :class:`_Invalid` if malformed."""
    if isinstance(value, list):
        return [_decode(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, dict):
        return value
    tags = [tag for tag in _TAG_KEYS if tag in value]
    if not tags:
        return {key: _decode(v, f"{where}[{key!r}]") for key, v in value.items()}
    tag = tags[0]
    if set(value) != _TAG_KEYS[tag]:
        raise _Invalid(f"{where} is a malformed {tag} entry (keys {sorted(value)})")
    content = value[tag]
    if tag == "__tuple__":
        if not isinstance(content, list):
            raise _Invalid(f"{where} is a malformed tuple (not a list)")
        return tuple(_decode(v, f"{where}[{i}]") for i, v in enumerate(content))
    if tag == "__path__":
        if not isinstance(content, str):
            raise _Invalid(f"{where} is a malformed path (not a string)")
        return Path(content)
    if tag == "__weights__":
        import torchvision

        try:
            return torchvision.models.get_weight(str(content))
        except (ValueError, KeyError, AttributeError, TypeError):
            raise _Invalid(f"{where} names unknown torchvision weights {content!r}") from None
    return _decode_array(value, where)


def _decode_array(value: dict, where: str) -> np.ndarray:
    dtype, shape = value["dtype"], value["shape"]
    try:
        dtype = np.dtype(dtype) if isinstance(dtype, str) else None
    except TypeError:
        dtype = None
    if dtype is None or dtype.kind not in _ARRAY_KINDS or dtype.itemsize > 8:
        raise _Invalid(f"{where} has an array dtype {value['dtype']!r}: expected booleans or numbers")
    if not (isinstance(shape, list) and all(is_integer(n, minimum=0) for n in shape)):
        raise _Invalid(f"{where} has an array shape {shape!r}: expected a list of sizes")
    try:
        array = np.array(value["__ndarray__"], dtype=dtype)
    except (TypeError, ValueError, OverflowError):
        raise _Invalid(f"{where} holds values that are not a {dtype} array") from None
    if array.size != math.prod(shape):
        raise _Invalid(f"{where} holds {array.size} values, not the {math.prod(shape)} of shape {shape}")
    return array.reshape(shape)


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
        # safetensors writes owner-only files (0600): give the file the mode any new file
        # gets here (0666 less the umask), as joblib's and open()'s files have.
        partial.touch()
        mode = partial.stat().st_mode & 0o777
        save_file(tensors, partial, metadata=metadata)
        partial.chmod(mode)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


# ---------------------------------------------------------------------- load
def _major(version: str, path: Path) -> int:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        raise ModelFileError(f"{str(path)!r}: package_version {version!r} is not a version number") from None


def _nesting_depth(document: str) -> int:
    """How deeply the JSON ``document``'s lists and objects nest (strings ignored), without
    parsing it, so that a crafted document cannot exhaust the parser's recursion."""
    skeleton = np.frombuffer(_JSON_STRING.sub("", document).encode(), dtype=np.uint8)
    steps = np.isin(skeleton, (ord("["), ord("{"))).astype(np.int64)
    steps -= np.isin(skeleton, (ord("]"), ord("}")))
    return int(np.cumsum(steps).max(initial=0))


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a finite number")


def _read(path: Path) -> tuple[dict, str, dict[str, torch.Tensor], str | None]:
    """The document (parsed), its text, the tensors and the stored digest of a model file."""
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
    document = metadata[_DOCUMENT_KEY]
    if len(document) > MAX_DOCUMENT_CHARS:
        raise ModelFileError(
            f"{str(path)!r} has a {len(document)}-character document, more than "
            f"sksimplenet.persistence.MAX_DOCUMENT_CHARS = {MAX_DOCUMENT_CHARS}"
        )
    if _nesting_depth(document) > _MAX_NESTING:
        raise ModelFileError(f"{str(path)!r} has a document nested deeper than {_MAX_NESTING} levels")
    try:
        header = json.loads(document, parse_constant=_refuse_constant)
    except ValueError as error:  # JSONDecodeError, non-finite constants, oversized integers
        raise ModelFileError(
            f"{str(path)!r} is corrupted: its JSON metadata does not parse ({error})"
        ) from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ModelFileError(f"{str(path)!r} is not a sksimplenet model file (format is not {FORMAT!r})")
    return header, document, tensors, metadata.get(_DIGEST_KEY)


def _load_pickle(path: Path, allow_pickle: bool) -> SimpleNetDetector:
    if not allow_pickle:
        raise ModelFileError(
            f"{path} is not a safe (safetensors) model file. If it is a joblib/pickle file, opening it "
            "runs code stored in it: pass allow_pickle=True (--allow-pickle) only if you trust where "
            "it came from"
        )
    import joblib

    detector = joblib.load(path)
    if not isinstance(detector, SimpleNetDetector):
        raise ModelFileError(f"{path} holds a {type(detector).__name__}, not a fitted SimpleNetDetector")
    return detector


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


def _check_document(header: dict, document: str, tensors: dict, digest: str | None, path: Path) -> None:
    """The document's keys are the ones :func:`save` writes, and the digest matches."""
    unknown = sorted(set(header) - _DOCUMENT_KEYS)
    if unknown:
        raise ModelFileError(f"{str(path)!r} has unknown entries {unknown[:5]}")
    for key in ("params", "fitted"):
        if not isinstance(header.get(key), dict):
            raise ModelFileError(f"{str(path)!r} is missing the key {key!r}")
    # Files written before some fitted attributes existed get the values that describe them.
    complete_fitted_attributes(header["fitted"])
    required = [name for name, entry in FITTED_ATTRIBUTES.items() if entry.earlier is REQUIRED]
    missing = [name for name in required if name not in header["fitted"]]
    if missing:
        raise ModelFileError(f"{str(path)!r} is missing the fitted attributes {missing}")
    unknown = sorted(set(header["fitted"]) - set(FITTED_ATTRIBUTES))
    if unknown:
        raise ModelFileError(
            f"{str(path)!r} has fitted attributes {unknown[:5]} that this sksimplenet "
            f"({_package_version()}) does not know: it was written by sksimplenet {header['package_version']}"
        )
    unknown = sorted(set(header["params"]) - set(PARAMETER_CONSTRAINTS))
    if unknown:
        raise ModelFileError(
            f"{str(path)!r} has parameters {unknown[:5]} that this sksimplenet ({_package_version()}) "
            f"does not know: it was written by sksimplenet {header['package_version']}"
        )
    if digest is None:
        raise ModelFileError(f"{str(path)!r} is missing its checksum entry {_DIGEST_KEY!r}")
    if _digest(document, tensors) != digest:
        raise ModelFileError(
            f"{str(path)!r} is corrupted: its contents do not match the checksum written with "
            "them (the file was modified or damaged after it was saved)"
        )


def _backbone_param(stored, backbone: nn.Module | None, path: Path):
    """The backbone to rebuild: the file's name, or the module the caller passes for a file
    fitted with a custom module (whose code the file cannot hold)."""
    if isinstance(stored, dict):
        if set(stored) != {"__module__"} or not isinstance(stored["__module__"], str):
            raise _Invalid(f"parameter 'backbone' is malformed ({stored!r:.80})")
        class_name = stored["__module__"]
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
                stacklevel=3,
            )
        return backbone
    if backbone is not None:
        raise ValueError(
            f"backbone= is only for files fitted with a custom nn.Module backbone; this file's "
            f"backbone is {stored!r}, which is rebuilt from the file"
        )
    return stored


def _detector_from_params(stored: dict, backbone: nn.Module | None, path: Path) -> SimpleNetDetector:
    """An unfitted detector with the file's parameters, each checked against the estimator's
    own constraints table (the parameters added since the file was written: defaults)."""
    params = {name: _decode(v, f"parameter {name!r}") for name, v in stored.items() if name != "backbone"}
    for name, value in EARLIER_VALUES.items():
        params.setdefault(name, value)
    detector = SimpleNetDetector(**params)  # a backbone the file does not name: the default
    detector.backbone = _backbone_param(stored.get("backbone", detector.backbone), backbone, path)
    try:
        validate_params(detector.get_params(deep=False))
    except ValueError as error:
        raise _Invalid(str(error)) from None
    return detector


def _check_fitted(fitted: dict) -> dict:
    """The decoded fitted attributes, each checked against its rule in
    :data:`~sksimplenet.detector.FITTED_ATTRIBUTES`."""
    values = {name: _decode(value, f"fitted attribute {name!r}") for name, value in fitted.items()}
    for name, value in values.items():
        rule = FITTED_ATTRIBUTES[name].rule
        if not rule.is_satisfied_by(value):
            raise _Invalid(f"fitted attribute {name!r} must be {rule}, got {value!r:.80}")
    if len(values.get("held_out_indices_", [])) != values.get("n_held_out_images_", 0):
        raise _Invalid("held_out_indices_ does not list n_held_out_images_ images")
    if "labels_" in values and values["labels_"].shape != values.get("decision_scores_", np.empty(0)).shape:
        raise _Invalid("labels_ and decision_scores_ do not have one entry per training image each")
    return values


def _model_from_tensors(detector: SimpleNetDetector, n_features: int, tensors: dict) -> nn.Module:
    """The fitted network, built on the meta device (no memory) from the parameters, compared
    entry by entry with the file's tensors, then given those tensors as its weights."""
    with torch.device("meta"):
        try:
            extractor = build_feature_extractor(detector.backbone, detector.layers, weights=None)
        except (ValueError, TypeError, RuntimeError, KeyError) as error:
            raise _Invalid(f"cannot rebuild the backbone: {error}") from error
        model = make_model(extractor, n_features, detector.get_params(deep=False))
    # Files written before the backbone's batch norms were folded hold them separately.
    try:
        tensors = extractor.fold_batch_norm_entries(tensors, prefix="extractor.")
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as error:
        raise _Invalid(f"its backbone batch norms do not fold: {error}") from None
    expected = model.state_dict()
    absent, extra = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if absent or extra:
        details = []
        if absent:
            details.append(f"missing {len(absent)} weight tensors (e.g. {absent[:3]})")
        if extra:
            details.append(f"{len(extra)} unexpected weight tensors (e.g. {extra[:3]})")
        raise _Invalid(f"it does not match its parameters: {'; '.join(details)}")
    for name, reference in expected.items():
        tensor = tensors[name]
        if tensor.shape != reference.shape or tensor.dtype != reference.dtype:
            raise _Invalid(
                f"weight tensor {name!r} is {tensor.dtype} {tuple(tensor.shape)}; its parameters "
                f"make it {reference.dtype} {tuple(reference.shape)}"
            )
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise _Invalid(f"weight tensor {name!r} holds NaN or infinite values")
        # Statistics that the scores divide by or take the square root of.
        if name.endswith("running_var") and (tensor < 0).any():
            raise _Invalid(f"weight tensor {name!r} holds negative variances")
        if name == "scaler.scale" and (tensor <= 0).any():
            raise _Invalid(f"weight tensor {name!r} holds scales <= 0")
    model.load_state_dict(tensors, strict=True, assign=True)
    return model.eval()


def load(
    path: str | os.PathLike, backbone: nn.Module | None = None, *, allow_pickle: bool = False
) -> SimpleNetDetector:
    """Read a detector written by :func:`save` (or, with ``allow_pickle``, by joblib or pickle).

    The file's content decides how it is read, never its name. A safe file (safetensors) is
    read as below. Anything else may be a pickle, and opening a pickle runs code stored in
    it: it is refused unless ``allow_pickle``, and then read with :func:`joblib.load`.

    Nothing in the file is executed, and nothing is built from it before it is checked: the
    document's size and nesting are bounded, its keys must be those :func:`save` writes,
    every parameter must pass the estimator's constraints table and every fitted attribute
    its rule (:data:`~sksimplenet.detector.FITTED_ATTRIBUTES`). The network is then rebuilt
    from the parameters on PyTorch's meta device, which allocates nothing, and each of its
    weight tensors must match the file's in name, dtype and shape and be finite before the
    file's tensors become its weights. Memory use is bounded by the file's size.

    Parameters
    ----------
    path : str or path
        A file written by :func:`save`.
    backbone : torch.nn.Module, optional
        Required, and only allowed, when the detector was fitted with a custom module as its
        backbone: a module of the same architecture (its weights are replaced by the file's).
    allow_pickle : bool, default=False
        Also read a file that is not in the safe format, with :func:`joblib.load`. Only for
        files you made yourself or otherwise trust.

    Returns
    -------
    SimpleNetDetector
        Fitted, with the saved parameters and fitted attributes; on the CPU until it scores.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ModelFileError
        Any malformed file: not a sksimplenet model file, truncated, corrupted or edited, an
        unknown format version or another major version, unknown or missing entries, a
        parameter or fitted attribute outside its valid values, weights that do not match the
        parameters; also when a custom backbone is needed but not given, and a file that is
        not in the safe format without ``allow_pickle`` (or one that holds something other
        than a SimpleNetDetector).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Model file {str(path)!r} does not exist")
    if not is_safetensors_file(path):
        return _load_pickle(path, allow_pickle)
    header, document, tensors, digest = _read(path)
    _check_versions(header, path)
    _check_document(header, document, tensors, digest, path)
    try:
        detector = _detector_from_params(header["params"], backbone, path)
        fitted = _check_fitted(header["fitted"])
        model = _model_from_tensors(detector, fitted["feature_shape_"][-1], tensors)
    except _Invalid as error:
        raise ModelFileError(f"{str(path)!r} is not a valid model file: {error}") from None

    detector.model_ = model
    detector.__dict__.update(fitted)
    return detector
