"""SimpleNet with its defaults beside the PatchCore-style reference on every data set given.

For each data set and seed: ``SimpleNetDetector`` is fitted with its defaults (on the
offline ``efficientnet_lite0`` backbone unless ``--backbone`` says otherwise) on the
training images, and scores the test images with the model ``fit`` returns; ``predict``'s
threshold is the one ``fit`` set from its held-out training images. The reference runs on
the same images and the same frozen features: nearest-neighbour distance to a random 10 %
memory bank of all training patches, image score = largest raw patch distance (PatchCore's
rule), maps smoothed like SimpleNet's. Nothing looks at test labels before the metrics.

Data sets: ``mtd`` (the Magnetic Tile Defect data, seeded 80/20 split of its normal images,
through :func:`sksimplenet.datasets.load_mtd`), ``elpv`` (``../shared/datasets/elpv``), or
the path of any folder in the MVTec AD layout (a category folder holding ``train/`` and
``test/``). The split of a folder is fixed; its seeds vary the training.

Usage::

    python benchmarks/suite.py                             # mtd and elpv, seeds 0 1 2
    python benchmarks/suite.py --datasets /data/mvtec/bottle --seeds 0
    python benchmarks/suite.py --set sigma=0.5 --json results.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from common import dataset_split, extract, knn_baseline, parse_settings

from sksimplenet import SimpleNetDetector
from sksimplenet.metrics import image_auroc, masks_at_map_resolution, pixel_auroc


def run(dataset: str, seed: int, params: dict, reference: bool) -> dict:
    split = dataset_split(dataset, seed)
    labels = split["test_labels"]
    detector = SimpleNetDetector(**{**params, "random_state": seed})
    start = time.perf_counter()
    detector.fit(split["train_paths"])
    fit_seconds = time.perf_counter() - start
    maps, scores = detector.anomaly_map(split["test_paths"], return_scores=True)
    masks = masks_at_map_resolution(
        split["test_masks"], labels, detector.resize, detector.crop_size, [m.shape for m in maps]
    )
    flagged = scores > detector.threshold_  # what predict answers -1 for
    normal = labels == 1
    row = {
        "dataset": Path(dataset).name,
        "seed": seed,
        "image_auroc": image_auroc(labels, scores),
        "pixel_auroc": pixel_auroc(masks, maps) if masks is not None else None,
        "fpr": float(flagged[normal].mean()),
        "recall": float(flagged[~normal].mean()),
        "fit_seconds": fit_seconds,
        "epochs": len(detector.loss_history_),
    }
    if reference:
        settings = {
            "backbone": params.get("backbone"),
            "resize": detector.resize,
            "crop_size": detector.crop_size,
        }
        train = extract(split["train_paths"], **settings)
        test = extract(split["test_paths"], **settings)
        knn_scores, knn_maps = knn_baseline(train, test, size=detector.input_size_, seed=seed)
        row["reference_image_auroc"] = image_auroc(labels, knn_scores)
        row["reference_pixel_auroc"] = pixel_auroc(masks, knn_maps) if masks is not None else None
    return row


def _cell(rows: list[dict], key: str) -> str:
    values = [row[key] for row in rows if row.get(key) is not None]
    if not values:
        return "—"
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["mtd", "elpv"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE", help="a detector parameter"
    )
    parser.add_argument("--no-reference", action="store_true", help="skip the kNN reference")
    parser.add_argument("--json", type=Path, help="write every row to this file")
    args = parser.parse_args(argv)
    params = {"backbone": args.backbone, "device": "cpu"}
    params.update(parse_settings(args.set))
    print("parameters (others at their defaults):", params, flush=True)

    rows = []
    for dataset in args.datasets:
        for seed in args.seeds:
            rows.append(run(dataset, seed, params, reference=not args.no_reference))
            print(
                json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in rows[-1].items()}),
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps({"parameters": repr(params), "rows": rows}, indent=2))

    print(
        "\n| data set | seeds | image AUROC | reference | pixel AUROC | reference | "
        "FPR at threshold | recall at threshold | fit seconds |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name in dict.fromkeys(row["dataset"] for row in rows):
        group = [row for row in rows if row["dataset"] == name]
        keys = (
            "image_auroc",
            "reference_image_auroc",
            "pixel_auroc",
            "reference_pixel_auroc",
            "fpr",
            "recall",
        )
        cells = " | ".join(_cell(group, key) for key in keys)
        print(f"| {name} | {len(group)} | {cells} | {np.mean([r['fit_seconds'] for r in group]):.0f} |")


if __name__ == "__main__":
    main()
