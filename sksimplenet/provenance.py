"""Which files a detector was fitted on, so that evaluating on them can be caught.

``fit`` on image files records each file's path and the SHA-256 of its bytes in the fitted
attribute ``provenance_`` (the labelled anomalies it learned from apart, as
``anomalous_files``); a test set that shares files with it (under any name) measures
memory, not detection. In-memory images (arrays, PIL images, tensors) record nothing.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, as 64 hexadecimal digits."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def training_files(images: Sequence) -> list[dict[str, str]]:
    """``[{"path": ..., "sha256": ...}, ...]`` for images given as files; ``[]`` otherwise."""
    if not images or not isinstance(images[0], (str, os.PathLike)):
        return []
    return [{"path": os.fspath(path), "sha256": file_sha256(path)} for path in images]


def files_seen_in_training(detector, paths: Sequence[str | os.PathLike]) -> list[str]:
    """The ``paths`` whose content equals a file the detector was fitted on (any name): a normal
    training image, or an image labelled anomalous that training learned from.

    Parameters
    ----------
    detector : SimpleNetDetector
        Fitted; detectors fitted on in-memory images, or loaded from files written before
        ``provenance_`` existed, have no record and give ``[]``.
    paths : sequence of str or path
        Files to check, for example a test set.

    Returns
    -------
    list of str
        The matching paths, in the order given.
    """
    record = getattr(detector, "provenance_", None) or {}
    entries = [*record.get("files", []), *record.get("anomalous_files", [])]
    trained = {entry["sha256"] for entry in entries}
    if not trained:
        return []
    return [os.fspath(path) for path in paths if file_sha256(path) in trained]
