"""Measure the levers that decide what a last-epoch SimpleNet model is worth (docs/quality.md).

Every variant trains on cached frozen ``efficientnet_lite0`` features (images squashed to
224 x 224) of a seeded 90 % of the training images; the other 10 % are held out exactly as
``SimpleNetDetector.fit`` holds them out, and set the decision threshold (their 99th
percentile image score). The model evaluated is the one training returns: no variant is
chosen by test results inside this script, it prints them all, beside the corrected
PatchCore-style reference on the same features (all training images in its bank, image
score = largest raw patch distance).

Usage::

    python benchmarks/levers.py --cache /tmp/features --datasets mtd --seeds 0 1 2
    python benchmarks/levers.py --cache /tmp/features --datasets elpv --only last ema
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from common import cached_features, knn_baseline
from mtd_variants import make_parts, score_test

from sksimplenet.metrics import image_auroc, masks_at_map_resolution, pixel_auroc
from sksimplenet.scoring import image_scores
from sksimplenet.training import held_out_split, train_discriminator

CPU_MODE = {"epochs": 40, "batch_size": 32, "patch_fraction": 0.125, "sigma": 0.3}
VARIANTS = {
    "last": {},
    "cosine": {"lr_schedule": "cosine"},
    "ema": {"weight_averaging": 0.99},
    "ema+cosine": {"weight_averaging": 0.99, "lr_schedule": "cosine"},
    "ema, sigma from held-out distances": {"weight_averaging": 0.99, "sigma": "data"},
    "ema, radii 0.15-1.2": {"weight_averaging": 0.99, "sigma": (0.15, 0.3, 0.6, 1.2)},
    "ema, sigma 0.6": {"weight_averaging": 0.99, "sigma": 0.6},
    "ema, 80 epochs": {"weight_averaging": 0.99, "epochs": 80},
    "ema, identity adaptor": {"weight_averaging": 0.99, "identity": True},
    # Refitting on every image after the held-out check: the held-out images are then
    # trained on, so its FPR is optimistic; only the AUROCs compare.
    "ema, every image trained on": {"weight_averaging": 0.99, "every_image": True},
    "ema, identity adaptor, radii 0.15-1.2": {
        "weight_averaging": 0.99,
        "identity": True,
        "sigma": (0.15, 0.3, 0.6, 1.2),
    },
    "ema, identity adaptor, sigma from held-out distances": {
        "weight_averaging": 0.99,
        "identity": True,
        "sigma": "data",
    },
}


@torch.inference_mode()
def held_out_sigma(scaler, train, held_out, bank_size=20000, seed=0) -> float:
    """Noise scale from the data: the median distance of held-out normal patches to their
    nearest training patch, in standardised units, divided by sqrt(feature_dim), so that the
    noise moves a patch about as far as normal variation does."""
    width = train.shape[-1]
    generator = torch.Generator().manual_seed(seed)
    bank = scaler(train.reshape(-1, width).float())
    bank = bank[torch.randperm(len(bank), generator=generator)[:bank_size]]
    queries = scaler(held_out.reshape(-1, width).float())
    queries = queries[torch.randperm(len(queries), generator=generator)[:4000]]
    distances = torch.cdist(queries, bank).amin(1)
    return float(distances.median()) / width**0.5


def scores_and_maps(scaler, adaptor, discriminator, features, size):
    """Image scores (mean of the top 1 % of each map, the detector's default) and maps."""
    maps, _ = score_test(scaler, adaptor, discriminator, features, size)
    return image_scores(maps, 0.01).numpy(), maps


def run_variant(train, held_out, test, labels, masks, size, seed, options):
    options = {**CPU_MODE, **options}
    scaler, adaptor, discriminator = make_parts(train, "standardize", identity=options.pop("identity", False))
    if options["sigma"] == "data":
        options["sigma"] = held_out_sigma(scaler, train, held_out, seed=seed)
    start = time.perf_counter()
    history = train_discriminator(
        train, scaler, adaptor, discriminator, seed=seed, validation_features=held_out, **options
    )
    seconds = time.perf_counter() - start
    held_scores, _ = scores_and_maps(scaler, adaptor, discriminator, held_out, size)
    threshold = np.quantile(held_scores, 0.99)
    scores, maps = scores_and_maps(scaler, adaptor, discriminator, test, size)
    flagged = scores > threshold
    normal = labels == 1
    row = {
        "image_auroc": image_auroc(labels, scores),
        "pixel_auroc": pixel_auroc(masks, maps.numpy()) if masks is not None else float("nan"),
        "fpr": float(flagged[normal].mean()),
        "recall": float(flagged[~normal].mean()),
        "final_loss": history.loss[-1],
        "held_out_first": history.validation[0],
        "held_out_last": history.validation[-1],
        "train_seconds": seconds,
    }
    if isinstance(options["sigma"], float):
        row["sigma"] = options["sigma"]
    return row


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, required=True, help="folder for the cached features")
    parser.add_argument("--datasets", nargs="+", default=["mtd", "elpv"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--only", nargs="*", help="names of the variants to run")
    parser.add_argument("--size", type=int, default=224, help="images are squashed to size x size")
    parser.add_argument("--json", type=Path, help="append each row to this file (JSON lines)")
    parser.add_argument("--no-reference", action="store_true", help="skip the kNN reference")
    args = parser.parse_args(argv)
    size = (args.size, args.size)

    rows = []
    for dataset in args.datasets:
        for seed in args.seeds:
            features, test, split = cached_features(seed, args.cache, dataset, resize=size, crop_size=None)
            labels = split["test_labels"]
            masks = masks_at_map_resolution(split["test_masks"], labels, size, None, [size] * len(labels))
            trained, held = held_out_split(len(features), 0.1, seed)
            train, held_out = features[trained], features[held]
            if not args.no_reference:
                knn_scores, knn_maps = knn_baseline(features, test, size=size, seed=seed)
                reference = {
                    "image_auroc": image_auroc(labels, knn_scores),
                    "pixel_auroc": pixel_auroc(masks, knn_maps) if masks is not None else float("nan"),
                }
            variants = [(name, VARIANTS[name]) for name in args.only or VARIANTS]
            if not args.no_reference:
                variants.insert(0, ("kNN reference", None))
            for name, options in variants:
                if options is None:
                    row = reference
                else:
                    options = dict(options)
                    trained_on = features if options.pop("every_image", False) else train
                    row = run_variant(trained_on, held_out, test, labels, masks, size, seed, options)
                row = {"dataset": f"{Path(dataset).name} {args.size}px", "seed": seed, "variant": name, **row}
                rows.append(row)
                line = json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})
                print(line, flush=True)
                if args.json:
                    with open(args.json, "a") as handle:
                        handle.write(line + "\n")

    print("\n| data set | variant | image AUROC | pixel AUROC | FPR | recall | per seed (image) |")
    print("|---|---|---|---|---|---|---|")
    keys = sorted(
        {(r["dataset"], r["variant"]) for r in rows},
        key=lambda k: [(r["dataset"], r["variant"]) for r in rows].index(k),
    )
    for dataset, variant in keys:
        group = [r for r in rows if r["dataset"] == dataset and r["variant"] == variant]

        def cell(key, group=group):
            values = np.array([r.get(key, np.nan) for r in group], dtype=float)
            return "" if np.isnan(values).all() else f"{np.nanmean(values):.3f} ± {np.nanstd(values):.3f}"

        per_seed = ", ".join(f"{r['image_auroc']:.3f}" for r in group)
        print(
            f"| {dataset} | {variant} | {cell('image_auroc')} | {cell('pixel_auroc')} | "
            f"{cell('fpr')} | {cell('recall')} | {per_seed} |"
        )


if __name__ == "__main__":
    main()
