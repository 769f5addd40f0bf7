"""How fast does a fitted detector score: against the bare backbone, the input pipeline, the official code.

(a) Throughput against the bare backbone. For wide_resnet50_2 (random weights: speed does
not depend on them) and efficientnet_lite0, batch 8 at 224 × 224, measured in turn, round
after round:

- ``backbone``: the truncated backbone alone, as the detector builds it (channels-last
  layout, BatchNorm folded into the convolutions), on a ready float batch;
- ``backbone, NCHW``: the same module in PyTorch's default layout;
- ``backbone, as its library runs it``: the truncated network as torchvision (or the
  EfficientNet-Lite module) defines it, in NCHW layout with its BatchNorm layers;
- ``scoring``: ``detector.anomaly_map(X, return_scores=True)`` on the uint8 images: input
  checks, preprocessing, backbone, folded head, anomaly maps and image scores, NumPy out;
- ``two calls``: ``anomaly_map(X)`` then ``score_samples(X)``, two passes;
- ``unfolded head``: the model's own reference path (patch embedding, scaler, adaptor,
  discriminator, upsampling and convolution smoothing), i.e. scoring without the fold.

It prints images/s and the ratio of each to ``backbone``, then ratio (a) itself, scoring
against a bare forward of the truncated backbone (target ≥ 0.9), for both bare backbones:
the library's module, and the detector's own faster copy (which shows what the head costs).

(b) Input pipeline: scoring 48 JPEG files (512 × 512, resized to 256 and cropped to 224)
with efficientnet_lite0, decoded in the main process (``n_jobs=None``) and in two
DataLoader workers (``n_jobs=2``), beside decoding alone and the network alone, and how
long the network waited for each batch.

(c) Against the paper's official code (``--official PATH``, a checkout of
https://github.com/DonaldRR/SimpleNet, imported from there at run time; it is not part of
this package). It is configured as its ``run.sh`` configures it for MVTec AD
(``wideresnet50``, ``layer2`` + ``layer3``, embeddings of 1536, patch size 3, discriminator
of 2 layers with 1024 hidden units, one projection layer); both sides share one torchvision
backbone (random weights unless ``--weights``; the script checks that their layer features
agree) and one batch of ``--batch`` random images, not resized. The official side times
``SimpleNet._predict`` on the normalised tensor its DataLoader would give; this package
times ``anomaly_map(X, return_scores=True)`` on the uint8 images, in each ``--precisions``.
The official code imports packages this one does not need; install them apart::

    pip install --no-deps --target /tmp/official-deps tensorboard absl-py six \\
        opencv-python-headless pandas scikit-image imageio tifffile lazy_loader
    git clone https://github.com/DonaldRR/SimpleNet /tmp/SimpleNet
    PYTHONPATH=/tmp/official-deps python benchmarks/speed.py --official /tmp/SimpleNet --parts c

(d) Levers of the scoring path (``--parts d``; no official checkout needed): part (c)'s
detector scores 32 images per call at each batch size of a network pass (4, 8, 16, 32) in
each ``--precisions``, then with its backbone under ``torch.compile`` (inductor with
freezing, batch 8), then with an int8 backbone (``common.Int8Body``, post-training static
quantisation calibrated on the first batch; not a ``precision`` the package offers). Beside
images/s it prints the backbone's multiply-adds per second (counted by
``torch.utils.flop_counter``) as a share of what one 2048 × 2048 matrix product reaches in
the same arithmetic on the same threads: how much a faster backbone path could still gain.

Usage::

    python benchmarks/speed.py --threads 1            # parts a and b on one core
    python benchmarks/speed.py --quick
    python benchmarks/speed.py --official /tmp/SimpleNet --parts a b c
    python benchmarks/speed.py --parts d --threads 2
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from common import Int8Body, library_backbone, plain_layout
from PIL import Image
from timing import add_common_arguments, briefly_fitted, configure_threads, interleaved, machine, table

from sksimplenet.backbones import IMAGENET_MEAN, IMAGENET_STD
from sksimplenet.datasets import make_synthetic
from sksimplenet.image_io import load_image, preprocess
from sksimplenet.precision import backbone_dtype

BACKBONES = {"wide_resnet50_2": None, "efficientnet_lite0": "DEFAULT"}


@torch.inference_mode()
def unfolded_scoring(model, batch: torch.Tensor):
    """The model's own reference path (its folded head set aside for the call)."""
    head, model.folded_head = model.folded_head, None
    try:
        return model(batch)
    finally:
        model.folded_head = head


