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
from sksimplenet.datasets import load_mtd
from sksimplenet.metrics import evaluate, masks_at_map_resolution


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="folder holding MT_Free, MT_Blowhole, ...")
    parser.add_argument("--seed", type=int, default=0, help="seed of the 80/20 split of MT_Free")
    args = parser.parse_args()

    split = load_mtd(args.root, random_state=args.seed)
    # The defaults: the whole tile squashed to 224 x 224, about 1,000 steps of 32 images.
    detector = SimpleNetDetector("efficientnet_lite0", random_state=args.seed, verbose=True)
    start = time.perf_counter()
    detector.fit(split["train_paths"])
    print(
        f"fitted on {detector.n_train_images_} normal tiles ({detector.n_held_out_images_} held out) "
        f"in {time.perf_counter() - start:.0f}s"
    )

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
