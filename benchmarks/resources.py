"""What does fit cost: peak memory, and time against re-running the backbone every epoch.

(a) Peak memory of ``fit`` on 200 images at 224 × 224, each configuration in its own process
(one epoch and a small ``patch_fraction``: the feature cache, not training, sets the peak):
``wide_resnet50_2`` (random weights) with the cache in memory and with ``cache_dir`` (a
memory-mapped file on disk); ``efficientnet_lite0`` in memory; and the feature extraction
alone for wide_resnet50_2, written into the preallocated cache as ``fit`` does, or collected
in a list then concatenated (which needs the cache twice at the moment of concatenation).
Each child reports its peak resident set size (``ru_maxrss``), the peaks of its anonymous
and file-backed memory (sampled every 20 ms from ``/proc/self/status``) and its resident
size before fitting.

(b) Fit time with cached features against the naive loop. ``fit`` runs the frozen backbone
once and trains on the cached features; the official code decodes the images and runs the
backbone again in every epoch (written here with this package's own parts, so the
difference is the caching). Both on the same synthetic images, epochs, batch (4), patch
share and network, without synthetic defects, in turn, round after round.

(c) The paper's configuration (wide_resnet50_2, all patches, 160 epochs) on this CPU: fits
with one and two epochs on a few images give the extraction time and the time of one epoch,
extrapolated (and labelled so) to 762 training images and 160 epochs.

(d) Where a default fit's time goes: ``SimpleNetDetector(backbone="efficientnet_lite0")``
fitted on a data set's training images (``--profile-dataset``, default MTD split 0, 762
images) with a timer around each part of ``fit``: the backbone pass over the images, the
synthetic defects (making them and their backbone pass), the training steps, the held-out
criterion after each epoch, scoring every training image (threshold and
``decision_scores_``), hashing the files for ``provenance_``, and the rest.

(e) What one training step costs: ``train_discriminator`` with the default settings on
random features of ``efficientnet_lite0``'s shape (152 channels, 28 × 28 positions, 200
images), milliseconds per step for the default hidden width and patch share and for a
narrower layer and fewer patches, then the operators that take most of a step's time
(``torch.profiler``, self time).

Usage::

    python benchmarks/resources.py --threads 1
    python benchmarks/resources.py --quick              # 40 images for (a), fewer rounds
    python benchmarks/resources.py --parts b c
    python benchmarks/resources.py --parts d              # a default MTD fit, part by part
    python benchmarks/resources.py --parts e --threads 2  # one training step
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
from common import dataset_split, parse_settings
from timing import add_common_arguments, configure_threads, interleaved, machine, table

import sksimplenet.detector
import sksimplenet.synthesis
import sksimplenet.training
from sksimplenet import PAPER_PARAMS, SimpleNetDetector
from sksimplenet.backbones import build_feature_extractor
from sksimplenet.datasets import make_synthetic
from sksimplenet.image_io import ImageDataset
from sksimplenet.model import make_model
from sksimplenet.networks import add_gaussian_noise, truncated_l1_loss

WRN50 = dict(backbone="wide_resnet50_2", weights=None)
CONFIGS = {
    "wrn50, in memory": WRN50,
    "wrn50, cache_dir": dict(**WRN50, cache_dir="DISK"),
    "effnet-lite0, in memory": dict(backbone="efficientnet_lite0"),
    "wrn50 extraction, preallocated": dict(**WRN50, extraction="preallocated"),
    "wrn50 extraction, list + cat": dict(**WRN50, extraction="concatenate"),
}
FIT = dict(epochs=1, patch_fraction=0.01, device="cpu", random_state=0)
MIB = 2**20


def status() -> dict[str, int]:
    """Resident memory from /proc/self/status, in bytes (Linux)."""
    values = {}
    with open("/proc/self/status", encoding="ascii") as file:
        for line in file:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                values[key] = int(rest.split()[0]) * 1024
    return values


class Sampler(threading.Thread):
    """Records the peaks of anonymous and file-backed resident memory while it runs."""

    def __init__(self, interval: float = 0.02):
        super().__init__(daemon=True)
        self.interval = interval
        self.peak_anon = 0
        self.peak_file = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            values = status()
            self.peak_anon = max(self.peak_anon, values["RssAnon"])
            self.peak_file = max(self.peak_file, values["RssFile"] + values["RssShmem"])
            time.sleep(self.interval)


def child(name: str, n_images: int, threads: int | None, size: int = 224) -> None:
    from sksimplenet.cache import FeatureCache

    if threads is not None:
        torch.set_num_threads(threads)
    config = dict(CONFIGS[name])
    extraction = config.pop("extraction", None)
    images, _, _ = make_synthetic(n_images, 0, texture="object", size=size, random_state=0)
    before = status()["VmRSS"]
    sampler = Sampler()
    sampler.start()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=Path(__file__).resolve().parent) as folder:
        if config.get("cache_dir") == "DISK":
            config["cache_dir"] = folder
        if extraction is None:
            detector = SimpleNetDetector(**config, **FIT, resize=size, crop_size=size)
            detector.fit(images)
            shape = (n_images, *detector.feature_shape_)
        else:
            extractor = build_feature_extractor(config["backbone"], None, config["weights"])
            model = make_model(extractor, 1, SimpleNetDetector().get_params())
            batch_images = torch.from_numpy(images).permute(0, 3, 1, 2)
            chunks, store = [], FeatureCache(n_images, torch.float16, torch.device("cpu"))
            with torch.inference_mode():
                for first in range(0, n_images, 16):
                    batch = batch_images[first : first + 16].float() / 255.0
                    features = model.patch_features(batch).permute(0, 2, 3, 1)
                    if extraction == "preallocated":
                        store.write(first, features)
                    else:
                        chunks.append(features.to(torch.float16))
                cache = store.tensor if extraction == "preallocated" else torch.cat(chunks)
            shape = tuple(cache.shape)
    seconds = time.perf_counter() - start
    sampler.stopped.set()
    sampler.join()
    print(
        json.dumps(
            {
                "name": name,
                "before": before,
                "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                "peak_anon": sampler.peak_anon,
                "peak_file": sampler.peak_file,
                "cache": 2 * int(torch.tensor(shape).prod()),
                "seconds": seconds,
            }
        )
    )


# Every image trained on, no weight averaging: the same work as the naive loop.
COMMON = dict(
    batch_size=4,
    validation_fraction=0.0,
    weight_averaging=None,
    synthetic_defects=0.0,
    device="cpu",
    random_state=0,
)
WEIGHTS = {"efficientnet_lite0": "DEFAULT", "wide_resnet50_2": None}


def naive_fit(images, epochs: int, backbone: str, patch_fraction: float = 1.0, seed: int = 0) -> list[float]:
    size = images.shape[1]
    """The official code's loop: decode, run the backbone and train, in every epoch."""
    defaults = SimpleNetDetector()
    generator = torch.Generator().manual_seed(seed)
    extractor = build_feature_extractor(backbone, None, WEIGHTS[backbone])
    probe = make_model(extractor, 1, defaults.get_params())
    with torch.inference_mode():
        width = probe.patch_features(torch.zeros(1, 3, size, size)).shape[1]
    model = make_model(extractor, width, defaults.get_params(), generator)
    optimizer = torch.optim.Adam(
        [
            {"params": model.adaptor.parameters(), "lr": defaults.adaptor_lr},
            {"params": model.discriminator.parameters(), "lr": defaults.discriminator_lr},
        ],
        weight_decay=defaults.weight_decay,
    )
    dataset = ImageDataset(list(images), size, size)
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