def measure(backbone: str, weights, images: np.ndarray, repeats: int) -> tuple[list[tuple], str]:
    """Rows of (a) for one backbone, and its line of ratio (a)."""
    batch = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255.0)
    detector = briefly_fitted(
        images,
        backbone,
        weights=weights,
        resize=images.shape[1],
        crop_size=images.shape[1],
        patch_fraction=0.05,
    )
    model = detector.model_
    extractor, plain = model.extractor, plain_layout(model.extractor)
    library = library_backbone(backbone, weights)

    @torch.inference_mode()
    def bare(module):
        return module(batch)

    def unfolded():
        return unfolded_scoring(model, batch)

    seconds = interleaved(
        {
            "backbone": lambda: bare(extractor),
            "backbone, NCHW": lambda: bare(plain),
            "backbone, as its library runs it": lambda: bare(library),
            "scoring": lambda: detector.anomaly_map(images, return_scores=True),
            "two calls": lambda: (detector.anomaly_map(images), detector.score_samples(images)),
            "unfolded head": unfolded,
        },
        repeats,
    )
    # The folded and the unfolded paths agree (maps and scores within 1e-4).
    maps, scores = detector.anomaly_map(images, return_scores=True)
    ref_maps, ref_scores = unfolded()
    difference = max(np.abs(maps - ref_maps.numpy()).max(), np.abs(scores - ref_scores.numpy()).max())
    rows = [
        (backbone, name, f"{value:.3f}", f"{len(images) / value:.1f}", f"{seconds['backbone'] / value:.3f}")
        for name, value in seconds.items()
    ]
    rows.append((backbone, "max |folded - unfolded|", f"{difference:.1e}", "", ""))
    scoring = seconds["scoring"]
    summary = (
        f"{backbone}: {seconds['backbone, as its library runs it'] / scoring:.3f} against the truncated "
        f"backbone as its library runs it, {seconds['backbone'] / scoring:.3f} against the detector's own "
        "(BatchNorm folded, channels-last)"
    )
    return rows, summary


def throughput(repeats: int, batch_size: int, size: int, backbones=tuple(BACKBONES)) -> None:
    images, _, _ = make_synthetic(batch_size, 0, texture="object", size=size, random_state=0)
    rows, summaries = [], []
    for backbone in backbones:
        weights = BACKBONES[backbone]
        # efficientnet_lite0 is an order of magnitude faster: three times the rounds.
        rounds = repeats if backbone == "wide_resnet50_2" else 3 * repeats
        backbone_rows, summary = measure(backbone, weights, images, rounds)
        rows += [(*row[:1], rounds, *row[1:]) for row in backbone_rows]
        summaries.append(summary)
    print(f"(a) batch {batch_size} at {size} x {size}, median of interleaved rounds")
    print(table(rows, ("backbone", "rounds", "measured", "s/batch", "images/s", "ratio to backbone")))
    print("\nratio (a), scoring throughput / bare truncated backbone's (target >= 0.9):")
    print("\n".join(summaries))


def pipeline(repeats: int, n_files: int) -> None:
    images, _, _ = make_synthetic(n_files, 0, texture="object", size=512, random_state=1)
    detector = briefly_fitted(images, "efficientnet_lite0", patch_fraction=0.05)
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for index, image in enumerate(images):
            path = Path(folder) / f"{index:03d}.jpg"
            Image.fromarray(image).save(path, quality=95)
            paths.append(str(path))
        decoded = torch.stack([preprocess(load_image(p)) for p in paths])

        def decode_only():
            for path in paths:
                preprocess(load_image(path), detector.resize, detector.crop_size)

        @torch.inference_mode()
        def network_only():
            for start in range(0, n_files, 16):
                detector.model_(decoded[start : start + 16])

        waits: dict[str, list[list[float]]] = {"files, n_jobs=None": [], "files, n_jobs=2": []}

        def files(n_jobs):
            name = f"files, n_jobs={n_jobs}"

            def score():
                detector.set_params(n_jobs=n_jobs)
                timed = TimedLoader.recording()  # observe the estimator's waits for data
                try:
                    detector.anomaly_map(paths, return_scores=True)
                finally:
                    torch.utils.data.DataLoader = timed.original
                waits[name].append(timed.waits)

            return score

        seconds = interleaved(
            {
                "decoding only": decode_only,
                "network only": network_only,
                "files, n_jobs=None": files(None),
                "files, n_jobs=2": files(2),
            },
            repeats,
        )
    total = seconds["decoding only"] + seconds["network only"]
    rows = []
    for name, value in seconds.items():
        first = later = ""
        if name in waits:
            first = f"{statistics.median(w[0] for w in waits[name]):.3f}"
            later = f"{statistics.median(sum(w[1:]) for w in waits[name]):.3f}"
        rows.append((name, f"{value:.2f}", f"{n_files / value:.1f}", first, later))
    print(f"\n(b) input pipeline: {n_files} JPEG files, efficientnet_lite0, median of {repeats} rounds")
    print(table(rows, ("measured", "seconds", "images/s", "wait, 1st batch (s)", "wait, later (s)")))
    print(
        f"decoding + network = {total:.2f} s; in the main process {seconds['files, n_jobs=None']:.2f} s; "
        f"with two workers {seconds['files, n_jobs=2']:.2f} s. Later batches that are ready when the "
        "network asks for them (wait near 0) were decoded while the network ran."
    )


