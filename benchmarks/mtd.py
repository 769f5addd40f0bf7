"""SimpleNet on the Magnetic Tile Defect data set, beside a PatchCore-style kNN reference.

Protocol: a seeded 80 % of ``MT_Free`` trains; the other 20 % and every defective image
test. The detector is fitted with its defaults on the ``efficientnet_lite0`` backbone
(offline ImageNet weights) and the model ``fit`` returns is evaluated: nothing looks at
test labels. ``benchmarks/suite.py`` runs the same comparison on several data sets with
the false-positive rate and recall at the threshold; this script keeps the options for
single-split experiments (``--nchw``, ``--set``). Pixel AUROC is computed at the
network's input resolution, with the masks preprocessed like the images.

Usage::

    python benchmarks/mtd.py                  # seed 0, the detector's defaults
    python benchmarks/mtd.py --seeds 0 1 2    # mean and spread over three splits
    python benchmarks/mtd.py --epochs 40 --set sigma=0.5 --set feature_scaling=None
    python benchmarks/mtd.py --nchw           # the backbone in PyTorch's default layout
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from common import MTD_ROOT, knn_baseline, mtd_split, parse_settings, plain_layout

import sksimplenet.detector
from sksimplenet import SimpleNetDetector
from sksimplenet.image_io import ImageDataset
from sksimplenet.metrics import image_auroc, masks_at_map_resolution, pixel_auroc

# MTD's tiles are long and thin, so a centre crop of the shorter side would cut defects
# away: the benchmark squashes every image to 224 x 224 instead (a choice from the data's
# layout, the same for SimpleNet and the reference).
MTD_INPUT = {"resize": (224, 224), "crop_size": None}


def _fit_backbones_in_nchw() -> None:
    """Make every later fit in this process run its backbone in the NCHW layout.

    Named backbones run channels-last; this is the reference for checking that the layout
    leaves MTD's AUROC where it was (docs/performance.md).
    """
    build = sksimplenet.detector.build_feature_extractor

    def build_in_nchw(*args, **kwargs):
        return plain_layout(build(*args, **kwargs))

    sksimplenet.detector.build_feature_extractor = build_in_nchw


@torch.inference_mode()
def _features(detector: SimpleNetDetector, paths) -> torch.Tensor:
    chunks = [
        detector.model_.patch_features(batch).permute(0, 2, 3, 1).half()
        for batch in torch.utils.data.DataLoader(
            ImageDataset(list(paths), detector.resize, detector.crop_size), 16
        )
    ]
    return torch.cat(chunks)


def run(seed: int, params: dict, baseline: bool) -> dict:
    split = mtd_split(seed, MTD_ROOT)
    labels = split["test_labels"]
    detector = SimpleNetDetector(**params)
    start = time.perf_counter()
    detector.fit(split["train_paths"])
    fit_seconds = time.perf_counter() - start

    start = time.perf_counter()
    scores = -detector.score_samples(split["test_paths"])
    score_seconds = time.perf_counter() - start
    maps = detector.anomaly_map(split["test_paths"])
    masks = masks_at_map_resolution(
        split["test_masks"], labels, detector.resize, detector.crop_size, [m.shape for m in maps]
    )
    result = {
        "seed": seed,
        "simplenet_image_auroc": image_auroc(labels, scores),
        "simplenet_pixel_auroc": pixel_auroc(masks, maps),
        "fit_seconds": fit_seconds,
        "images_per_second": len(labels) / score_seconds,
        "final_loss": detector.loss_history_[-1],
    }
    if baseline:
        train = _features(detector, split["train_paths"])
        test = _features(detector, split["test_paths"])
        knn_scores, knn_maps = knn_baseline(train, test, size=detector.input_size_, seed=seed)
        result["knn_image_auroc"] = image_auroc(labels, knn_scores)
        result["knn_pixel_auroc"] = pixel_auroc(masks, knn_maps)
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=None, help="override the detector's epochs")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="any other SimpleNetDetector parameter",
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip the kNN reference")
    parser.add_argument("--json", help="write the results to this file")
    parser.add_argument(
        "--nchw", action="store_true", help="run the backbone in NCHW layout instead of channels-last"
    )
    args = parser.parse_args(argv)
    if args.nchw:
        _fit_backbones_in_nchw()

    params = {"backbone": "efficientnet_lite0", "device": "cpu", **MTD_INPUT}
    if args.epochs is not None:
        params["epochs"] = args.epochs
    params.update(parse_settings(args.set))
    print("parameters:", {k: v for k, v in SimpleNetDetector(**params).get_params().items()})

    results = []
    for seed in args.seeds:
        params["random_state"] = seed
        result = run(seed, params, baseline=not args.no_baseline)
        results.append(result)
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}))

    print("\n| metric | mean | std | per seed |\n|---|---|---|---|")
    for key in results[0]:
        if key == "seed":
            continue
        values = np.array([r[key] for r in results], dtype=float)
        per_seed = ", ".join(f"{v:.4f}" for v in values)
        print(f"| {key} | {values.mean():.4f} | {values.std():.4f} | {per_seed} |")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(
                {"parameters": {k: repr(v) for k, v in params.items()}, "results": results}, handle, indent=2
            )


if __name__ == "__main__":
    main()