def cached_versus_naive(
    backbone: str, n_images: int, epochs: int, patch_fraction: float, repeats: int, size: int = 224
):
    """One row of (b): median seconds of both, and their ratio."""
    images, _, _ = make_synthetic(n_images, 0, texture="object", size=size, random_state=0)
    settings = dict(weights=WEIGHTS[backbone], epochs=epochs, patch_fraction=patch_fraction, **COMMON)
    settings.update(resize=size, crop_size=size)

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


def paper_extrapolation(
    n_images: int, target_images: int = 762, target_epochs: int = 160, backbone: str = "wide_resnet50_2"
) -> None:
    images, _, _ = make_synthetic(n_images, 0, texture="object", size=256, random_state=0)
    times = {}
    for epochs in (1, 2):
        settings = {**PAPER_PARAMS, "weights": None, "epochs": epochs, "device": "cpu", "random_state": 0}
        detector = SimpleNetDetector(backbone, **settings)
        start = time.perf_counter()
        detector.fit(images)
        times[epochs] = time.perf_counter() - start
    epoch = times[2] - times[1]
    fixed = times[1] - epoch  # feature extraction, scoring the training images, set-up
    per_image_epoch = epoch / n_images
    per_image_fixed = fixed / n_images
    total = target_images * (target_epochs * per_image_epoch + per_image_fixed)
    print(f"\n(c) {backbone} (weights=None), all patches, 256 -> 224 px, {n_images} images, measured:")
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