class TimedLoader:
    """Iterates a DataLoader and records the time spent waiting for each batch."""

    def __init__(self, loader):
        self.loader = loader
        self.waits: list[float] = []

    @classmethod
    def recording(cls):
        """Make ``torch.utils.data.DataLoader`` record the waits of the next loader built (the
        estimator's), until ``torch.utils.data.DataLoader = recorder.original`` restores it."""
        original = torch.utils.data.DataLoader
        recorder = cls(None)
        recorder.original = original

        def build(*args, **kwargs):
            recorder.loader = original(*args, **kwargs)
            return recorder

        torch.utils.data.DataLoader = build
        return recorder

    def __iter__(self):
        iterator = iter(self.loader)
        while True:
            start = time.perf_counter()
            try:
                batch = next(iterator)
            except StopIteration:
                return
            self.waits.append(time.perf_counter() - start)
            yield batch


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


def comma_separated(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def official_shaped_detector(images: np.ndarray, args, weights):
    """Part (c)'s detector, briefly fitted: ``args.backbone`` with ``args.layers`` at the input
    size of ``images``, not resized, and the official discriminator's hidden width (its
    ``dsc_hidden``), so that both sides score the same head."""
    return briefly_fitted(
        images,
        args.backbone,
        layers=tuple(comma_separated(args.layers)),
        weights=weights,
        resize=images.shape[1:3],
        crop_size=None,
        batch_size=4,
        patch_fraction=0.05,
        hidden_dim=1024,
        validation_fraction=0.0,
    )


def against_official(args, rounds: int) -> None:
    """Part (c): this package's scoring against the official ``SimpleNet._predict``."""
    layers = comma_separated(args.layers)

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
        detector = official_shaped_detector(images, args, weights_file)
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

    precisions = comma_separated(args.precisions)
    scores, maps, _ = run_official()
    our_maps, our_scores = ours_in("float32")()
    shapes = (np.shape(np.stack(maps)), np.shape(scores), our_maps.shape, our_scores.shape)

    calls = {"official": run_official, **{f"sksimplenet, {p}": ours_in(p) for p in precisions}}
    seconds = interleaved(calls, rounds, warmup=1)
    speed = {name: args.batch / value for name, value in seconds.items()}
    print(f"\n(c) against the official code; CPU: {cpu_model()}")
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


def matmul_rate(dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    """G multiply-adds per second of one ``size`` × ``size`` matrix product in ``dtype``: what
    this CPU's threads reach on the most favourable shape, a yardstick for the backbone."""
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    torch.mm(a, b)
    start = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    return repeats * size**3 / (time.perf_counter() - start) / 1e9


def levers(args, rounds: int, compile_backbone: bool = True) -> list[dict]:
    """(d) Each lever of the scoring path of part (c)'s detector, in one run: the batch size of a
    network pass, ``torch.compile`` of the backbone (unless not ``compile_backbone``), an int8
    backbone (:class:`common.Int8Body`, which ``precision`` does not offer), and the
    backbone's multiply-adds per second against a large matrix product's in the same
    arithmetic (float32 and bfloat16 only). Returns the rows printed, as dicts."""
    from torch.utils.flop_counter import FlopCounterMode

    n_images = 32
    images = np.random.default_rng(0).integers(0, 256, (n_images, args.size, args.size, 3), dtype=np.uint8)
    detector = official_shaped_detector(images, args, args.weights)
    model = detector.model_
    unit = torch.from_numpy(images[:1]).permute(0, 3, 1, 2).float().div(255.0)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.extractor(unit)
    backbone_madds = counter.get_total_flops() / 2  # the counter counts a multiply-add as two

    def scoring(precision: str, batch: int):
        def run():
            detector.set_params(precision=precision, inference_batch_size=batch)
            return detector.anomaly_map(images, return_scores=True)

        return run

    precisions = comma_separated(args.precisions)
    batches = (4, 8, 16, 32)
    calls = {
        (precision, batch, "eager"): scoring(precision, batch)
        for precision in precisions
        for batch in batches
    }
    seconds = interleaved(calls, rounds, warmup=1)
    rows = [
        {"precision": p, "batch": b, "backbone": kind, "seconds": value}
        for (p, b, kind), value in seconds.items()
    ]

    # torch.compile of the backbone (inductor, with freezing: the weights become constants
    # that oneDNN prepacks, its recommended setting for CPU inference), batch 8, once per precision.
    import torch._inductor.config as inductor_config

    eager, freezing = model.extractor, inductor_config.freezing
    for precision in precisions if compile_backbone else ():
        reference = scoring(precision, 8)()[1]
        torch._dynamo.reset()
        inductor_config.freezing = True
        model.extractor = torch.compile(eager)
        try:
            start = time.perf_counter()
            scores = scoring(precision, 8)()[1]
            first_call = time.perf_counter() - start
            value = interleaved({"compiled": scoring(precision, 8)}, rounds, warmup=0)["compiled"]
        finally:
            model.extractor, inductor_config.freezing = eager, freezing
        difference = float(np.abs(scores - reference).max())
        kind = f"torch.compile ({first_call:.0f} s first call, max |score difference| {difference:.1e})"
        rows.append({"precision": precision, "batch": 8, "backbone": kind, "seconds": value})

    # An int8 backbone, calibrated on the first batch it scores; the head stays float32.
    float_body = model.extractor.body
    reference = scoring("float32", 8)()[1]
    model.extractor.body = Int8Body(float_body)
    try:
        difference = float(np.abs(scoring("float32", 8)()[1] - reference).max())
        value = interleaved({"int8": scoring("float32", 8)}, rounds, warmup=0)["int8"]
    finally:
        model.extractor.body = float_body
    kind = f"int8, static quantisation (max |score difference| {difference:.1e})"
    rows.append({"precision": "int8", "batch": 8, "backbone": kind, "seconds": value})

    rates = {
        precision: matmul_rate(backbone_dtype(precision, torch.device("cpu"))) for precision in precisions
    }
    for row in rows:
        row["images_per_second"] = n_images / row["seconds"]
        row["backbone_gmadd_per_second"] = n_images * backbone_madds / row["seconds"] / 1e9
        rate = rates.get(row["precision"])
        row["share_of_product"] = None if rate is None else row["backbone_gmadd_per_second"] / rate
    print(f"\n(d) levers of the scoring path; CPU: {cpu_model()}")
    print(
        f"{args.backbone} {args.layers}, {n_images} images at {args.size}x{args.size} per call, "
        f"{rounds} rounds in turns; backbone {backbone_madds / 1e9:.2f} G multiply-adds per image"
    )
    printed = [
        (
            f"{row['precision']}, batch {row['batch']}",
            row["backbone"],
            f"{row['images_per_second']:.2f}",
            f"{row['backbone_gmadd_per_second']:.0f}",
            "—" if row["share_of_product"] is None else f"{row['share_of_product']:.2f}",
        )
        for row in rows
    ]
    print(
        table(
            printed, ("precision, batch", "backbone", "images/s", "backbone G madd/s", "of a 2048² product")
        )
    )
    print(
        "one 2048 x 2048 product: "
        + ", ".join(f"{precision} {rate:.0f} G multiply-adds/s" for precision, rate in rates.items())
    )
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_arguments(parser)
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=("a", "b", "c", "d"),
        default=None,
        help="default: a b (c with --official)",
    )
    parser.add_argument("--batch", type=int, default=8, help="images per call")
    parser.add_argument("--size", type=int, default=224, help="image height and width")
    parser.add_argument(
        "--backbones", nargs="+", choices=tuple(BACKBONES), default=list(BACKBONES), help="(a)"
    )
    parser.add_argument(
        "--files", type=int, default=None, help="(b): JPEG files (default 48, 16 with --quick)"
    )
    parser.add_argument("--official", type=Path, help="(c): path of a checkout of the official code")
    parser.add_argument("--backbone", default="wide_resnet50_2", help="(c): torchvision model name")
    parser.add_argument("--layers", default="layer2,layer3", help="(c): comma-separated layer names")
    parser.add_argument("--rounds", type=int, default=5, help="(c): timed calls per side")
    parser.add_argument(
        "--precisions", default="float32,auto", help="(c): this package's backbone precisions"
    )
    parser.add_argument("--weights", default=None, help="(c): torchvision weights name or state-dict file")
    parser.add_argument("--no-compile", action="store_true", help="(d): leave out torch.compile")
    args = parser.parse_args(argv)
    parts = args.parts or (["a", "b", "c"] if args.official else ["a", "b"])
    if "c" in parts and args.official is None:
        parser.error("part c needs --official PATH")
    configure_threads(args.threads)
    print(machine())
    start = time.perf_counter()
    if "a" in parts:
        throughput(2 if args.quick else 7, args.batch, args.size, args.backbones)
    if "b" in parts:
        pipeline(1 if args.quick else 3, args.files or (16 if args.quick else 48))
    if "c" in parts:
        against_official(args, 2 if args.quick else args.rounds)
    if "d" in parts:
        levers(args, 2 if args.quick else args.rounds, compile_backbone=not args.no_compile)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
