"""How good is SimpleNet on real data, with its defaults and their variants, beside the reference?

For each data set, seed and variant, ``SimpleNetDetector`` (on the offline
``efficientnet_lite0`` backbone unless ``--backbone`` says otherwise) is fitted on the
training images with its defaults changed only as the variant says, and scores the test
images with the model ``fit`` returns; ``predict``'s threshold is the one ``fit`` set from
its held-out training images. Nothing looks at test labels before the metrics.

The reference is the strongest honest nearest-neighbour method on the same frozen layer maps,
as PatchCore's authors' code computes it: each level's 3 × 3 neighbourhood mean counting the
zero padding (the official unfold embedding), levels resized to the larger map and
concatenated, the distance of each test patch to its nearest neighbour in a random 10 %
memory bank of all training patches, image score = the largest raw patch distance, maps
upsampled and smoothed like SimpleNet's.

Data sets: ``mtd`` (the Magnetic Tile Defect data, seeded 80/20 split of its normal images,
through :func:`sksimplenet.datasets.load_mtd`), ``elpv`` (``../shared/datasets/elpv``), or
the path of any folder in the MVTec AD layout (a category folder holding ``train/`` and
``test/``). The split of a folder is fixed; its seeds vary the training.

Usage::

    python benchmarks/quality.py                                  # defaults: mtd and elpv, seeds 0 1 2
    python benchmarks/quality.py --variants "Xavier adaptor" "no synthetic defects" --no-reference
    python benchmarks/quality.py --datasets /data/mvtec/bottle --seeds 0 --set sigma=0.5
    python benchmarks/quality.py --list-variants
    python benchmarks/quality.py --crop-coverage 256 224      # MTD defect pixels a centre crop keeps
    python benchmarks/quality.py --datasets mtd --labelled-shares 0 0.05 0.1 0.2 --json rows.json
    python benchmarks/quality.py --from-json rows.json --figure curve.png  # the learning curve again

``--crop-coverage RESIZE CROP`` answers why the default input is the whole image: for every
defect mask of the MTD test split (seed 0) the crop's box is mapped back onto the image with
:func:`sksimplenet.image_io.crop_box`; it counts the masks entirely outside the crop and the
share of defect pixels inside it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from common import dataset_split, knn_baseline, layer_features, mtd_split, parse_settings
from PIL import Image

from sksimplenet import SimpleNetDetector, training_set
from sksimplenet.datasets import move_labelled_share
from sksimplenet.image_io import crop_box
from sksimplenet.metrics import image_auroc, masks_at_map_resolution, pixel_auroc
from sksimplenet.scoring import image_scores

#: The largest labelled share of the tables (docs/quality.md): its never-labelled images are the
#: labelled regime's test set in every run, whichever shares it asks for.
LABELLED_TEST_SHARE = 0.2

#: Image-score rules measured on every fit's maps: the maximum, and means of top shares.
IMAGE_SCORE_RULES = ("max", 0.001, 0.01, 0.05)

#: Named variants: changes to the defaults (docs/quality.md reports each).
VARIANTS = {
    "defaults": {},
    "Xavier adaptor": {"adaptor_init": "xavier"},
    "no synthetic defects": {"synthetic_defects": 0.0},
    "no synthetic defects, Xavier adaptor": {"synthetic_defects": 0.0, "adaptor_init": "xavier"},
    "padding not counted": {"count_padding": False},
    "two synthetic defect images per training image": {"synthetic_defects": 2.0},
    "synthetic share 0.25": {"synthetic_share": 0.25},
    "synthetic share 1.0": {"synthetic_share": 1.0},
    "hidden width 1024": {"hidden_dim": 1024},
}


def variant_params(name: str) -> dict:
    return dict(VARIANTS[name])


def reference_row(split: dict, detector: SimpleNetDetector, masks, seed: int) -> dict:
    """The nearest-neighbour reference on the detector's backbone and input size."""
    settings = dict(backbone=detector.backbone, layers=detector.layers, resize=detector.resize)
    settings.update(crop_size=detector.crop_size, weights=detector.weights)
    train = layer_features(split["train_paths"], **settings)
    test = layer_features(split["test_paths"], **settings)
    scores, maps = knn_baseline(train, test, size=detector.input_size_, seed=seed)
    labels = split["test_labels"]
    return {
        "reference_image_auroc": image_auroc(labels, scores),
        "reference_pixel_auroc": pixel_auroc(masks, maps) if masks is not None else None,
    }