def memory(n_images: int, threads: int | None, size: int = 224, configs=tuple(CONFIGS)) -> None:
    """Part (a): one child process per configuration."""
    rows = []
    for name in configs:
        command = [sys.executable, __file__, "--child", name, "--images", str(n_images), "--size", str(size)]
        if threads is not None:
            command += ["--threads", str(threads)]
        output = subprocess.run(command, check=True, capture_output=True, text=True, env=os.environ).stdout
        result = json.loads(output.strip().splitlines()[-1])
        rows.append(
            (
                name,
                f"{result['cache'] / MIB:.0f}",
                f"{result['before'] / MIB:.0f}",
                f"{result['peak'] / MIB:.0f}",
                f"{result['peak_anon'] / MIB:.0f}",
                f"{result['peak_file'] / MIB:.0f}",
                f"{(result['peak'] - result['before']) / MIB:.0f}",
                f"{result['seconds']:.0f}",
            )
        )
        print(f"done: {name}", file=sys.stderr)
    print(f"(a) {n_images} images at {size} x {size}; float16 feature cache; memory in MiB")
    header = (
        "configuration",
        "cache",
        "RSS before",
        "peak RSS",
        "peak anon",
        "peak file",
        "peak - before",
        "s",
    )
    print(table(rows, header))


def fit_time(quick: bool, size: int = 224, backbones=tuple(WEIGHTS)) -> None:
    """Part (b): cached features against the naive loop."""
    repeats = 1 if quick else 3
    runs = [("efficientnet_lite0", 32, 1.0), ("efficientnet_lite0", 32, 0.125)]
    runs += [("wide_resnet50_2", 16, 1.0), ("wide_resnet50_2", 16, 0.125)]
    rows = []
    for backbone, n_images, patch_fraction in runs:
        if backbone not in backbones:
            continue
        n_images, epochs = (8, 2) if quick else (n_images, 3)
        rows.append(cached_versus_naive(backbone, n_images, epochs, patch_fraction, repeats, size))
    print(f"\n(b) fit with cached features against the naive loop, median of {repeats} interleaved rounds")
    header = ("backbone", "images", "epochs", "patch_fraction", "cached s", "naive s", "naive / cached")
    print(table(rows, header))


#: The parts of ``fit`` part (d) times: (label, module, function name).
FIT_PARTS = (
    ("features of the images and synthetic defects", sksimplenet.detector, "build_training_set"),
    ("  of which synthetic defects", sksimplenet.synthesis.DefectFeatures, "add"),
    ("training (steps and held-out criterion)", sksimplenet.detector, "train_discriminator"),
    ("  of which the held-out criterion", sksimplenet.training, "validation_loss"),
    ("scoring the training images", sksimplenet.detector, "scores_from_features"),
    ("hashing the files", sksimplenet.detector, "training_files"),
)


def fit_profile(dataset: str = "mtd", params: dict | None = None) -> list[tuple[str, float]]:
    """Part (d): seconds in each of :data:`FIT_PARTS` of one default fit, and the whole fit."""
    split = dataset_split(dataset, 0)
    seconds = dict.fromkeys(label for label, _, _ in FIT_PARTS)
    originals = [(owner, name, getattr(owner, name)) for _, owner, name in FIT_PARTS]

    def timed(label, function):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                seconds[label] = (seconds[label] or 0.0) + time.perf_counter() - start

        return wrapper

    for (label, owner, name), (_, _, function) in zip(FIT_PARTS, originals):
        setattr(owner, name, timed(label, function))
    try:
        detector = SimpleNetDetector(**{"backbone": "efficientnet_lite0", "device": "cpu", **(params or {})})
        detector.fit(split["train_paths"])
    finally:
        for owner, name, function in originals:
            setattr(owner, name, function)
    rows = [(label, value or 0.0) for label, value in seconds.items()]
    counted = sum(value for label, value in rows if not label.startswith(" "))
    return [
        *rows,
        ("the rest (checks, BatchNorm pass, threshold)", detector.fit_time_ - counted),
        ("whole fit", detector.fit_time_),
    ]


