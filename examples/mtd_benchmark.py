"""SimpleNet on the Magnetic Tile Defect data set: fit on normal tiles, report image and pixel AUROC.

A short version of ``benchmarks/mtd.py`` (which adds several split seeds and a kNN
reference). It uses the offline ``efficientnet_lite0`` backbone and the documented CPU
training mode; images are squashed to 224 x 224 because the tiles are long and thin.

Usage::

    python examples/mtd_benchmark.py ../shared/datasets/mtd
"""

import argparse
import time

from sksimplenet import SimpleNetDetector
from sksimplenet.cli import masks_at_map_resolution
from sksimplenet.datasets import load_mtd
from sksimplenet.metrics import evaluate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="folder holding MT_Free, MT_Blowhole, ...")
    parser.add_argument("--seed", type=int, default=0, help="seed of the 80/20 split of MT_Free")
    args = parser.parse_args()

    split = load_mtd(args.root, random_state=args.seed)
    detector = SimpleNetDetector(
        "efficientnet_lite0",
        resize=(224, 224),
        crop_size=None,
        epochs=40,
        batch_size=32,
        patch_fraction=0.125,
        random_state=args.seed,
        verbose=True,
    )
    start = time.perf_counter()
    detector.fit(split["train_paths"])
    print(f"fitted on {detector.n_train_images_} normal tiles in {time.perf_counter() - start:.0f}s")

    maps, scores = detector.anomaly_map(split["test_paths"], return_scores=True)
    masks = masks_at_map_resolution(
        split["test_masks"],
        split["test_labels"],
        detector.resize,
        detector.crop_size,
        [m.shape for m in maps],
    )
    for name, value in evaluate(split["test_labels"], scores, masks, maps).items():
        print(f"{name}: {value:.4f}")


if __name__ == "__main__":
    main()