def fit_and_score(params: dict, seed: int, fit_args: tuple, test: dict):
    """Fit ``SimpleNetDetector(**params)`` on ``fit_args`` (``X, y, masks``) and measure it on
    the ``test_*`` images of ``test``: AUROCs, FPR and recall at the threshold, fit seconds,
    and the image AUROC of each of :data:`IMAGE_SCORE_RULES` on the same maps.

    Returns the row, the detector and the test masks on the maps' grid (None without masks).
    """
    X, y, masks = fit_args
    labels = np.asarray(test["test_labels"])
    detector = SimpleNetDetector(**{**params, "random_state": seed})
    start = time.perf_counter()
    detector.fit(X, y, masks=masks)
    fit_seconds = time.perf_counter() - start
    maps, scores = detector.anomaly_map(test["test_paths"], return_scores=True)
    grid = masks_at_map_resolution(
        test["test_masks"], labels, detector.resize, detector.crop_size, [m.shape for m in maps]
    )
    flagged = scores > detector.threshold_  # what predict answers -1 for
    normal = labels == 1
    row = {
        "image_auroc": image_auroc(labels, scores),
        "pixel_auroc": pixel_auroc(grid, maps) if grid is not None else None,
        "fpr": float(flagged[normal].mean()),
        "recall": float(flagged[~normal].mean()),
        "fit_seconds": fit_seconds,
        "epochs": len(detector.loss_history_),
        "scores": scores,
        "image_auroc_by_rule": {
            str(rule): image_auroc(
                labels, [float(image_scores(torch.as_tensor(m)[None], rule)) for m in maps]
            )
            for rule in IMAGE_SCORE_RULES
        },
    }
    return row, detector, grid


def run(dataset: str, seed: int, params: dict, reference: bool) -> dict:
    """One fit on the normal training images and its evaluation (:func:`fit_and_score`)."""
    split = dataset_split(dataset, seed)
    measured, detector, masks = fit_and_score(params, seed, (split["train_paths"], None, None), split)
    measured.pop("scores")
    row = {"dataset": Path(dataset).name, "seed": seed, **measured}
    if reference:
        row.update(reference_row(split, detector, masks, seed))
    return row


def labelled_test_set(split: dict, shares, seed: int) -> dict:
    """The fixed test set of the labelled regime: the images never labelled at the largest of
    ``shares`` and :data:`LABELLED_TEST_SHARE`, so that runs asking for fewer shares test on the
    same images as the tables (nested shares: a smaller share moves a subset)."""
    return move_labelled_share(split, max(*shares, LABELLED_TEST_SHARE), seed)


def run_labelled(dataset: str, seed: int, shares, params: dict, use_masks=True, reference=True) -> list[dict]:
    """The labelled regime: a seeded share of each defect type moved from the test images into
    training (:func:`sksimplenet.datasets.move_labelled_share`), one row per share, every share
    on one fixed test set (:func:`labelled_test_set`). The reference's memory bank holds the
    normal training images only."""
    split = dataset_split(dataset, seed)
    test = labelled_test_set(split, shares, seed)
    rows = []
    for share in shares:
        moved = move_labelled_share(split, share, seed)
        fit_args = (moved["train_paths"], moved["train_labels"], moved["train_masks"] if use_masks else None)
        measured, detector, grid = fit_and_score(params, seed, fit_args, test)
        measured.pop("scores")
        row = {"dataset": Path(dataset).name, "seed": seed, "share": share, "masks": use_masks}
        rows.append({**row, "n_labelled": moved["n_labelled"], **measured})
    if reference:
        ref = reference_row({**test, "train_paths": split["train_paths"]}, detector, grid, seed)
        for row in rows:
            row.update(ref)
    return rows


def run_leave_one_type_out(dataset: str, seed: int, unseen_types, shares, params: dict) -> list[dict]:
    """For each type of ``unseen_types`` and each share above 0: a fit on that share of every
    *other* defect type (with masks), one row each. ``unseen_image_auroc`` is the image AUROC on
    the normal test images and the never-labelled type's images; ``unsupervised_*`` are those of
    one unsupervised fit (the normal training images only) on the same test images as the row."""
    split = dataset_split(dataset, seed)
    unsupervised, _, _ = fit_and_score(params, seed, (split["train_paths"], None, None), split)
    score_of = dict(zip(split["test_paths"], unsupervised["scores"]))
    rows = []
    for unseen_type in unseen_types:
        for share in [share for share in shares if share > 0]:
            moved = move_labelled_share(split, share, seed, never=(unseen_type,))
            fit_args = (moved["train_paths"], moved["train_labels"], moved["train_masks"])
            measured, _, _ = fit_and_score(params, seed, fit_args, moved)
            scores = measured.pop("scores")
            labels = np.asarray(moved["test_labels"])
            baseline = np.array([score_of[path] for path in moved["test_paths"]])
            unseen = np.array([t == unseen_type for t in moved["test_categories"]]) | (labels == 1)
            row = {"dataset": Path(dataset).name, "seed": seed, "share": share, "masks": True}
            row.update(unseen_type=unseen_type, n_labelled=moved["n_labelled"], **measured)
            row["unseen_image_auroc"] = image_auroc(labels[unseen], scores[unseen])
            row["unsupervised_unseen_image_auroc"] = image_auroc(labels[unseen], baseline[unseen])
            row["unsupervised_image_auroc"] = image_auroc(labels, baseline)
            rows.append(row)
    return rows


