"""How SimpleNet's MTD result changes with training length: an analysis, not a model choice.

One configuration (the package defaults on ``efficientnet_lite0`` features, cached as in
``mtd_variants.py``) trains for the whole schedule; at the listed epochs a copy of the
networks, with BatchNorm statistics recomputed as ``fit`` does at its end, scores the test
split. The figures describe what a *last-epoch* model of that length gives; nothing here
feeds back into training or into the package's defaults by test labels. The official code
instead keeps, per category, the epoch with the best test AUROC, which hides the
dependence this script shows.

Usage::

    python benchmarks/mtd_schedule.py --cache /tmp/mtd-features --seed 1
    python benchmarks/mtd_schedule.py --cache /tmp/mtd-features --batch-size 32 --patch-fraction 0.125 \\
        --epochs 40 --checkpoints 10 20 40
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch
from common import cached_features
from mtd_variants import make_parts, score_test

from sksimplenet.metrics import image_auroc, masks_at_map_resolution, pixel_auroc
from sksimplenet.scoring import image_scores
from sksimplenet.training import _recompute_batchnorm_statistics, train_discriminator


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, required=True, help="folder for the cached features")
    parser.add_argument("--seed", type=int, default=0, help="seed of the train/test split")
    parser.add_argument("--epochs", type=int, default=160)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--patch-fraction", type=float, default=1.0)
    parser.add_argument("--sigma", type=float, default=0.3)
    parser.add_argument(
        "--checkpoints",
        type=int,
        nargs="+",
        default=[1, 2, 5, 10, 20, 40, 80, 120, 160],
        help="1-based epochs",
    )
    args = parser.parse_args(argv)

    size = (224, 224)  # MTD squashed, as in benchmarks/mtd.py
    train, test, split = cached_features(args.seed, args.cache, resize=size, crop_size=None)
    labels = split["test_labels"]
    masks = masks_at_map_resolution(split["test_masks"], labels, size, None, [size] * len(labels))
    scaler, adaptor, discriminator = make_parts(train, "standardize")
    steps_per_epoch = -(-len(train) // args.batch_size)
    print(f"{len(train)} training images, {steps_per_epoch} steps per epoch", flush=True)
    start = time.perf_counter()

    def evaluate(epoch: int, loss: float) -> None:
        if epoch + 1 not in args.checkpoints:
            return
        adapted, judged = copy.deepcopy(adaptor).eval(), copy.deepcopy(discriminator)
        noise = torch.Generator().manual_seed(epoch)
        _recompute_batchnorm_statistics(
            train, scaler, adapted, judged, args.batch_size, args.sigma, noise, "cpu"
        )
        maps, _ = score_test(scaler, adapted, judged.eval(), test, size)
        row = {
            "epoch": epoch + 1,
            "steps": (epoch + 1) * steps_per_epoch,
            "loss": loss,
            "image_auroc": image_auroc(labels, image_scores(maps, 0.01).numpy()),
            "pixel_auroc": pixel_auroc(masks, maps.numpy()),
            "seconds": time.perf_counter() - start,
        }
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)

    train_discriminator(
        train,
        scaler,
        adaptor,
        discriminator,
        epochs=args.epochs,
        batch_size=args.batch_size,
        patch_fraction=args.patch_fraction,
        sigma=args.sigma,
        seed=0,
        callback=evaluate,
    )


if __name__ == "__main__":
    main()
