"""Fit time against recomputing backbone features every epoch, and the paper's CPU training time.

(a) ``SimpleNetDetector.fit`` runs the frozen backbone once and trains on the cached
features. The official SimpleNet code instead decodes the images and runs the backbone
again in every epoch. Both are timed here on the same synthetic images (224 × 224) with the
same epochs, batch size (4), patch share and network, in turn, round after round; the naive
loop is written with this package's own parts, so the difference is the caching. The gain
grows with the backbone's share of the work: efficientnet_lite0 is cheap beside training
on all patches, wide_resnet50_2 is not, and ``patch_fraction=0.125`` (the CPU mode in the
README) makes training cheaper still.

(b) The paper's configuration (wide_resnet50_2, all patches, 160 epochs) on this CPU: one
fit with one epoch and one with two on a few images give the feature extraction time and
the time of one epoch; these are extrapolated to 762 training images and 160 epochs.
The extrapolation is labelled as such: nothing runs that long here. Random weights
(``weights=None``) cost the same time as ImageNet ones.

Usage::

    python benchmarks/fit_time.py --threads 1
    python benchmarks/fit_time.py --quick
"""

from __future__ import annotations

import argparse
import time

import torch
from timing import add_common_arguments, configure_threads, interleaved, machine, table

from sksimplenet import PAPER_PARAMS, SimpleNetDetector
from sksimplenet.backbones import build_feature_extractor
from sksimplenet.datasets import make_synthetic
from sksimplenet.image_io import ImageDataset
from sksimplenet.model import make_model
from sksimplenet.networks import add_gaussian_noise, truncated_l1_loss

# Every image trained on, no weight averaging: the same work as the naive loop.
COMMON = dict(
    resize=224,
    crop_size=224,
    batch_size=4,
    validation_fraction=0.0,
    weight_averaging=None,
    device="cpu",
    random_state=0,
)
WEIGHTS = {"efficientnet_lite0": "DEFAULT", "wide_resnet50_2": None}


def naive_fit(images, epochs: int, backbone: str, patch_fraction: float = 1.0, seed: int = 0) -> list[float]:
    """The official code's loop: decode, run the backbone and train, in every epoch."""
    defaults = SimpleNetDetector()
    generator = torch.Generator().manual_seed(seed)
    extractor = build_feature_extractor(backbone, None, WEIGHTS[backbone])
    probe = make_model(extractor, 1, defaults.get_params())
    with torch.inference_mode():
        width = probe.patch_features(torch.zeros(1, 3, 224, 224)).shape[1]
    model = make_model(extractor, width, defaults.get_params(), generator)
    optimizer = torch.optim.Adam(
        [
            {"params": model.adaptor.parameters(), "lr": defaults.adaptor_lr},
            {"params": model.discriminator.parameters(), "lr": defaults.discriminator_lr},
        ],
        weight_decay=defaults.weight_decay,
    )
    dataset = ImageDataset(list(images), COMMON["resize"], COMMON["crop_size"])
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=COMMON["batch_size"], shuffle=True, generator=generator
    )
    model.adaptor.train()
    model.discriminator.train()
    history = []
    for _ in range(epochs):
        total = 0.0
        for batch in loader:
            with torch.no_grad():
                features = model.patch_features(batch).permute(0, 2, 3, 1).reshape(-1, width)
            if patch_fraction < 1.0:
                keep = max(1, int(round(patch_fraction * len(features))))
                features = features[torch.randperm(len(features), generator=generator)[:keep]]
            normal = model.adaptor(model.scaler(features))
            anomalous = add_gaussian_noise(normal, defaults.sigma, generator)
            scores = model.discriminator(torch.cat([normal, anomalous]))
            loss = truncated_l1_loss(scores[: len(normal)], scores[len(normal) :], defaults.margin)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(batch)
        history.append(total / len(dataset))
    return history


def cached_versus_naive(backbone: str, n_images: int, epochs: int, patch_fraction: float, repeats: int):
    """One row of (a): median seconds of both, and their ratio."""
    images, _, _ = make_synthetic(n_images, 0, texture="object", size=224, random_state=0)
    settings = dict(weights=WEIGHTS[backbone], epochs=epochs, patch_fraction=patch_fraction, **COMMON)

    def ours():
        SimpleNetDetector(backbone, **settings).fit(images)

    def naive():
        naive_fit(images, epochs, backbone, patch_fraction)

    seconds = interleaved({"cached": ours, "naive": naive}, repeats, warmup=1)
    ratio = seconds["naive"] / seconds["cached"]
    return (
        backbone,
        n_images,
        epochs,
        patch_fraction,
        f"{seconds['cached']:.1f}",
        f"{seconds['naive']:.1f}",
        f"{ratio:.2f}",
    )


def paper_extrapolation(n_images: int, target_images: int = 762, target_epochs: int = 160) -> None:
    images, _, _ = make_synthetic(n_images, 0, texture="object", size=256, random_state=0)
    times = {}
    for epochs in (1, 2):
        settings = {**PAPER_PARAMS, "weights": None, "epochs": epochs, "device": "cpu", "random_state": 0}
        detector = SimpleNetDetector("wide_resnet50_2", **settings)
        start = time.perf_counter()
        detector.fit(images)
        times[epochs] = time.perf_counter() - start
    epoch = times[2] - times[1]
    fixed = times[1] - epoch  # feature extraction, scoring the training images, set-up
    per_image_epoch = epoch / n_images
    per_image_fixed = fixed / n_images
    total = target_images * (target_epochs * per_image_epoch + per_image_fixed)
    print(f"\n(b) wide_resnet50_2 (weights=None), all patches, 256 -> 224 px, {n_images} images, measured:")
    rows = [
        ("fit, 1 epoch", f"{times[1]:.1f}"),
        ("fit, 2 epochs", f"{times[2]:.1f}"),
        ("one epoch (difference)", f"{epoch:.1f}"),
        ("extraction and set-up", f"{fixed:.1f}"),
    ]
    print(table(rows, ("measured", "seconds")))
    print(
        f"EXTRAPOLATION to {target_images} images x {target_epochs} epochs: "
        f"{target_images} x ({target_epochs} x {per_image_epoch:.3f} s + {per_image_fixed:.3f} s) "
        f"= {total:.0f} s = {total / 3600:.1f} hours on this CPU"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_arguments(parser)
    args = parser.parse_args()
    configure_threads(args.threads)
    print(machine())
    start = time.perf_counter()
    repeats = 1 if args.quick else 3
    runs = [("efficientnet_lite0", 32, 1.0), ("efficientnet_lite0", 32, 0.125)]
    runs += [("wide_resnet50_2", 16, 1.0), ("wide_resnet50_2", 16, 0.125)]
    rows = []
    for backbone, n_images, patch_fraction in runs:
        n_images, epochs = (8, 2) if args.quick else (n_images, 3)
        rows.append(cached_versus_naive(backbone, n_images, epochs, patch_fraction, repeats))
    print(f"(a) fit with cached features against the naive loop, median of {repeats} interleaved rounds")
    header = ("backbone", "images", "epochs", "patch_fraction", "cached s", "naive s", "naive / cached")
    print(table(rows, header))
    paper_extrapolation(8 if args.quick else 20)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
