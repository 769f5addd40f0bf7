"""How scoring cost, memory and model size grow with the training set.

SimpleNet's networks have the same size whatever the training set; a nearest-neighbour
method keeps a memory bank of training patches, which grows with it. For training sets of
``--sizes`` images (default 100, 400, 1,600, 6,400) this script fits, with
``efficientnet_lite0`` at 224 × 224 on the CPU:

- ``simplenet``: ``SimpleNetDetector`` with its defaults, saved with :func:`sksimplenet.save`;
- ``random bank 10 %``: the reference of docs/quality.md (official unfold embedding, a seeded
  random 10 % of the training patches, largest raw patch distance as the image score);
- ``coreset 1 %``: PatchCore's approximate greedy coreset at 1 %, its authors' choice: the
  patches projected to 128 dimensions by a random linear map, ten random starting points,
  then each step adds the patch farthest from those chosen. Its cost grows with the square
  of the training set; where one size would take longer than ``--coreset-budget`` seconds,
  the loop runs that long, its fit time is extrapolated from the steps per second (each step
  costs the same) and labelled so, and the bank is completed to its size with random patches
  for the scoring measurement (the cost of scoring depends on the bank's size only).

Each fitted model is saved to a file (the nearest-neighbour banks as float32 tensors with
``torch.save``), and a fresh process loads it and scores ``--test-images`` MTD defect images
(``anomaly_map(..., return_scores=True)`` for SimpleNet, maps and scores for the others):
scoring time per image (median of ``--rounds`` calls after one warm-up), peak resident memory
of that process and its resident memory before loading the model, and the saved file's size.

Training images are MTD's ``MT_Free`` tiles (all of them: no test set is scored for quality
here) resized to 224 × 224; sizes above their number are reached with the eight flips and
rotations of each tile, in a seeded order.

Usage::

    python benchmarks/scaling.py                      # about an hour on 2 cores
    python benchmarks/scaling.py --sizes 100 400 --json results/scaling.json --figure scaling.png
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import MTD_ROOT, layer_features, nearest_patch_scores, parse_settings, random_bank
from PIL import Image
from timing import machine

BACKBONE = "efficientnet_lite0"
SIZE = 224
METHODS = ("simplenet", "random bank 10 %", "coreset 1 %")


def tiles(root: Path, n: int, seed: int = 0) -> np.ndarray:
    """``n`` training images ``(n, 224, 224, 3)`` uint8: the ``MT_Free`` tiles in a seeded order,
    then their flips and rotations (the dihedral group's eight elements, identity first)."""
    files = sorted((root / "MT_Free").rglob("*.jpg"))
    order = np.random.default_rng(seed).permutation(len(files))
    base = [
        np.asarray(Image.open(files[i]).convert("RGB").resize((SIZE, SIZE), Image.BILINEAR))
        for i in order[: min(n, len(files))]
    ]
    if n > 8 * len(files):
        raise SystemExit(f"{n} images asked; {len(files)} tiles give at most {8 * len(files)}")
    images = []
    for index in range(n):
        turn, tile = divmod(index, len(files))
        image = np.rot90(base[tile], k=turn % 4)
        images.append(np.ascontiguousarray(image[:, ::-1] if turn >= 4 else image))
    return np.stack(images)


def test_images(root: Path, n: int, seed: int = 0) -> np.ndarray:
    """``n`` defect images ``(n, 224, 224, 3)`` uint8 drawn with a seed from MTD's defect types."""
    files = sorted(p for p in root.glob("MT_*/**/*.jpg") if "MT_Free" not in p.parts)
    chosen = np.random.default_rng(seed).choice(len(files), n, replace=False)
    return np.stack(
        [np.asarray(Image.open(files[i]).convert("RGB").resize((SIZE, SIZE), Image.BILINEAR)) for i in chosen]
    )


@torch.inference_mode()
def greedy_coreset(
    features: torch.Tensor, fraction: float, seed: int = 0, budget: float = float("inf")
) -> tuple[torch.Tensor, float, bool]:
    """PatchCore's approximate greedy coreset of ``features`` ``(N, c)``: indices of
    ``int(fraction * N)`` patches, the seconds it took (extrapolated when the loop stopped at
    ``budget`` seconds) and whether it ran to the end. Where it stopped early, the indices are
    completed with random patches not yet chosen."""
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    projection = torch.randn(features.shape[1], 128, generator=generator) / features.shape[1] ** 0.5
    projected = torch.cat([chunk.float() @ projection for chunk in features.split(1 << 18)])
    squared = (projected * projected).sum(1)

    def distances_to(rows: torch.Tensor) -> torch.Tensor:
        products = projected @ projected[rows].T
        return (squared[:, None] - 2 * products + squared[rows][None]).clamp_(min=0).sqrt_()

    starts = torch.randperm(len(projected), generator=generator)[:10]
    nearest = distances_to(starts).mean(1)
    wanted = int(fraction * len(features))
    chosen = []
    while len(chosen) < wanted and time.perf_counter() - start < budget:
        index = int(nearest.argmax())
        chosen.append(index)
        torch.minimum(nearest, distances_to(torch.tensor([index]))[:, 0], out=nearest)
    seconds = time.perf_counter() - start
    complete = len(chosen) == wanted
    if not complete:
        seconds *= wanted / max(len(chosen), 1)
        taken = torch.zeros(len(features), dtype=torch.bool)
        taken[chosen] = True
        rest = torch.nonzero(~taken)[:, 0]
        chosen += rest[torch.randperm(len(rest), generator=generator)[: wanted - len(chosen)]].tolist()
    return torch.tensor(chosen), seconds, complete


def fit(method: str, images: np.ndarray, path: Path, coreset_budget: float, settings=None) -> dict:
    """Fit ``method`` on ``images`` and save it to ``path``; its fit seconds and bank size.
    ``settings``: detector parameters other than the defaults (``simplenet`` only)."""
    start = time.perf_counter()
    if method == "simplenet":
        import sksimplenet

        detector = sksimplenet.SimpleNetDetector(BACKBONE, device="cpu", random_state=0, **(settings or {}))
        detector.fit(images)
        seconds = time.perf_counter() - start
        sksimplenet.save(detector, path)
        return {"fit_seconds": seconds, "bank_patches": None, "fit_extrapolated": False}
    features = layer_features(list(images), BACKBONE)
    if method == "random bank 10 %":
        bank, complete = random_bank(features, 0.1), True
        seconds = time.perf_counter() - start
    else:
        extraction = time.perf_counter() - start
        flat = features.reshape(-1, features.shape[-1])
        indices, coreset_seconds, complete = greedy_coreset(flat, 0.01, budget=coreset_budget)
        bank = flat[indices].float()
        seconds = extraction + coreset_seconds
    torch.save({"bank": bank.contiguous()}, path)
    return {"fit_seconds": seconds, "bank_patches": len(bank), "fit_extrapolated": not complete}


def memory_mib(field: str) -> float:
    """A field of ``/proc/self/status`` in MiB: ``VmRSS`` (resident now) or ``VmHWM`` (peak).
    Unlike ``ru_maxrss``, which Linux carries over ``exec`` from the forked parent, ``VmHWM``
    belongs to this process's own memory."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def score_in_child(method: str, model: Path, test: Path, rounds: int) -> None:
    """In a fresh process: load ``model``, score the images in ``test``; print one JSON line."""
    images = np.load(test)
    before = memory_mib("VmRSS")
    if method == "simplenet":
        import sksimplenet

        detector = sksimplenet.load(model)

        def score():
            return detector.anomaly_map(images, return_scores=True)
    else:
        from sksimplenet.backbones import build_feature_extractor

        bank = torch.load(model)["bank"]
        extractor = build_feature_extractor(BACKBONE, None, "DEFAULT")

        def score():
            features = layer_features(list(images), extractor=extractor)
            return nearest_patch_scores(bank, features, (SIZE, SIZE))

    score()
    seconds = []
    for _ in range(rounds):
        start = time.perf_counter()
        score()
        seconds.append(time.perf_counter() - start)
    print(
        json.dumps(
            {
                "ms_per_image": 1000 * statistics.median(seconds) / len(images),
                "peak_mib": memory_mib("VmHWM"),
                "before_model_mib": before,
            }
        )
    )


def measure(method: str, n: int, root: Path, workdir: Path, args) -> dict:
    images = tiles(root, n)
    model = workdir / f"{method.split()[0]}-{n}.model"
    row = {
        "method": method,
        "training_images": n,
        **fit(method, images, model, args.coreset_budget, parse_settings(args.set)),
    }
    del images
    child = [sys.executable, __file__, "--child", method, str(model), str(workdir / "test.npy")]
    child += ["--rounds", str(args.rounds)]
    output = subprocess.run(child, check=True, capture_output=True, text=True).stdout
    row.update(json.loads(output.strip().splitlines()[-1]))
    row["saved_mib"] = os.path.getsize(model) / 2**20
    model.unlink()
    return row


def table(rows: list[dict]) -> str:
    lines = [
        "| method | training images | bank patches | fit s | scoring ms / image | peak MiB scoring "
        "| before model MiB | saved MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        fit_seconds = f"{row['fit_seconds']:.0f}" + (" (extrapolated)" if row["fit_extrapolated"] else "")
        lines.append(
            f"| {row['method']} | {row['training_images']} | {row['bank_patches'] or '–'} | {fit_seconds} | "
            f"{row['ms_per_image']:.1f} | {row['peak_mib']:.0f} | {row['before_model_mib']:.0f} | "
            f"{row['saved_mib']:.2f} |"
        )
    return "\n".join(lines)


def ratios(rows: list[dict]) -> str:
    """Each method's scoring time at the largest size over its time at the smallest, and the
    smallest measured size at which a reference scores slower than SimpleNet."""
    lines = []
    by_method = {m: [r for r in rows if r["method"] == m] for m in dict.fromkeys(r["method"] for r in rows)}
    for method, group in by_method.items():
        first, last = group[0], group[-1]
        lines.append(
            f"{method}: scoring time at {last['training_images']} images / at {first['training_images']}: "
            f"{last['ms_per_image'] / first['ms_per_image']:.2f}×"
        )
    simplenet = {r["training_images"]: r["ms_per_image"] for r in by_method.get("simplenet", [])}
    for method, group in by_method.items():
        if method == "simplenet" or not simplenet:
            continue
        slower = [
            r["training_images"]
            for r in group
            if r["ms_per_image"] > simplenet.get(r["training_images"], float("inf"))
        ]
        lines.append(
            f"{method} scores slower than SimpleNet from {slower[0]} training images on"
            if slower
            else f"{method} scores faster than SimpleNet at every measured size"
        )
    return "\n".join(lines)


def figure(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for method in dict.fromkeys(r["method"] for r in rows):
        group = [r for r in rows if r["method"] == method]
        sizes = [r["training_images"] for r in group]
        axes[0].plot(sizes, [r["ms_per_image"] for r in group], marker="o", label=method)
        axes[1].plot(sizes, [r["saved_mib"] for r in group], marker="o", label=method)
    for axis, label in zip(axes, ("scoring ms per image", "saved model MiB")):
        axis.set(xscale="log", yscale="log", xlabel="training images", ylabel=label)
        axis.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 400, 1600, 6400])
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--test-images", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="timed scoring calls per model")
    parser.add_argument("--coreset-budget", type=float, default=600.0, help="seconds per coreset loop")
    parser.add_argument("--root", type=Path, default=MTD_ROOT, help="the MTD folder")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE", help="SimpleNet parameter"
    )
    parser.add_argument("--figure", type=Path, help="write the two curves to this image file")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        score_in_child(args.child[0], Path(args.child[1]), Path(args.child[2]), args.rounds)
        return
    if not args.root.is_dir():
        raise SystemExit(f"MTD not found at {args.root}")
    print(machine(), flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        np.save(Path(workdir) / "test.npy", test_images(args.root, args.test_images))
        for method in args.methods:
            for n in args.sizes:
                rows.append(measure(method, n, args.root, Path(workdir), args))
                shown = {k: round(v, 3) if isinstance(v, float) else v for k, v in rows[-1].items()}
                print(json.dumps(shown), flush=True)
    print()
    print(table(rows))
    print(ratios(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    if args.figure:
        figure(rows, args.figure)


if __name__ == "__main__":
    main()
