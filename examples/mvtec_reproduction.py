"""Reproduce the MVTec AD table of the SimpleNet paper (Liu et al., CVPR 2023, Table 1).

Every category found under the root is trained on its ``train/good`` images and evaluated
on its test set; the table gives image AUROC (I-AUROC), pixel AUROC (P-AUROC) and AUPRO
in percent per category, and their means.

It runs the paper's configuration, ``SimpleNetDetector(**PAPER_PARAMS)``:
``wide_resnet50_2`` features of ``layer2`` and ``layer3``, images resized to 256 and
centre-cropped to 224, 3x3 patch aggregation, raw features with noise ``sigma=0.015``,
160 epochs of 4 images, the map's maximum as image score. ``--package-defaults`` runs
``SimpleNetDetector()``'s defaults instead (docs/quality.md says why they differ). Maps and
masks are compared at the network resolution (the masks are resized and cropped like the
images).

The protocol here is honest: the model after the **last** epoch is evaluated, and nothing
(epoch, threshold, hyper-parameter) is chosen by looking at the test set. Reference code
that keeps the epoch with the best test metrics reports higher numbers than this protocol
can; expect the means to be somewhat lower than the paper's.

The ``wide_resnet50_2`` ImageNet weights come from torchvision, which downloads them on
the first run (or finds them in its cache). A GPU is strongly advised (``--device cuda``);
on a CPU one category takes hours.

    python examples/mvtec_reproduction.py /data/mvtec_anomaly_detection --device cuda --json results.json
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from sksimplenet import PAPER_PARAMS, SimpleNetDetector, evaluate
from sksimplenet.datasets import list_mvtec_categories, load_mvtec

COLUMNS = (("I-AUROC", "image_auroc"), ("P-AUROC", "pixel_auroc"), ("AUPRO", "aupro"))


def row(name: str, metrics: dict[str, float]) -> str:
    cells = [f"{100 * metrics[key]:.1f}" if key in metrics else "-" for _, key in COLUMNS]
    return f"| {name} | " + " | ".join(cells) + " |"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="the MVTec AD folder (holding bottle/, cable/, ...)")
    parser.add_argument("--categories", nargs="+", help="default: every category under root")
    parser.add_argument("--backbone", default="wide_resnet50_2")
    parser.add_argument(
        "--package-defaults", action="store_true", help="the package's defaults, not the paper's"
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write every category's metrics to this JSON file")
    parser.add_argument("--verbose", action="store_true", help="progress bars")
    args = parser.parse_args(argv)

    categories = args.categories or list_mvtec_categories(args.root)
    if not categories:
        raise SystemExit(f"no MVTec AD categories (folders with train/ and test/) under {args.root}")
    print("| Category | " + " | ".join(name for name, _ in COLUMNS) + " |")
    print("| --- |" + " ---: |" * len(COLUMNS), flush=True)
    results = {}
    for category in categories:
        split = load_mvtec(args.root, category)
        detector = SimpleNetDetector(
            **({} if args.package_defaults else PAPER_PARAMS),
            backbone=args.backbone,
            device=args.device,
            random_state=args.seed,
            verbose=args.verbose,
        )
        start = time.perf_counter()
        detector.fit(split["train_paths"])
        result = evaluate(detector, split["test_paths"], split["test_labels"], masks=split["test_masks"])
        metrics = dict(result.metrics, seconds=time.perf_counter() - start)
        results[category] = metrics
        print(row(category, metrics), flush=True)
    mean = {
        key: float(np.mean([m[key] for m in results.values() if key in m]))
        for _, key in COLUMNS
        if any(key in m for m in results.values())
    }
    print(row("Mean", mean))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"settings": vars(args), "categories": results, "mean": mean}, handle, indent=2)


if __name__ == "__main__":
    main()
