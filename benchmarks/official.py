"""Scoring speed against the paper's official SimpleNet code, on the same backbone and input.

The official code (https://github.com/DonaldRR/SimpleNet) is not part of this package:
pass the path of a checkout of it. It is imported from there at run time and configured
as its ``run.sh`` configures it for MVTec AD (``wideresnet50``, ``layer2`` + ``layer3``,
pretrain and target embedding 1536, patch size 3, discriminator of 2 layers with 1024
hidden units, one projection layer), except for the backbone, which both sides share:

- one torchvision model (``--backbone``, random weights unless ``--weights`` names
  others) is built once; the official ``SimpleNet.load`` gets it as its backbone, and this
  package's ``SimpleNetDetector`` gets a state-dict file of it, so that both run the same
  weights (the script checks that their layer features agree);
- both see the same batch of ``--batch`` random images of ``--size`` × ``--size`` pixels,
  not resized or cropped;
- the official side times ``SimpleNet._predict(batch)`` on the normalised float tensor its
  DataLoader would give (ToTensor and ImageNet Normalize, done once, outside the timing),
  under ``torch.no_grad``; this package times ``detector.anomaly_map(X,
  return_scores=True)`` on the uint8 images (input checks, conversion and normalisation
  included). Each returns anomaly maps at the input size and image scores.

Neither side's speed depends on how well it is trained: the official discriminator keeps
its initial weights, and the detector is fitted for one epoch on a few of the images.
The two calls take turns, round after round, after one warm-up call each; the script
prints each side's median images/s and the ratio of this package's to the official's.

The official code imports packages this one does not need (``tensorboard``, ``cv2``,
``pandas``, ``skimage``, besides ``tqdm``, ``scipy``, ``matplotlib``, ``sklearn``); the
script names any that is missing. Install them where the benchmark runs, or, to leave the
environment as it is, into a folder of their own on ``PYTHONPATH``, without the packages
the environment already has (``--no-deps``; this list suits this package's environment)::

    pip install --no-deps --target /tmp/official-deps tensorboard absl-py six \
        opencv-python-headless pandas scikit-image imageio tifffile lazy_loader
    git clone https://github.com/DonaldRR/SimpleNet /tmp/SimpleNet
    export PYTHONPATH=/tmp/official-deps
    python benchmarks/official.py --official /tmp/SimpleNet
    python benchmarks/official.py --official /tmp/SimpleNet --batch 4 --rounds 2 --threads 1
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torchvision
from timing import add_common_arguments, briefly_fitted, configure_threads, interleaved, machine, table

from sksimplenet.precision import backbone_dtype

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Top-level module names of the official code; other modules of the same names (such as
# benchmarks/common.py) must not stand in for them.
OFFICIAL_MODULES = ("simplenet", "common", "metrics", "utils", "backbones", "resnet")
# What the official code imports beyond this package's requirements, by pip name.
OFFICIAL_EXTRAS = {
    "tensorboard": "tensorboard",
    "cv2": "opencv-python-headless",
    "pandas": "pandas",
    "skimage": "scikit-image",
}


def cpu_model() -> str:
    """The processor's model name (from /proc/cpuinfo on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def import_official(path: Path):
    """The official ``simplenet`` module, imported from the checkout at ``path``."""
    if not (path / "simplenet.py").is_file() or not (path / "common.py").is_file():
        raise SystemExit(f"{path} has no simplenet.py and common.py: pass a checkout of the official code")
    for name in OFFICIAL_MODULES:
        sys.modules.pop(name, None)
    sys.path.insert(0, str(path))
    try:
        import simplenet  # importable only once the checkout is on sys.path
    except ModuleNotFoundError as error:
        missing = (error.name or "").split(".")[0]
        hint = OFFICIAL_EXTRAS.get(missing, missing)
        raise SystemExit(
            f"The official code imports {missing!r}, which is not installed here ({error}). It needs "
            f"`pip install {' '.join(OFFICIAL_EXTRAS.values())}`, e.g. with `--target DIR` and "
            f"PYTHONPATH=DIR to leave this environment as it is (see this script's docstring); "
            f"{hint!r} is the one missing now."
        ) from error
    for name in ("simplenet", "common"):
        module_file = Path(sys.modules[name].__file__).resolve()
        if module_file.parent != path.resolve():
            raise SystemExit(f"module {name!r} came from {module_file}, not from {path}")
    return simplenet


def reference_backbone(name: str, weights: str | None) -> torch.nn.Module:
    """The torchvision model both sides run: random (seeded) weights, a torchvision weights
    name, or a local state-dict file."""
    torch.manual_seed(0)
    if weights is not None and Path(weights).is_file():
        model = torchvision.models.get_model(name, weights=None)
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    else:
        model = torchvision.models.get_model(name, weights=weights)
    return model.eval()