def crop_coverage(resize: int, crop_size: int, root=None) -> str:
    """How many MTD defect masks (split seed 0) lie outside a centre crop, and the share of defect
    pixels inside it."""
    split = mtd_split(0) if root is None else mtd_split(0, root)
    masks = outside = seen = total = 0
    for path, label in zip(split["test_masks"], split["test_labels"]):
        mask = np.asarray(Image.open(path).convert("L")) > 0 if label == -1 else None
        if mask is None or not mask.any():
            continue
        top, left, bottom, right = (int(round(v)) for v in crop_box(mask.shape, resize, crop_size))
        inside = int(mask[top:bottom, left:right].sum())
        masks += 1
        outside += inside == 0
        seen += inside
        total += int(mask.sum())
    return (
        f"resize={resize}, crop_size={crop_size}: {outside} of {masks} non-empty defect masks lie "
        f"entirely outside the crop; {seen / total:.1%} of the defect pixels are inside it"
    )


def _cell(rows: list[dict], key: str) -> str:
    values = [row[key] for row in rows if row.get(key) is not None]
    if not values:
        return "—"
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


SUMMARY_KEYS = (
    "image_auroc",
    "reference_image_auroc",
    "pixel_auroc",
    "reference_pixel_auroc",
    "fpr",
    "recall",
)


