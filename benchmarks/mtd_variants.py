"""Measure SimpleNet variants on MTD from one cached feature extraction (the table in docs/quality.md).

Every variant trains on the same frozen ``efficientnet_lite0`` features of the training
split (extracted once and cached on disk) and is evaluated at its last epoch on the test
split. No variant is chosen by test results inside this script: it prints them all.

Usage::

    python benchmarks/mtd_variants.py --cache /tmp/mtd-features            # every variant
    python benchmarks/mtd_variants.py --cache /tmp/mtd-features --only paper standardize-0.3
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from common import cached_features, knn_baseline

from sksimplenet.metrics import image_auroc, masks_at_map_resolution, pixel_auroc
from sksimplenet.networks import Adaptor, Discriminator, FeatureScaler
from sksimplenet.scoring import image_scores, score_maps
from sksimplenet.training import train_discriminator

FAST = {"epochs": 16, "batch_size": 32, "patch_fraction": 0.125}
VARIANTS = {
    "paper": {"scaling": None, "sigma": 0.015, **FAST},
    "raw-0.4": {"scaling": None, "sigma": 0.4, **FAST},
    "standardize-0.1": {"scaling": "standardize", "sigma": 0.1, **FAST},
    "standardize-0.3": {"scaling": "standardize", "sigma": 0.3, **FAST},
    "standardize-1.0": {"scaling": "standardize", "sigma": 1.0, **FAST},
    "standardize-mix": {"scaling": "standardize", "sigma": (0.1, 0.3, 1.0), **FAST},
    "standardize-0.3-bias": {"scaling": "standardize", "sigma": 0.3, "adaptor_bias": True, **FAST},
    "standardize-0.3-frozen-adaptor": {"scaling": "standardize", "sigma": 0.3, "adaptor_lr": 0.0, **FAST},
    "standardize-0.3-identity-adaptor": {"scaling": "standardize", "sigma": 0.3, "identity": True, **FAST},
    "standardize-0.3-40-epochs": {"scaling": "standardize", "sigma": 0.3, **{**FAST, "epochs": 40}},
}


def make_parts(train, scaling=None, identity=False, adaptor_bias=False):
    """Scaler (fitted on ``train`` when ``scaling="standardize"``), adaptor and discriminator."""
    width = train.shape[-1]
    generator = torch.Generator().manual_seed(0)
    scaler = FeatureScaler(width)
    if scaling == "standardize":
        scaler.fit(train.reshape(-1, width))
    init = "identity" if identity else "xavier"
    adaptor = Adaptor(width, bias=adaptor_bias, init=init, generator=generator)
    discriminator = Discriminator(width, 1024, generator=generator)
    return scaler, adaptor, discriminator


@torch.inference_mode()
def score_test(scaler, adaptor, discriminator, test, size):
    """Smoothed maps ``(n, H, W)`` and raw patch-score maxima ``(n,)`` of cached test features."""
    width = test.shape[-1]
    maps, patch_max = [], []
    for begin in range(0, len(test), 32):
        batch = test[begin : begin + 32].float()
        n, h, w, _ = batch.shape
        scores = -discriminator(adaptor(scaler(batch.reshape(-1, width)))).reshape(n, h, w)
        patch_max.append(scores.flatten(1).amax(1))
        maps.append(score_maps(scores, size, 4.0))
    return torch.cat(maps), torch.cat(patch_max)


def train_and_score(
    train, test, size, scaling=None, sigma=0.015, identity=False, adaptor_bias=False, **kwargs
):
    """Train one variant on cached features; return maps and raw patch scores of the test set."""
    scaler, adaptor, discriminator = make_parts(train, scaling, identity, adaptor_bias)
    start = time.perf_counter()
    history = train_discriminator(train, scaler, adaptor, discriminator, sigma=sigma, seed=0, **kwargs)
    seconds = time.perf_counter() - start
    maps, patch_max = score_test(scaler, adaptor, discriminator, test, size)
    return maps, patch_max, history, seconds


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, required=True, help="folder for the cached features")
    parser.add_argument("--seed", type=int, default=0, help="seed of the train/test split")
    parser.add_argument("--size", type=int, default=224, help="images are squashed to size x size")
    parser.add_argument("--only", nargs="*", help="names of the variants to run")
    parser.add_argument("--baseline", action="store_true", help="also run the kNN reference")
    args = parser.parse_args(argv)

    size = (args.size, args.size)
    train, test, split = cached_features(args.seed, args.cache, resize=size, crop_size=None)
    labels = split["test_labels"]
    masks = masks_at_map_resolution(split["test_masks"], labels, size, None, [size] * len(labels))
    top = size[0] * size[1] // 100

    rows = []
    if args.baseline:
        scores, maps = knn_baseline(train, test, size=size, seed=args.seed)
        rows.append(
            {
                "variant": "kNN reference (10% bank)",
                "image_auroc": image_auroc(labels, scores),
                "pixel_auroc": pixel_auroc(masks, maps),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    for name in args.only or VARIANTS:
        maps, patch_max, history, seconds = train_and_score(train, test, size, **VARIANTS[name])
        rows.append(
            {
                "variant": name,
                "image_auroc": image_auroc(labels, image_scores(maps, "max").numpy()),
                "image_auroc_raw_patch_max": image_auroc(labels, patch_max.numpy()),
                "image_auroc_top1pct_mean": image_auroc(
                    labels, maps.flatten(1).topk(top, 1).values.mean(1).numpy()
                ),
                "pixel_auroc": pixel_auroc(masks, maps.numpy()),
                "final_loss": history[-1],
                "train_seconds": seconds,
            }
        )
        print(json.dumps(rows[-1]), flush=True)

    keys = [
        "image_auroc",
        "image_auroc_raw_patch_max",
        "image_auroc_top1pct_mean",
        "pixel_auroc",
        "final_loss",
    ]
    print("\n| variant | " + " | ".join(keys) + " |\n|---" * (len(keys) + 1) + "|")
    for row in rows:
        cells = [f"{row[k]:.4f}" if k in row else "" for k in keys]
        print(f"| {row['variant']} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
