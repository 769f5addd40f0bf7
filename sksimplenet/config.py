"""Estimator parameters as text: values typed on a command line, config files, a saved record.

The command line's ``fit`` reads its parameters with these functions, and writes the ones it
used beside the model; a Python user can do the same::

    from sksimplenet import SimpleNetDetector
    from sksimplenet.config import read_config

    detector = SimpleNetDetector(**read_config("bottle.safetensors.params.json"))
"""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path

__all__ = [
    "combined_parameters",
    "parameters_json",
    "parameters_table",
    "parse_value",
    "read_config",
    "unknown_parameters",
]

#: Parameters a saved record leaves out: they say how to show progress, not what to fit.
NOT_RECORDED = ("verbose",)


def _tuples(value):
    """Lists (from JSON, TOML or a literal) as tuples, the estimator's documented form."""
    if isinstance(value, (list, tuple)):
        return tuple(_tuples(item) for item in value)
    return value


def parse_value(text: str):
    """A parameter value from text: a Python or JSON literal when it is one, else the text.

    ``32`` → 32, ``1e-4`` → 0.0001, ``none``/``None``/``null`` → None, ``true``/``false``
    (any case) → True/False, ``(224, 224)``, ``224,224`` or ``[224, 224]`` → (224, 224),
    ``"123"`` (quoted) → the string ``"123"``; anything else, such as ``auto``, ``cuda:0``
    or ``layer2``, is the string itself. Lists become tuples.
    """
    stripped = text.strip()
    lowered = stripped.lower()
    if lowered in ("none", "null"):
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return _tuples(ast.literal_eval(stripped))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        pass
    try:
        return _tuples(json.loads(stripped))
    except ValueError:
        return text


def unknown_parameters(names) -> list[str]:
    """The ``names`` that are not parameters of :class:`~sksimplenet.SimpleNetDetector`."""
    from .detector import SimpleNetDetector

    known = set(SimpleNetDetector._get_param_names())
    return [name for name in names if name not in known]


def read_config(path: str | os.PathLike) -> dict:
    """Estimator parameters from a ``.json`` or ``.toml`` file: one table of name = value.

    Lists become tuples. TOML has no null: set a parameter to None with JSON.

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        The file is not valid JSON or TOML, is not one table, has another extension, or
        names a parameter the estimator does not have (the message lists those it has).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    suffix = path.suffix.lower()
    text = path.read_text(encoding="utf-8")
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"config file {path} is not valid JSON: {error}") from None
    elif suffix == ".toml":
        try:
            import tomllib
        except ImportError:  # Python < 3.11
            try:
                import tomli as tomllib
            except ImportError:
                raise ImportError(
                    f"reading {path} needs Python 3.11 or later, or the package tomli "
                    "(pip install tomli); a .json config needs neither"
                ) from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise ValueError(f"config file {path} is not valid TOML: {error}") from None
    else:
        raise ValueError(f"config file {path} must end in .json or .toml")
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold one table of parameter names and values")
    return {name: _tuples(value) for name, value in data.items()}


def _checked(params: dict, source: str, reserved: dict) -> dict:
    """``params``, or a ValueError naming what the estimator does not take from ``source``."""
    from .detector import SimpleNetDetector

    for name in params:
        if name in reserved:
            raise ValueError(f"{source}: {name} is set by {reserved[name]}, not as a parameter")
    unknown = unknown_parameters(params)
    if unknown:
        valid = ", ".join(n for n in sorted(SimpleNetDetector._get_param_names()) if n not in reserved)
        raise ValueError(f"{source}: unknown parameter {unknown[0]!r}; the parameters are: {valid}")
    return params


def combined_parameters(
    config=None, named: dict | None = None, entries=(), reserved: dict | None = None
) -> dict:
    """Parameters from a config file, then named values, then ``NAME=VALUE`` texts, later ones winning.

    Parameters
    ----------
    config : str or path, default=None
        A file :func:`read_config` reads.
    named : dict, default=None
        Values already parsed (the command line's named options).
    entries : sequence of str
        ``NAME=VALUE`` texts (``-`` in a name reads as ``_``), parsed by :func:`parse_value`.
    reserved : dict of str to str, default=None
        Parameters set elsewhere, with where: refused in the file and the entries.

    Raises
    ------
    ValueError
        An entry without ``=``, or a name the estimator does not have or that is reserved; the
        message names the source and lists the parameters.
    """
    reserved = reserved or {}
    params = _checked(read_config(config), f"--config {config}", reserved) if config else {}
    params.update(named or {})
    texts = {}
    for entry in entries:
        name, equals, value = entry.partition("=")
        name = name.strip().replace("-", "_")
        if not equals or not name:
            raise ValueError(f"--set expects NAME=VALUE, got {entry!r}")
        texts[name] = parse_value(value)
    params.update(_checked(texts, "--set", reserved))
    return params


def _jsonable(value):
    """A parameter value as JSON: tuples as lists, paths as strings."""
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # NumPy scalars
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def parameters_json(detector) -> str:
    """The detector's parameters as a JSON table that :func:`read_config` reads back."""
    params = {
        name: _jsonable(value) for name, value in detector.get_params().items() if name not in NOT_RECORDED
    }
    return json.dumps(params, indent=2) + "\n"


def parameters_table() -> str:
    """A markdown table of the estimator's parameters: name, default, valid values."""
    from sklearn.utils._param_validation import make_constraint

    from .detector import PARAMETER_CONSTRAINTS, SimpleNetDetector

    defaults = SimpleNetDetector().get_params()
    lines = ["| parameter | default | valid values |", "| --- | --- | --- |"]
    for name in SimpleNetDetector._get_param_names():
        if name in NOT_RECORDED:
            continue
        valid = ", ".join(str(make_constraint(constraint)) for constraint in PARAMETER_CONSTRAINTS[name])
        lines.append(f"| {name} | {json.dumps(_jsonable(defaults[name]))} | {valid} |")
    return "\n".join(lines)