def official_model(simplenet, backbone: torch.nn.Module, layers: list[str], size: int):
    """``SimpleNet`` as the official ``main.py`` builds it with the settings of its ``run.sh``."""
    model = simplenet.SimpleNet(torch.device("cpu"))
    model.load(
        backbone=backbone,
        layers_to_extract_from=layers,
        device=torch.device("cpu"),
        input_shape=(3, size, size),
        pretrain_embed_dimension=1536,
        target_embed_dimension=1536,
        patchsize=3,
        embedding_size=256,
        meta_epochs=40,
        gan_epochs=4,
        noise_std=0.015,
        dsc_hidden=1024,
        dsc_layers=2,
        dsc_margin=0.5,
        pre_proj=1,
    )
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--official", type=Path, required=True, help="path of a checkout of the official code"
    )
    parser.add_argument("--backbone", default="wide_resnet50_2", help="torchvision model name")
    parser.add_argument("--layers", default="layer2,layer3", help="comma-separated layer names")
    parser.add_argument("--batch", type=int, default=8, help="images per call")
    parser.add_argument("--size", type=int, default=224, help="image height and width")
    parser.add_argument("--rounds", type=int, default=5, help="timed calls per side")
    parser.add_argument(
        "--precisions",
        default="float32,auto",
        help="this package's backbone precisions to time, comma-separated (default: %(default)s)",
    )
    parser.add_argument(
        "--weights",
        default=None,
        help="torchvision weights name or local state-dict file (default: random weights, no download)",
    )
    add_common_arguments(parser)
    args = parser.parse_args()
    configure_threads(args.threads)
    rounds = 2 if args.quick else args.rounds
    layers = [name.strip() for name in args.layers.split(",") if name.strip()]

    simplenet = import_official(args.official)
    backbone = reference_backbone(args.backbone, args.weights)
    images = np.random.default_rng(0).integers(0, 256, (args.batch, args.size, args.size, 3), dtype=np.uint8)
    unit = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255.0)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    normalised = (unit - mean) / std  # what the official DataLoader gives

    with tempfile.TemporaryDirectory() as folder:
        weights_file = os.path.join(folder, "backbone.pt")
        torch.save(backbone.state_dict(), weights_file)
        detector = briefly_fitted(
            images,
            args.backbone,
            layers=tuple(layers),
            weights=weights_file,
            resize=(args.size, args.size),
            crop_size=None,
            batch_size=4,
            patch_fraction=0.05,
            validation_fraction=0.0,
        )
    official = official_model(simplenet, backbone, layers, args.size)

    # Same backbone weights: the layer features of one image agree on both sides.
    with torch.no_grad():
        theirs = official.forward_modules["feature_aggregator"](normalised[:1])
        ours = detector.model_.extractor(unit[:1])
        difference = max(
            ((theirs[name] - mine).abs().max() / theirs[name].abs().max()).item()
            for name, mine in zip(layers, ours)
        )

    def run_official():
        with torch.no_grad():
            return official._predict(normalised)

    def ours_in(precision):
        def run():
            return detector.set_params(precision=precision).anomaly_map(images, return_scores=True)

        return run

    precisions = [name.strip() for name in args.precisions.split(",") if name.strip()]
    scores, maps, _ = run_official()
    our_maps, our_scores = ours_in("float32")()
    shapes = (np.shape(np.stack(maps)), np.shape(scores), our_maps.shape, our_scores.shape)

    calls = {"official": run_official, **{f"sksimplenet, {p}": ours_in(p) for p in precisions}}
    seconds = interleaved(calls, rounds, warmup=1)
    speed = {name: args.batch / value for name, value in seconds.items()}
    print(f"CPU: {cpu_model()}")
    print(f"machine: {machine()}")
    print(
        f"{args.backbone} {'+'.join(layers)}, weights={args.weights}, batch {args.batch} at "
        f"{args.size}x{args.size}, {rounds} rounds in turns after one warm-up call each"
    )
    print(f"layer features, max |official - ours| / max |official|: {difference:.1e}")
    print(f"maps and scores, official: {shapes[0]} {shapes[1]}; sksimplenet: {shapes[2]} {shapes[3]}")
    print(f'precision="auto" here: {backbone_dtype("auto", torch.device("cpu"))}')
    rows = [("official SimpleNet._predict", f"{seconds['official']:.3f}", f"{speed['official']:.2f}", "1.00")]
    for name in calls:
        if name != "official":
            ratio = speed[name] / speed["official"]
            rows.append(
                (f"{name}: anomaly_map", f"{seconds[name]:.3f}", f"{speed[name]:.2f}", f"{ratio:.2f}")
            )
    print(table(rows, ("inference path", "median s/batch", "images/s", "x official")))


if __name__ == "__main__":
    main()
