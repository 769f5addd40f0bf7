"""The backbone's ``precision``: what each one costs in AUROC and gains in speed.

Two parts, in one run:

1. Quality: for each seed, ``SimpleNetDetector`` with its defaults is fitted and tested on
   the data set (``benchmarks/suite.py``'s protocol, no reference) once per precision;
   image and pixel AUROC and their change against float32 on the same split.
2. Speed: ``anomaly_map(X, return_scores=True)`` on a batch of uint8 images at 224 x 224,
   for both default backbones (``efficientnet_lite0`` and ``wide_resnet50_2``, random
   weights: speed does not depend on them), every precision timed in turns in each round.

It prints the CPU and its flags that matter (AVX512-BF16, AMX-BF16, AVX512-FP16,
AMX-FP16) and what ``precision="auto"`` resolves to here. Precisions this CPU only
emulates are skipped (pass ``--emulated`` to include them: 20-30 times slower).

``--precisions int8`` also measures an int8 backbone, which ``precision`` does not offer
(``common.Int8Body``: post-training static quantisation, calibrated on the first batch of
training images, used in fit's feature extraction and in scoring alike): what it would cost
in AUROC and gain in speed.

Usage::

    python benchmarks/precision.py                      # mtd, seeds 0 1 2
    python benchmarks/precision.py --seeds 0 --rounds 3 --datasets elpv
    python benchmarks/precision.py --precisions bfloat16 int8   # and the int8 backbone
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import numpy as np
import torch
from common import Int8Body, int8_backbones, parse_settings
from quality import run
from timing import briefly_fitted, table

from sksimplenet.precision import backbone_dtype, cpu_capabilities, missing_feature

REDUCED = {"bfloat16": torch.bfloat16, "float16": torch.float16}
FLAGS = ("avx512_bf16", "amx_bf16", "avx512_fp16", "amx_fp16")


def precisions_to_measure(emulated: bool, names: list[str]) -> list[str]:
    cpu = torch.device("cpu")
    chosen = ["float32"]
    for name, dtype in REDUCED.items():
        if name not in names:
            continue
        missing = missing_feature(dtype, cpu)
        if missing is None or emulated:
            chosen.append(name)
        else:
            print(f"skipping {name}: this CPU lacks {missing} (emulated; --emulated to include it)")
    if "int8" in names:
        if "x86" in torch.backends.quantized.supported_engines:
            chosen.append("int8")
        else:
            print("skipping int8: this PyTorch has no x86 quantised kernels")
    return chosen


def detector_precision(precision: str) -> str:
    """The detector's ``precision`` parameter for a measured precision: int8 is a float32
    detector whose backbone body is an :class:`common.Int8Body`."""
    return "float32" if precision == "int8" else precision


def use_precision(detector, precision: str, bodies: dict) -> None:
    """Score ``detector`` in ``precision``; ``"int8"``: with the backbone body
    ``bodies["int8"]`` (an :class:`common.Int8Body`), otherwise with ``bodies["float"]``."""
    detector.model_.extractor.body = bodies["int8" if precision == "int8" else "float"]
    detector.set_params(precision=detector_precision(precision))


def quality(datasets: list[str], seeds: list[int], precisions: list[str], settings: dict) -> None:
    rows = []
    for dataset in datasets:
        for seed in seeds:
            results = {}
            for precision in precisions:
                params = {"backbone": "efficientnet_lite0", **settings}
                params["precision"] = detector_precision(precision)
                with int8_backbones() if precision == "int8" else contextlib.nullcontext():
                    results[precision] = run(dataset, seed, params, reference=False)
            base = results["float32"]
            for precision, row in results.items():
                pixel = row["pixel_auroc"]
                rows.append(
                    (
                        row["dataset"],
                        seed,
                        precision,
                        f"{row['image_auroc']:.4f}",
                        f"{row['image_auroc'] - base['image_auroc']:+.4f}",
                        "—" if pixel is None else f"{pixel:.4f}",
                        "—" if pixel is None else f"{pixel - base['pixel_auroc']:+.4f}",
                        f"{row['fit_seconds']:.0f}",
                    )
                )
            print(table(rows[-len(results) :], HEADER), flush=True)
    print("\nall splits")
    print(table(rows, HEADER))


HEADER = ("data", "seed", "precision", "image AUROC", "change", "pixel AUROC", "change", "fit s")


def speed(backbones: list[str], precisions: list[str], batch: int, rounds: int) -> None:
    images = np.random.default_rng(0).integers(0, 256, (batch, 224, 224, 3), dtype=np.uint8)
    rows = []
    for backbone in backbones:
        detector = briefly_fitted(images, backbone, weights=None)
        float_body = detector.model_.extractor.body
        bodies = {"float": float_body, "int8": Int8Body(float_body)}
        times = {precision: [] for precision in precisions}
        for precision in precisions:  # warm-up (int8: calibration on these images)
            use_precision(detector, precision, bodies)
            detector.anomaly_map(images, return_scores=True)
        for _ in range(rounds):
            for precision in precisions:
                use_precision(detector, precision, bodies)
                start = time.perf_counter()
                detector.anomaly_map(images, return_scores=True)
                times[precision].append(time.perf_counter() - start)
        base = statistics.median(times["float32"])
        for precision in precisions:
            median = statistics.median(times[precision])
            rows.append((backbone, precision, f"{batch / median:.1f}", f"{base / median:.2f}"))
    print(f"\nscoring speed, batch {batch} at 224 x 224, median of {rounds} rounds in turns")
    print(table(rows, ("backbone", "precision", "images/s", "x float32")))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", nargs="+", default=["mtd"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--backbones", nargs="+", default=["efficientnet_lite0", "wide_resnet50_2"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--emulated", action="store_true", help="also run precisions this CPU emulates")
    parser.add_argument(
        "--precisions",
        nargs="+",
        default=list(REDUCED),
        choices=[*REDUCED, "int8"],
        help="reduced precisions to compare with float32 (int8: a quantised backbone, not offered)",
    )
    parser.add_argument("--skip-quality", action="store_true", help="speed only")
    parser.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE", help="a detector parameter (quality)"
    )
    parser.add_argument("--skip-speed", action="store_true", help="quality only")
    args = parser.parse_args(argv)

    capabilities = cpu_capabilities()
    flags = ", ".join(f"{flag}={'yes' if capabilities.get(flag) else 'no'}" for flag in FLAGS)
    print(f"CPU: {capabilities.get('cpu_name', '?')}, {torch.get_num_threads()} threads; {flags}")
    print(f'precision="auto" here: {backbone_dtype("auto", torch.device("cpu"))}')
    precisions = precisions_to_measure(args.emulated, args.precisions)
    if not args.skip_speed:
        speed(args.backbones, precisions, args.batch, args.rounds)
    if not args.skip_quality:
        quality(args.datasets, args.seeds, precisions, parse_settings(args.set))


if __name__ == "__main__":
    main()
