"""Constraint objects for :data:`sksimplenet.detector.PARAMETER_CONSTRAINTS`.

scikit-learn checks an estimator's constraints table with
``sklearn.utils._param_validation.validate_parameter_constraints``, which names the
parameter, the values it accepts and the value it got. It knows its own constraint classes
only; the two here extend them: :class:`Number` (an ``Interval`` that also refuses booleans,
NaN and infinities) and :class:`Rule` (a predicate with a description, for the values no
built-in constraint describes, such as a device name or an image size).
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Callable

import numpy as np
from sklearn.utils._param_validation import Interval, Options


class Number(Interval):
    """``Interval`` for finite numbers that are not booleans (NumPy scalars included)."""

    def is_satisfied_by(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, numbers.Number):
            return False
        return super().is_satisfied_by(value) and math.isfinite(value)


class Rule(Options):
    """A value satisfying ``predicate``; ``description`` is what error messages call it.

    Parameters
    ----------
    predicate : callable
        ``predicate(value) -> bool``; an exception counts as False.
    description : str
        Completes "The 'x' parameter of SimpleNetDetector must be ...".
    """

    def __init__(self, predicate: Callable[[object], bool], description: str):
        super().__init__(object, set())
        self.predicate = predicate
        self.description = description

    def is_satisfied_by(self, value) -> bool:
        try:
            return bool(self.predicate(value))
        except Exception:
            return False

    def __str__(self) -> str:
        return self.description


def is_integer(value, minimum: int = 1) -> bool:
    """Whether ``value`` is an integer (not a boolean) of at least ``minimum``."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= minimum


_POSITIVE = Number(numbers.Real, 0, None, closed="neither")


def is_positive_number(value) -> bool:
    """Whether ``value`` is a finite number > 0 (not a boolean)."""
    return _POSITIVE.is_satisfied_by(value)


def is_size(value) -> bool:
    """Whether ``value`` is an image size: a positive int or a 1- or 2-sequence of them."""
    if is_integer(value):
        return True
    return isinstance(value, (tuple, list)) and len(value) in (1, 2) and all(is_integer(v) for v in value)


SIZE = Rule(is_size, "a positive int or a (height, width) pair of them")


FINITE = Number(numbers.Real, None, None, closed="neither")


def is_number_list(value) -> bool:
    """Whether ``value`` is a list of finite numbers."""
    return isinstance(value, list) and all(FINITE.is_satisfied_by(v) for v in value)


def integer_tuple(length: int, maximum: int | None = None) -> Callable[[object], bool]:
    """A predicate: a tuple of ``length`` ints >= 1 (and <= ``maximum``)."""

    def check(value) -> bool:
        return (
            isinstance(value, tuple)
            and len(value) == length
            and all(is_integer(v) and (maximum is None or v <= maximum) for v in value)
        )

    return check


def is_vector(value, kinds: str) -> bool:
    """Whether ``value`` is a 1-D NumPy array whose dtype kind is one of ``kinds``."""
    return isinstance(value, np.ndarray) and value.ndim == 1 and value.dtype.kind in kinds


def _is_file_list(files) -> bool:
    return isinstance(files, list) and all(
        isinstance(entry, dict)
        and set(entry) == {"path", "sha256"}
        and isinstance(entry["path"], str)
        and isinstance(entry["sha256"], str)
        and re.fullmatch(r"[0-9a-f]{64}", entry["sha256"]) is not None
        for entry in files
    )


def is_provenance(value) -> bool:
    """Whether ``value`` is ``{"files": [{"path", "sha256"}, ...], "split": dict or None,
    "anomalous_files": [...]}`` (``anomalous_files`` is absent from earlier models)."""
    if not (isinstance(value, dict) and set(value) - {"anomalous_files"} == {"files", "split"}):
        return False
    split = value["split"]
    split_ok = split is None or (
        isinstance(split, dict)
        and all(isinstance(v, (str, int, float, bool, type(None))) for v in split.values())
    )
    return _is_file_list(value["files"]) and _is_file_list(value.get("anomalous_files", [])) and split_ok


def is_record(value, depth: int = 2) -> bool:
    """Whether ``value`` is a dict of str to None, bool, str, finite numbers or (``depth`` deep)
    such dicts: a small record that JSON holds exactly."""
    if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
        return False
    return all(
        v is None
        or isinstance(v, (bool, str))
        or FINITE.is_satisfied_by(v)
        or (depth > 1 and is_record(v, depth - 1))
        for v in value.values()
    )
