"""SimpleNet on the Magnetic Tile Defect data set: fit on normal tiles, report image and pixel AUROC.

A short version of ``benchmarks/quality.py`` (which adds several split seeds, ELPV and the
nearest-neighbour reference). It uses the offline ``efficientnet_lite0`` backbone and the documented CPU
defaults; images are squashed to 224 x 224 because the tiles are long and thin.

Usage::

    python examples/mtd_benchmark.py ../shared/datasets/mtd
"""

import argparse
import time

from sksimplenet import SimpleNetDetector, evaluate
from sksimplenet.datasets import load_mtd


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

    result = evaluate(detector, split["test_paths"], split["test_labels"], masks=split["test_masks"])
    print(result.to_markdown())


if __name__ == "__main__":
    main()
