"""Training time and scoring speed on one NVIDIA GPU: wide_resnet50_2 at 224 × 224.

Runs in well under 8 minutes on a current data-centre GPU and prints:

1. fit time: a fit with one epoch and one with ``--epochs`` on the same synthetic images
   (256 → 224 px, all patches, random weights), hence the time of the feature extraction
   and of one epoch, extrapolated (labelled so) to the paper's 762 images × 160 epochs;
2. scoring throughput at batch 1, 8 and 64, for each ``precision`` of the backbone
   (float32, float16, bfloat16; "auto" is float16 on CUDA): the network alone on a batch
   already on the GPU, the whole estimator call ``anomaly_map(X, return_scores=True)`` from
   uint8 NumPy images to NumPy maps and scores, and the bare float32 backbone for reference;
3. latency at batch 1 over many calls: p50 and p99, network and estimator, per precision;
4. how far each reduced precision moves the image scores, relative to their spread, on the
   same images (batch 64).

Every timing synchronises the GPU (``torch.cuda.synchronize``) before the clock starts and
before it stops. Without a CUDA GPU it exits at once with a message.

Usage::

    python benchmarks/gpu.py
    python benchmarks/gpu.py --quick          # fewer images, epochs and repeats
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import torch
from timing import table

from sksimplenet import SimpleNetDetector
from sksimplenet.datasets import make_synthetic
from sksimplenet.export import prepare_images

BATCHES = (1, 8, 64)
PRECISIONS = ("float32", "float16", "bfloat16")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(function, device: torch.device, repeats: int, warmup: int = 2) -> list[float]:
    """Seconds of each of ``repeats`` calls, the GPU synchronised around each one."""
    for _ in range(warmup):
        function()
    synchronize(device)
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        function()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def fit_times(args, device, images) -> SimpleNetDetector:
    settings = dict(backbone=args.backbone, weights=None, device=str(device), random_state=0)
    seconds = {}
    for epochs in (1, args.epochs):
        detector = SimpleNetDetector(**settings, epochs=epochs)
        synchronize(device)
        start = time.perf_counter()
        detector.fit(images)
        synchronize(device)
        seconds[epochs] = time.perf_counter() - start
    epoch = (seconds[args.epochs] - seconds[1]) / (args.epochs - 1)
    fixed = seconds[1] - epoch
    n = len(images)
    print(f"1. fit, {n} images, batch {detector.batch_size}, patch_fraction {detector.patch_fraction}")
    rows = [(f"fit, {e} epoch(s)", f"{s:.2f}") for e, s in seconds.items()]
    rows += [("one epoch", f"{epoch:.3f}"), ("extraction and set-up", f"{fixed:.2f}")]
    print(table(rows, ("measured", "seconds")))
    total = 762 * (160 * epoch / n + fixed / n)
    print(f"EXTRAPOLATION to 762 images x 160 epochs: {total:.0f} s = {total / 60:.1f} min")
    return detector


def throughput(detector, device, images, repeats: int, precisions=PRECISIONS) -> None:
    model = detector.model_
    rows, latency = [], {}
    for batch_size in BATCHES:
        batch = images[:batch_size]
        on_device = torch.from_numpy(prepare_images(detector, batch)).to(device)  # resized, cropped
        n = repeats if batch_size > 1 else 10 * repeats

        @torch.inference_mode()
        def network(x=on_device):
            return model(x)

        @torch.inference_mode()
        def backbone(x=on_device):
            return model.extractor(x)

        def estimator(x=batch):
            return detector.anomaly_map(x, return_scores=True)

        times = timed(backbone, device, n)
        rows.append((batch_size, "float32", "backbone", *rates(times, batch_size)))
        for precision in precisions:
            detector.set_params(precision=precision)
            model.precision = precision  # the network alone does not go through the estimator
            for name, function in (("network", network), ("estimator", estimator)):
                times = timed(function, device, n)
                rows.append((batch_size, precision, name, *rates(times, batch_size)))
                if batch_size == 1:
                    latency[f"{name}, {precision}"] = times
    detector.set_params(precision="float32")
    model.precision = "float32"
    print("\n2. scoring throughput (median)")
    print(table(rows, ("batch", "precision", "measured", "ms/batch", "images/s")))
    print("\n3. latency at batch 1")
    rows = [
        (name, len(times), f"{1000 * np.percentile(times, 50):.2f}", f"{1000 * np.percentile(times, 99):.2f}")
        for name, times in latency.items()
    ]
    print(table(rows, ("measured", "calls", "p50 ms", "p99 ms")))


def rates(times: list[float], batch_size: int) -> tuple[str, str]:
    median = statistics.median(times)
    return f"{1000 * median:.2f}", f"{batch_size / median:.1f}"


def precision_effect(detector, images, precisions=PRECISIONS) -> None:
    batch = images[:64]
    reference = detector.set_params(precision="float32").anomaly_map(batch, return_scores=True)[1]
    rows = []
    for precision in precisions:
        if precision == "float32":
            continue
        scores = detector.set_params(precision=precision).anomaly_map(batch, return_scores=True)[1]
        rows.append((precision, f"{np.abs(scores - reference).max() / reference.std():.3f}"))
    detector.set_params(precision="float32")
    print("\n4. score change of each reduced precision, batch 64")
    print(table(rows, ("precision", "max |score change| / score std")))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer images, epochs and repeats")
    parser.add_argument("--epochs", type=int, default=None, help="default: 10 (3 with --quick)")
    parser.add_argument("--backbone", default="wide_resnet50_2", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=256, help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS))
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit(
            "benchmarks/gpu.py needs an NVIDIA GPU, and PyTorch sees none here "
            "(torch.cuda.is_available() is False). Run it on a machine with one."
        )
    args.epochs = args.epochs or (3 if args.quick else 10)
    repeats = 5 if args.quick else 20
    start = time.perf_counter()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{name}, torch {torch.__version__}, cuDNN TF32 {torch.backends.cudnn.allow_tf32}")
    images, _, _ = make_synthetic(
        32 if args.quick else 64, 0, texture="object", size=args.size, random_state=0
    )
    detector = fit_times(args, device, images)
    test, _, _ = make_synthetic(64, 0, texture="object", size=args.size, random_state=1)
    throughput(detector, device, test, repeats, args.precisions)
    precision_effect(detector, test, args.precisions)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