def summary(rows: list[dict]) -> str:
    """A markdown table: mean ± std over seeds per data set and variant."""
    lines = [
        "| data set | variant | seeds | image AUROC | reference | pixel AUROC | reference | "
        "FPR at threshold | recall at threshold | fit seconds |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key in dict.fromkeys((row["dataset"], row["variant"]) for row in rows):
        group = [row for row in rows if (row["dataset"], row["variant"]) == key]
        cells = " | ".join(_cell(group, name) for name in SUMMARY_KEYS)
        seconds = np.mean([row["fit_seconds"] for row in group])
        lines.append(f"| {key[0]} | {key[1]} | {len(group)} | {cells} | {seconds:.0f} |")
    return "\n".join(lines)


def leave_one_type_out_summary(rows: list[dict]) -> str:
    """A markdown table per never-labelled type: mean ± std over seeds, labelled against the
    unsupervised fit on the same images."""
    lines = [
        "| never-labelled type | labelled share | seeds | its image AUROC, labelled | unsupervised | "
        "all test images, labelled | unsupervised | pixel AUROC, labelled |",
        "|---|---|---|---|---|---|---|---|",
    ]
    names = ("unseen_image_auroc", "unsupervised_unseen_image_auroc", "image_auroc")
    names += ("unsupervised_image_auroc", "pixel_auroc")
    for key in dict.fromkeys((row["unseen_type"], row["share"]) for row in rows):
        group = [row for row in rows if (row["unseen_type"], row["share"]) == key]
        cells = " | ".join(_cell(group, name) for name in names)
        lines.append(f"| {key[0]} | {key[1]} | {len(group)} | {cells} |")
    return "\n".join(lines)


def learning_curve(rows: list[dict], path: Path) -> None:
    """Image and pixel AUROC against the labelled share (mean ± std over seeds, rows with
    masks), the reference as a line, written to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [row for row in rows if row["masks"] and "unseen_type" not in row]
    shares = sorted({row["share"] for row in rows})
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
    for axis, key, title in zip(axes, ("image_auroc", "pixel_auroc"), ("image AUROC", "pixel AUROC")):
        by_share = [[row[key] for row in rows if row["share"] == share] for share in shares]
        percent = [100 * share for share in shares]
        axis.errorbar(
            percent,
            [np.mean(v) for v in by_share],
            [np.std(v) for v in by_share],
            marker="o",
            capsize=3,
            label="SimpleNet, labelled defects with masks",
        )
        reference = [row[f"reference_{key}"] for row in rows if row.get(f"reference_{key}") is not None]
        if reference:
            axis.axhline(
                np.mean(reference), color="grey", linestyle="--", label="nearest-neighbour reference"
            )
        axis.set(xlabel="labelled share of each defect type (%)", title=title)
        axis.grid(True, alpha=0.3)
    axes[0].set_ylabel("AUROC on the never-labelled test images")
    axes[0].legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def labelled_summary(rows: list[dict]) -> str:
    """A markdown table of the labelled regime: mean ± std over seeds per data set and share."""
    lines = [
        "| data set | labelled share | masks | seeds | image AUROC | reference | pixel AUROC | reference | "
        "FPR at threshold | recall at threshold | fit seconds |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key in sorted(dict.fromkeys((row["dataset"], row["share"], row["masks"]) for row in rows)):
        group = [row for row in rows if (row["dataset"], row["share"], row["masks"]) == key]
        cells = " | ".join(_cell(group, name) for name in SUMMARY_KEYS)
        seconds = np.mean([row["fit_seconds"] for row in group])
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {len(group)} | {cells} | {seconds:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["mtd", "elpv"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--variants", nargs="+", default=["defaults"], metavar="NAME", help="named variants")
    parser.add_argument("--list-variants", action="store_true", help="print the named variants and exit")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a detector parameter, for every variant",
    )
    parser.add_argument("--no-reference", action="store_true", help="skip the nearest-neighbour reference")
    parser.add_argument("--json", type=Path, help="write every row to this file")
    parser.add_argument("--crop-coverage", type=int, nargs=2, metavar=("RESIZE", "CROP"), help="and exit")
    parser.add_argument(
        "--labelled-shares",
        type=float,
        nargs="+",
        metavar="SHARE",
        help="the labelled regime instead: these shares of each defect type in training",
    )
    parser.add_argument("--no-masks", action="store_true", help="labelled regime: image labels only")
    parser.add_argument(
        "--unseen-types",
        nargs="+",
        metavar="TYPE",
        help="labelled regime, leave one type out: never label each of these types in turn (e.g. MT_Crack)",
    )
    parser.add_argument(
        "--outside-mask-margin",
        type=int,
        metavar="CELLS",
        help="labelled regime: positions this far from the masks train as normal (an experiment)",
    )
    parser.add_argument("--figure", type=Path, help="labelled regime: write the learning curve here")
    parser.add_argument(
        "--from-json",
        type=Path,
        nargs="+",
        metavar="FILE",
        help="summarise these files' rows; measure nothing",
    )
    args = parser.parse_args(argv)
    if args.from_json:
        rows = [row for path in args.from_json for row in json.loads(path.read_text())["rows"]]
        tables = {"unseen_type": leave_one_type_out_summary, "share": labelled_summary}
        print(next((table for key, table in tables.items() if key in rows[0]), summary)(rows))
        if args.figure:
            learning_curve(rows, args.figure)
        return
    if args.crop_coverage:
        print(crop_coverage(*args.crop_coverage))
        return
    if args.list_variants:
        for name in VARIANTS:
            print(f"{name}: {variant_params(name)}")
        return
    unknown = [name for name in args.variants if name not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; --list-variants lists them")
    common = {"backbone": args.backbone, "device": "cpu", **parse_settings(args.set)}
    if args.outside_mask_margin is not None:
        training_set.OUTSIDE_MASK_MARGIN = args.outside_mask_margin
        print(f"positions {args.outside_mask_margin} cells from every mask train as normal", flush=True)
    print("parameters of every variant (others at their defaults):", common, flush=True)
    if args.labelled_shares:
        rows = []
        for dataset in args.datasets:
            for seed in args.seeds:
                if args.unseen_types:
                    types = args.unseen_types
                    new = run_leave_one_type_out(dataset, seed, types, args.labelled_shares, common)
                else:
                    options = (not args.no_masks, not args.no_reference)
                    new = run_labelled(dataset, seed, args.labelled_shares, common, *options)
                rows += new
                for row in new:
                    shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}
                    print(json.dumps(shown), flush=True)
        print()
        print(leave_one_type_out_summary(rows) if args.unseen_types else labelled_summary(rows))
        if args.figure:
            learning_curve(rows, args.figure)
        if args.json:
            args.json.write_text(json.dumps({"parameters": repr(common), "rows": rows}, indent=2))
        return

    rows = []
    for dataset in args.datasets:
        for seed in args.seeds:
            for index, variant in enumerate(args.variants):
                params = {**variant_params(variant), **common}
                # The reference does not depend on the variant: once per data set and seed.
                row = run(dataset, seed, params, reference=not args.no_reference and index == 0)
                rows.append({"variant": variant, **row})
                shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in rows[-1].items()}
                print(json.dumps(shown), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"parameters": repr(common), "rows": rows}, indent=2))
    print()
    print(summary(rows))


if __name__ == "__main__":
    main()
