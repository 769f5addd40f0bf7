"""Quickstart: train SimpleNet on normal images, then score, predict and localise defects.

Runs offline in well under a minute on a CPU: generated stripe textures, the
``efficientnet_lite0`` backbone (its ImageNet weights ship with the package), 96-pixel
images and a few epochs.

    python examples/quickstart.py [--plot grid.png] [--quick]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from sksimplenet import SimpleNetDetector
from sksimplenet.datasets import make_synthetic
from sksimplenet.metrics import evaluate


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plot", metavar="PNG", help="save the test images' anomaly maps (needs matplotlib)")
    parser.add_argument("--quick", action="store_true", help="100 training steps instead of about 1,000")
    args = parser.parse_args(argv)

    # 30 normal and 15 defective images (scratches, blobs, holes), with pixel masks.
    images, labels, masks = make_synthetic(30, 15, texture="stripes", size=96, random_state=0)
    train = images[:20]  # only normal images are needed for training
    test, test_labels, test_masks = images[20:], labels[20:], masks[20:]

    detector = SimpleNetDetector(
        backbone="efficientnet_lite0",
        resize=96,  # small images keep this fast; the paper uses 256 and a 224 crop
        crop_size=None,  # keep the whole image, so maps line up with the masks
        feature_scaling="standardize",  # noise in units of each feature's spread ...
        sigma=0.3,  # ... so this noise level suits any backbone
        epochs=100 if args.quick else "auto",  # "auto": about 1,000 steps of 32 images
        device="cpu",
        random_state=0,
    )
    start = time.perf_counter()
    detector.fit(train)
    print(
        f"fitted on {detector.n_train_images_} normal images ({detector.n_held_out_images_} more held out "
        f"to set the threshold) in {time.perf_counter() - start:.1f}s"
    )

    # scikit-learn conventions: higher score_samples = more normal; predict gives +1 / -1.
    normality = detector.score_samples(test)
    predicted = detector.predict(test)
    maps = detector.anomaly_map(test)  # (n_images, 96, 96), higher = more anomalous
    print(f"anomaly maps: shape {maps.shape}")
    # predict() flags images scoring above threshold_: the 99th percentile of the held-out
    # normal images' scores (contamination="auto"); contamination=0.05, say, would flag 5 %.
    defective, normal = test_labels == -1, test_labels == 1
    print(
        f"predicted anomalous: {np.sum(predicted[defective] == -1)} of {defective.sum()} defective images, "
        f"{np.sum(predicted[normal] == -1)} of {normal.sum()} normal ones"
    )
    worst = int(np.argmin(normality))
    kind = "defective" if test_labels[worst] == -1 else "normal"
    print(f"most anomalous test image: {worst}, labelled {kind}")
    print(
        f"mean anomaly map value on defect pixels: {maps[test_masks].mean():.2f}, "
        f"elsewhere: {maps[~test_masks].mean():.2f}"
    )

    metrics = evaluate(test_labels, -normality, test_masks, maps)
    for name, value in metrics.items():
        print(f"{name}: {value:.3f}")

    if args.plot:
        from sksimplenet.plotting import plot_grid

        plot_grid(
            test,
            maps,
            scores=-normality,
            labels=predicted,
            threshold=detector.threshold_,
            ncols=5,
            path=args.plot,
        )
        print(f"anomaly maps saved to {args.plot}")


if __name__ == "__main__":
    main()