#: Part (e): the step sizes timed, as changes to the default settings.
STEP_VARIANTS = {
    "defaults (hidden width 512, 1/8 of the patches)": {},
    "hidden width 1,024 (the default before 0.3)": {"hidden_dim": 1024},
    "1/16 of the patches": {"patch_fraction": 0.0625},
    "float32 steps (training_precision='float32')": {"training_precision": "float32"},
}


def step_cost(epochs: int = 8, n_images: int = 200, profile: bool = True) -> list[tuple[str, float]]:
    """Part (e): milliseconds per training step of each of :data:`STEP_VARIANTS` (``epochs``
    of ``ceil(n_images / 32)`` steps each, the difference of two runs, after one warm-up
    epoch); with ``profile``, print
    the operators of one default epoch by self time."""
    from sksimplenet.networks import Adaptor, Discriminator, FeatureScaler
    from sksimplenet.training import TrainingSettings, train_discriminator

    defaults = SimpleNetDetector().get_params()
    generator = torch.Generator().manual_seed(0)
    width = 152  # efficientnet_lite0's two default levels, 40 + 112 channels
    features = torch.randn(n_images, 28, 28, width, generator=generator).half()
    synthetic = torch.randn(20_000, width, generator=generator).half()

    def train(n_epochs: int, change: dict) -> None:
        params = {**defaults, **change}
        settings = TrainingSettings.from_params(params, epochs=n_epochs, seed=0)
        networks = (
            FeatureScaler(width),
            Adaptor(width, bias=False, init="identity"),
            Discriminator(width, params["hidden_dim"]),
        )
        train_discriminator(features, *networks, settings, synthetic_features=synthetic, device="cpu")

    steps = epochs * -(-n_images // defaults["batch_size"])
    rows = []
    for label, change in STEP_VARIANTS.items():
        train(1, change)  # warm-up
        # A run of one epoch and one of 1 + epochs: their difference is the steps alone, without
        # the set-up and the BatchNorm pass over every patch that both runs end with.
        start = time.perf_counter()
        train(1, change)
        middle = time.perf_counter()
        train(1 + epochs, change)
        end = time.perf_counter()
        rows.append((label, 1000 * ((end - middle) - (middle - start)) / steps))
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as profiler

        with profiler(activities=[ProfilerActivity.CPU]) as recorded:
            train(1, {})
        print(recorded.key_averages().table(sort_by="self_cpu_time_total", row_limit=8))
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_arguments(parser)
    parser.add_argument(
        "--parts", nargs="+", choices=("a", "b", "c", "d", "e"), default=["a", "b", "c", "d", "e"]
    )
    parser.add_argument("--profile-dataset", default="mtd", help="(d): mtd, elpv or an MVTec-layout folder")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="(d): a parameter")
    parser.add_argument("--images", type=int, default=None, help="(a): default 200 (40 with --quick)")
    parser.add_argument("--size", type=int, default=224, help="(a), (b): image height and width")
    parser.add_argument("--backbones", nargs="+", choices=tuple(WEIGHTS), default=list(WEIGHTS), help="(b)")
    parser.add_argument("--configs", nargs="+", choices=tuple(CONFIGS), default=list(CONFIGS), help="(a)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    n_images = args.images or (40 if args.quick else 200)
    if args.child is not None:
        child(args.child, n_images, args.threads, args.size)
        return
    configure_threads(args.threads)
    print(machine())
    start = time.perf_counter()
    if "a" in args.parts:
        memory(n_images, args.threads, args.size, args.configs)
    if "b" in args.parts:
        fit_time(args.quick, args.size, args.backbones)
    if "c" in args.parts:
        paper_extrapolation(8 if args.quick else 20)
    if "d" in args.parts:
        parts = fit_profile(args.profile_dataset, parse_settings(args.set))
        whole = parts[-1][1]
        print(f"\n(d) a default fit on {args.profile_dataset}, part by part")
        print(
            table(
                [(label, f"{value:.1f}", f"{value / whole:.0%}") for label, value in parts],
                ("part of fit", "seconds", "share"),
            )
        )
    if "e" in args.parts:
        print("\n(e) one training step, random features of efficientnet_lite0's shape")
        rows = step_cost(2 if args.quick else 8)
        print(table([(label, f"{value:.1f}") for label, value in rows], ("step", "ms per step")))
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
