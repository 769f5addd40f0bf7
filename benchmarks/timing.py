"""Timing helpers shared by the performance benchmarks.

Every figure a benchmark prints is compared with others measured in the same run: the
measured functions take turns, round after round, and each one's median is reported, so a
slow spell of a shared machine affects all of them alike.
"""

from __future__ import annotations

import os
import platform
import random
import statistics
import time
from collections.abc import Callable

import torch


def briefly_fitted(images, backbone: str, **settings):
    """A detector fitted in seconds, one epoch on the first four ``images`` on the CPU: for
    timing scoring, whose speed does not depend on how well the detector is trained."""
    from sksimplenet import SimpleNetDetector

    params = {"epochs": 1, "device": "cpu", "random_state": 0, **settings}
    return SimpleNetDetector(backbone, **params).fit(images[:4])


def add_common_arguments(parser) -> None:
    """``--quick`` and ``--threads``, which every performance benchmark takes."""
    parser.add_argument("--quick", action="store_true", help="a short run with fewer repeats")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="PyTorch CPU threads (default: PyTorch's choice). On a machine shared with other "
        "jobs, the number of idle cores is much faster than oversubscribing",
    )


def configure_threads(threads: int | None) -> None:
    if threads is not None:
        torch.set_num_threads(threads)


def machine() -> str:
    """One line: CPU, cores, PyTorch threads, PyTorch version, GPU if any."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__} with {torch.get_num_threads()} threads, {gpu}"
    )


def interleaved(
    functions: dict[str, Callable[[], object]], repeats: int, warmup: int = 1
) -> dict[str, float]:
    """Median seconds of each function, run in turn for ``repeats`` rounds after ``warmup``.

    Each round takes the functions in a new (seeded) random order: what ran just before
    matters (a function that frees much memory makes the next one fault it in again), so no
    function always follows the same one.
    """
    for _ in range(warmup):
        for function in functions.values():
            function()
    times: dict[str, list[float]] = {name: [] for name in functions}
    order = list(functions)
    shuffle = random.Random(0).shuffle
    for _ in range(repeats):
        shuffle(order)
        for name in order:
            start = time.perf_counter()
            functions[name]()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def table(rows: list[tuple], header: tuple) -> str:
    """Rows as an aligned plain-text table."""
    cells = [tuple(str(c) for c in header)] + [tuple(str(c) for c in row) for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)) for row in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)
