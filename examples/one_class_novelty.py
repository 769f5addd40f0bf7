"""One-class novelty detection: each class in turn is "normal", every other class is novel.

The data set is an image folder (for example CIFAR-10 written out as image files)::

    <root>/train/<class>/*.png
    <root>/test/<class>/*.png

For each class a new detector is trained on that class's training images only, and scores
the whole test set; the image AUROC of telling that class from all the others is printed,
then the mean over classes (:func:`sksimplenet.datasets.run_one_class_protocol`).

    python examples/one_class_novelty.py /data/cifar10_folders --device cuda
"""

from __future__ import annotations

import argparse

from sksimplenet import SimpleNetDetector
from sksimplenet.datasets import run_one_class_protocol


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="folder holding train/<class>/ and test/<class>/")
    parser.add_argument("--classes", nargs="+", help="classes to take as normal; default: all")
    parser.add_argument("--backbone", default="wide_resnet50_2")
    parser.add_argument("--epochs", type=int, help="default: the detector's (about 1,000 steps)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    def make_detector() -> SimpleNetDetector:
        return SimpleNetDetector(
            backbone=args.backbone,
            epochs=args.epochs or "auto",
            device=args.device,
            n_jobs=-1,  # decode the image files in parallel
            random_state=args.seed,
        )

    result = run_one_class_protocol(args.root, make_detector, classes=args.classes)
    print("| normal class | AUROC |")
    print("| --- | ---: |")
    for name, auroc in result["per_class_auroc"].items():
        print(f"| {name} | {100 * auroc:.1f} |")
    print(f"| mean | {100 * result['mean_auroc']:.1f} |")


if __name__ == "__main__":
    main()
