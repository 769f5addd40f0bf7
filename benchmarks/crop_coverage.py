"""How much of MTD's defects a resize-then-centre-crop input ever shows the network.

For every defect mask of the MTD test split (seed 0) the crop's box is mapped back onto the
image with :func:`sksimplenet.image_io.crop_box`; the script counts the masks that lie
entirely outside it and the share of defect pixels inside it.

Usage::

    python benchmarks/crop_coverage.py                      # the paper's resize 256, crop 224
    python benchmarks/crop_coverage.py --resize 224 --crop-size 224
"""

from __future__ import annotations

import argparse

import numpy as np
from common import mtd_split
from PIL import Image

from sksimplenet.image_io import crop_box


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resize", type=int, default=256, help="shorter side after resizing")
    parser.add_argument("--crop-size", type=int, default=224)
    args = parser.parse_args(argv)

    split = mtd_split(0)
    masks = outside = seen = total = 0
    for path, label in zip(split["test_masks"], split["test_labels"]):
        if label == 1:
            continue
        mask = np.asarray(Image.open(path).convert("L")) > 0
        if not mask.any():
            continue
        top, left, bottom, right = (int(round(v)) for v in crop_box(mask.shape, args.resize, args.crop_size))
        inside = int(mask[top:bottom, left:right].sum())
        masks += 1
        outside += inside == 0
        seen += inside
        total += int(mask.sum())
    print(
        f"resize={args.resize}, crop_size={args.crop_size}: {outside} of {masks} non-empty defect masks lie "
        f"entirely outside the crop; {seen / total:.1%} of the defect pixels are inside it"
    )


if __name__ == "__main__":
    main()
