"""Scoring throughput against the bare backbone, and the input pipeline, on the CPU.

(a) For wide_resnet50_2 (random weights: speed does not depend on them) and
efficientnet_lite0, batch 8 at 224 × 224, measured in turn, round after round:

- ``backbone``: the truncated backbone alone, as the detector builds it (channels-last
  layout), on a ready float batch;
- ``backbone, NCHW``: the same module in PyTorch's default layout;
- ``backbone, as its library runs it``: the truncated network as torchvision (or the
  EfficientNet-Lite module) defines it, in NCHW layout with its BatchNorm layers, which
  the detector folds into the convolutions;
- ``scoring``: ``detector.anomaly_map(X, return_scores=True)`` on the uint8 images: input
  checks, preprocessing, backbone, folded head, anomaly maps and image scores, NumPy out;
- ``two calls``: ``anomaly_map(X)`` then ``score_samples(X)``, two passes;
- ``unfolded head``: the batch through the reference path (patch embedding, scaler,
  adaptor, discriminator, upsampling and convolution smoothing), i.e. the cost of scoring
  before the head was folded.

It prints images/s and the ratio of each to ``backbone``, then ratio (a) itself, scoring
against a bare forward of the truncated backbone (target ≥ 0.9), once for each of the two
bare backbones: the library's module, and the detector's own faster copy (which shows
what the head costs).

(b) Input pipeline: scoring 48 JPEG files (512 × 512, resized to 256 and cropped to 224)
with efficientnet_lite0, decoded in the main process (``n_jobs=None``) and in two
DataLoader workers (``n_jobs=2``), beside decoding alone and the network alone. It also
records how long the network waited for each batch: later batches that are ready at once
were decoded while the network ran. Whether that shortens the run depends on idle cores
and on decoding being a large enough share to repay starting the workers.

Usage::

    python benchmarks/inference.py --threads 1
    python benchmarks/inference.py --quick
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import library_backbone, plain_layout
from PIL import Image
from timing import add_common_arguments, briefly_fitted, configure_threads, interleaved, machine, table

from sksimplenet.datasets import make_synthetic
from sksimplenet.features import embed_patches
from sksimplenet.image_io import load_image, preprocess
from sksimplenet.scoring import image_scores, score_maps

BACKBONES = {"wide_resnet50_2": None, "efficientnet_lite0": "DEFAULT"}


def unfolded_scoring(model, batch: torch.Tensor):
    """The reference path, step by step, as scoring ran before the head was folded."""
    features = embed_patches(model.extractor(batch), model.patch_size, model.feature_dim)
    n, channels, h, w = features.shape
    flat = features.permute(0, 2, 3, 1).reshape(-1, channels)
    patch_scores = -model.discriminator(model.adaptor(model.scaler(flat))).reshape(n, h, w)
    maps = score_maps(patch_scores, batch.shape[-2:], model.smoothing_sigma)
    return maps, image_scores(maps, model.image_score)


def measure(backbone: str, weights, images: np.ndarray, repeats: int) -> tuple[list[tuple], str]:
    """Rows of (a) for one backbone, and its line of ratio (a)."""
    batch = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255.0)
    detector = briefly_fitted(
        images, backbone, weights=weights, resize=224, crop_size=224, patch_fraction=0.05
    )
    model = detector.model_
    extractor, plain = model.extractor, plain_layout(model.extractor)
    library = library_backbone(backbone, weights)

    @torch.inference_mode()
    def bare(module):
        return module(batch)

    @torch.inference_mode()
    def unfolded():
        return unfolded_scoring(model, batch)

    seconds = interleaved(
        {
            "backbone": lambda: bare(extractor),
            "backbone, NCHW": lambda: bare(plain),
            "backbone, as its library runs it": lambda: bare(library),
            "scoring": lambda: detector.anomaly_map(images, return_scores=True),
            "two calls": lambda: (detector.anomaly_map(images), detector.score_samples(images)),
            "unfolded head": unfolded,
        },
        repeats,
    )
    # The folded and the unfolded paths agree (maps and scores within 1e-4).
    maps, scores = detector.anomaly_map(images, return_scores=True)
    ref_maps, ref_scores = unfolded()
    difference = max(np.abs(maps - ref_maps.numpy()).max(), np.abs(scores - ref_scores.numpy()).max())
    rows = [
        (backbone, name, f"{value:.3f}", f"{len(images) / value:.1f}", f"{seconds['backbone'] / value:.3f}")
        for name, value in seconds.items()
    ]
    rows.append((backbone, "max |folded - unfolded|", f"{difference:.1e}", "", ""))
    scoring = seconds["scoring"]
    summary = (
        f"{backbone}: {seconds['backbone, as its library runs it'] / scoring:.3f} against the truncated "
        f"backbone as its library runs it, {seconds['backbone'] / scoring:.3f} against the detector's own "
        "(BatchNorm folded, channels-last)"
    )
    return rows, summary


def throughput(repeats: int, batch_size: int, size: int) -> None:
    images, _, _ = make_synthetic(batch_size, 0, texture="object", size=size, random_state=0)
    rows, summaries = [], []
    for backbone, weights in BACKBONES.items():
        # efficientnet_lite0 is an order of magnitude faster: three times the rounds.
        rounds = repeats if backbone == "wide_resnet50_2" else 3 * repeats
        backbone_rows, summary = measure(backbone, weights, images, rounds)
        rows += [(*row[:1], rounds, *row[1:]) for row in backbone_rows]
        summaries.append(summary)
    print(f"(a) batch {batch_size} at {size} x {size}, median of interleaved rounds")
    print(table(rows, ("backbone", "rounds", "measured", "s/batch", "images/s", "ratio to backbone")))
    print("\nratio (a), scoring throughput / bare truncated backbone's (target >= 0.9):")
    print("\n".join(summaries))


def pipeline(repeats: int, n_files: int) -> None:
    images, _, _ = make_synthetic(n_files, 0, texture="object", size=512, random_state=1)
    detector = briefly_fitted(images, "efficientnet_lite0", patch_fraction=0.05)
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for index, image in enumerate(images):
            path = Path(folder) / f"{index:03d}.jpg"
            Image.fromarray(image).save(path, quality=95)
            paths.append(str(path))
        decoded = torch.stack([preprocess(load_image(p)) for p in paths])

        def decode_only():
            for path in paths:
                preprocess(load_image(path), detector.resize, detector.crop_size)

        @torch.inference_mode()
        def network_only():
            for start in range(0, n_files, 16):
                detector.model_(decoded[start : start + 16])

        waits: dict[str, list[list[float]]] = {"files, n_jobs=None": [], "files, n_jobs=2": []}

        def files(n_jobs):
            name = f"files, n_jobs={n_jobs}"

            def score():
                detector.set_params(n_jobs=n_jobs)
                timed = TimedLoader.recording()  # observe the estimator's waits for data
                try:
                    detector.anomaly_map(paths, return_scores=True)
                finally:
                    torch.utils.data.DataLoader = timed.original
                waits[name].append(timed.waits)

            return score

        seconds = interleaved(
            {
                "decoding only": decode_only,
                "network only": network_only,
                "files, n_jobs=None": files(None),
                "files, n_jobs=2": files(2),
            },
            repeats,
        )
    total = seconds["decoding only"] + seconds["network only"]
    rows = []
    for name, value in seconds.items():
        first = later = ""
        if name in waits:
            first = f"{statistics.median(w[0] for w in waits[name]):.3f}"
            later = f"{statistics.median(sum(w[1:]) for w in waits[name]):.3f}"
        rows.append((name, f"{value:.2f}", f"{n_files / value:.1f}", first, later))
    print(f"\n(b) input pipeline: {n_files} JPEG files, efficientnet_lite0, median of {repeats} rounds")
    print(table(rows, ("measured", "seconds", "images/s", "wait, 1st batch (s)", "wait, later (s)")))
    print(
        f"decoding + network = {total:.2f} s; in the main process {seconds['files, n_jobs=None']:.2f} s; "
        f"with two workers {seconds['files, n_jobs=2']:.2f} s. Later batches that are ready when the "
        "network asks for them (wait near 0) were decoded while the network ran."
    )


class TimedLoader:
    """Iterates a DataLoader and records the time spent waiting for each batch."""

    def __init__(self, loader):
        self.loader = loader
        self.waits: list[float] = []

    @classmethod
    def recording(cls):
        """Make ``torch.utils.data.DataLoader`` record the waits of the next loader built (the
        estimator's), until ``torch.utils.data.DataLoader = recorder.original`` restores it."""
        original = torch.utils.data.DataLoader
        recorder = cls(None)
        recorder.original = original

        def build(*args, **kwargs):
            recorder.loader = original(*args, **kwargs)
            return recorder

        torch.utils.data.DataLoader = build
        return recorder

    def __iter__(self):
        iterator = iter(self.loader)
        while True:
            start = time.perf_counter()
            try:
                batch = next(iterator)
            except StopIteration:
                return
            self.waits.append(time.perf_counter() - start)
            yield batch


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_arguments(parser)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    configure_threads(args.threads)
    print(machine())
    start = time.perf_counter()
    throughput(2 if args.quick else 7, args.batch, args.size)
    pipeline(1 if args.quick else 3, 16 if args.quick else 48)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
