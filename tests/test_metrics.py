import csv
import io

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from sksimplenet.metrics import (
    PER_IMAGE_COLUMNS,
    aupro,
    evaluate,
    f1_max,
    image_auroc,
    image_f1_max,
    masks_at_map_resolution,
    per_image_table,
    per_type_metrics,
    pixel_auroc,
    pixel_f1_max,
    pro_curve,
    threshold_metrics,
    write_per_image_csv,
)


def _blobs(n_images=6, size=40, seed=0):
    """Masks with a few random discs each (some images defect-free) and noisy maps."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    masks = np.zeros((n_images, size, size), bool)
    for i in range(1, n_images):
        for _ in range(rng.integers(1, 4)):
            cy, cx, r = rng.integers(5, size - 5), rng.integers(5, size - 5), rng.integers(2, 6)
            masks[i] |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
    maps = masks * rng.uniform(0.3, 1.0, size=masks.shape) + rng.normal(0, 0.4, size=masks.shape)
    return masks, maps


def _exact_aupro(masks, maps, max_fpr):
    """The MVTec AD curve with every distinct score as a threshold (all pixels in memory)."""
    regions = []
    normal_scores = []
    for mask, amap in zip(masks, maps):
        labelled, n = ndimage.label(mask, structure=np.ones((3, 3)))
        regions += [amap[labelled == k] for k in range(1, n + 1)]
        normal_scores.append(amap[labelled == 0])
    normal_scores = np.concatenate(normal_scores)
    thresholds = np.unique(np.concatenate([normal_scores, *regions]))[::-1]
    fpr = [0.0] + [np.mean(normal_scores >= t) for t in thresholds]
    pro = [0.0] + [np.mean([np.mean(r >= t) for r in regions]) for t in thresholds]
    grid_fpr = np.r_[[f for f in fpr if f <= max_fpr], max_fpr]
    grid_pro = np.r_[[p for f, p in zip(fpr, pro) if f <= max_fpr], np.interp(max_fpr, fpr, pro)]
    return np.sum(np.diff(grid_fpr) * (grid_pro[1:] + grid_pro[:-1]) / 2) / max_fpr


# ----------------------------------------------------------------------------- image level
def test_image_auroc_accepts_outlier_labels_and_boolean_flags_alike():
    scores = [0.1, 0.4, 0.35, 0.8]
    # Anomalous images score 0.35 and 0.8; normal ones 0.1 and 0.4: 3 of 4 pairs ordered.
    assert image_auroc([1, 1, -1, -1], scores) == pytest.approx(0.75)
    assert image_auroc([False, False, True, True], scores) == pytest.approx(0.75)
    assert image_auroc([0, 0, 1, 1], scores) == pytest.approx(0.75)


def test_image_auroc_of_detector_style_scores_needs_a_minus_sign():
    labels = np.array([1, 1, -1, -1])
    score_samples = np.array([-0.1, -0.2, -0.9, -0.5])  # higher = more normal, as in scikit-learn
    assert image_auroc(labels, -score_samples) == 1.0
    assert image_auroc(labels, score_samples) == 0.0


@pytest.mark.parametrize(
    "labels, message",
    [
        ([1, 1, 1], "single class"),
        ([-1, -1], "single class"),
        ([-1, 0, 1], "got values"),
        ([0, 2, 2], "got values"),
    ],
)
def test_image_auroc_rejects_ambiguous_labels(labels, message):
    with pytest.raises(ValueError, match=message):
        image_auroc(labels, np.arange(len(labels)))


def test_image_auroc_rejects_misaligned_or_nan_scores():
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        image_auroc([1, -1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="NaN"):
        image_auroc([1, -1], [0.1, np.nan])


def test_f1_max_matches_brute_force_over_all_thresholds():
    rng = np.random.default_rng(0)
    truth = rng.random(60) < 0.3
    scores = truth * 0.5 + rng.random(60)
    brute = 0.0
    for t in np.unique(scores):
        predicted = scores >= t
        tp = np.sum(predicted & truth)
        brute = max(brute, 2 * tp / (predicted.sum() + truth.sum()))
    assert f1_max(truth, scores) == pytest.approx(brute)
    assert image_f1_max(np.where(truth, -1, 1), scores) == pytest.approx(brute)


def test_image_f1_max_hand_example():
    # Threshold 0.35 flags three images, two of them anomalous: P = 2/3, R = 1, F1 = 0.8.
    assert image_f1_max([1, 1, -1, -1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.8)


def test_f1_max_points_to_image_f1_max_for_outlier_labels():
    with pytest.raises(ValueError, match="image_f1_max"):
        f1_max(np.array([1, -1, 1]), [0.1, 0.2, 0.3])


# ----------------------------------------------------------------------------- pixel level
def test_pixel_auroc_matches_sklearn_on_random_maps():
    masks, maps = _blobs(seed=1)
    expected = roc_auc_score(masks.ravel(), maps.ravel())
    assert pixel_auroc(masks, maps) == pytest.approx(expected, abs=1e-3)
    # Float32 maps, as the detector returns them, give the same answer.
    assert pixel_auroc(masks, maps.astype(np.float32)) == pytest.approx(expected, abs=1e-3)


def test_pixel_auroc_of_images_of_different_sizes():
    rng = np.random.default_rng(2)
    masks = [rng.random((20, 30)) < 0.2, rng.random((16, 16)) < 0.1, None]
    maps = [m + rng.normal(0, 1, m.shape) for m in masks[:2]] + [rng.normal(0, 1, (12, 18))]
    all_truth = np.concatenate([masks[0].ravel(), masks[1].ravel(), np.zeros(12 * 18, bool)])
    all_scores = np.concatenate([m.ravel() for m in maps])
    assert pixel_auroc(masks, maps) == pytest.approx(roc_auc_score(all_truth, all_scores), abs=1e-3)


def test_pixel_metrics_read_mask_files_one_at_a_time(tmp_path):
    masks, maps = _blobs(n_images=3, seed=3)
    paths = []
    for i, mask in enumerate(masks):
        paths.append(tmp_path / f"{i}_mask.png")
        Image.fromarray((mask * 255).astype(np.uint8)).save(paths[-1])
    paths[0] = None  # a normal image has no mask file
    assert pixel_auroc(paths, maps) == pytest.approx(pixel_auroc(masks, maps))
    assert aupro(paths, maps) == pytest.approx(aupro(masks, maps))


def test_pixel_auroc_of_perfect_and_constant_maps():
    masks, _ = _blobs(seed=4)
    assert pixel_auroc(masks, masks.astype(float)) == 1.0
    assert pixel_auroc(masks, np.ones(masks.shape)) == 0.5


def test_pixel_f1_max_matches_the_exact_value():
    masks, maps = _blobs(seed=5)
    assert pixel_f1_max(masks, maps) == pytest.approx(f1_max(masks, maps), abs=1e-3)


def test_pixel_metrics_name_the_mismatched_image():
    masks, maps = _blobs(n_images=3)
    with pytest.raises(ValueError, match=r"mask 1 has shape \(40, 40\) but its map has shape \(40, 39\)"):
        pixel_auroc(masks, [maps[0], maps[1, :, 1:], maps[2]])
    with pytest.raises(ValueError, match="no defect pixel"):
        pixel_auroc(np.zeros((2, 5, 5)), np.ones((2, 5, 5)))


# ----------------------------------------------------------------------------- masks at map resolution
def test_masks_at_map_resolution_keeps_defects_where_they_are_when_downsampled():
    mask = np.zeros((80, 120), np.uint8)
    mask[40:60, 80:120] = 255  # the bottom-right block of the image

    (small,) = masks_at_map_resolution([mask], [-1], (40, 60), None, [(40, 60)])

    expected = np.zeros((40, 60), bool)
    expected[20:30, 40:60] = True  # the same block, at half the resolution
    assert small.dtype == bool
    np.testing.assert_array_equal(small, expected)


def test_masks_at_map_resolution_crops_like_the_images():
    mask = np.zeros((100, 100), bool)
    mask[30:40, 70:80] = True  # inside the centre crop
    mask[0:10, 0:10] = True  # cut away by it

    (cropped,) = masks_at_map_resolution([mask], [-1], None, 60, [(60, 60)])

    expected = np.zeros((60, 60), bool)
    expected[10:20, 50:60] = True  # the crop starts at row 20, column 20
    np.testing.assert_array_equal(cropped, expected)


def test_masks_at_map_resolution_reads_files_and_blanks_normal_images(tmp_path):
    mask = np.zeros((32, 32), np.uint8)
    mask[8:16, 4:12] = 255
    path = tmp_path / "mask.png"
    Image.fromarray(mask).save(path)

    out = masks_at_map_resolution(
        [path, None, tmp_path / "missing.png"], [-1, 1, 1], 16, None, [(16, 16)] * 3
    )

    assert [m.shape for m in out] == [(16, 16)] * 3
    assert np.argwhere(out[0]).min(0).tolist() == [4, 2] and np.argwhere(out[0]).max(0).tolist() == [7, 5]
    assert out[0].sum() == 16
    assert not out[1].any() and not out[2].any()


def test_masks_at_map_resolution_gives_up_on_an_anomalous_image_without_a_mask(tmp_path):
    masks = [np.ones((8, 8), bool), tmp_path / "missing.png"]
    assert masks_at_map_resolution(masks, [-1, -1], None, None, [(8, 8)] * 2) is None


def test_masks_at_map_resolution_names_the_mismatched_mask():
    masks = [np.zeros((8, 8), bool), np.zeros((8, 10), bool)]
    with pytest.raises(ValueError, match=r"mask 1 is \(8, 10\) after preprocessing but its map is \(8, 8\)"):
        masks_at_map_resolution(masks, [1, -1], None, None, [(8, 8)] * 2)
    with pytest.raises(ValueError, match=r"mask of image 0 must be a 2-D"):
        masks_at_map_resolution([np.zeros((8, 8, 3))], [-1], None, None, [(8, 8)])


# ----------------------------------------------------------------------------- AUPRO
def test_aupro_of_a_perfect_map_is_one_and_of_a_constant_map_half_the_limit():
    masks, _ = _blobs(seed=6)
    assert aupro(masks, masks.astype(float)) == pytest.approx(1.0)
    # A constant map: the curve is the straight line from (0, 0) to (1, 1).
    assert aupro(masks, np.zeros(masks.shape)) == pytest.approx(0.15)
    assert aupro(masks, np.zeros(masks.shape), max_fpr=1.0) == pytest.approx(0.5)


def test_aupro_two_regions_by_hand():
    mask = np.zeros((4, 4), bool)
    mask[0, 0:2] = True  # region A: 2 pixels
    mask[2:4, 2:4] = True  # region B: 4 pixels
    amap = np.zeros((4, 4))
    amap[0, 0:2] = 3  # A fully found at threshold 3
    amap[2, 2], amap[2, 3], amap[3, 2], amap[3, 3] = 3, 1, 1, 1  # B: 1/4 at 3, all at 1
    amap[1, 0] = 2  # one of 10 normal pixels
    # Curve (FPR, PRO): (0, 0) -> t=3 (0, 0.625) -> t=2 (0.1, 0.625) -> t=1 (0.1, 1) -> t=0 (1, 1).
    # Area up to 0.3: 0.1 * 0.625 + 0.2 * 1 = 0.2625, normalised: 0.875.
    assert aupro(mask[None], amap[None]) == pytest.approx(0.875)
    assert aupro(mask[None], amap[None], max_fpr=0.05) == pytest.approx(0.625)


def test_aupro_regions_are_8_connected_as_in_mvtec_ad():
    mask = np.zeros((5, 5), bool)
    mask[0, 0] = mask[1, 1] = mask[1, 2] = True  # one region of 3 through a diagonal step
    amap = np.zeros((5, 5))
    amap[0, 0] = 1.0  # one third of the region found without any false positive
    # Curve: (0, 0) -> (0, 1/3) -> (1, 1); PRO at FPR 0.3 is 1/3 + 0.3 * 2/3 = 8/15.
    # Two 4-connected regions would instead give PRO 0.5 at FPR 0.
    expected = (1 / 3 + 8 / 15) / 2
    assert aupro(mask[None], amap[None]) == pytest.approx(expected)


def test_aupro_matches_the_exact_curve_on_random_maps():
    masks, maps = _blobs(n_images=4, size=32, seed=7)
    for max_fpr in (0.05, 0.3):
        assert aupro(masks, maps, max_fpr=max_fpr) == pytest.approx(
            _exact_aupro(masks, maps, max_fpr), abs=1e-3
        )


def test_aupro_grows_with_the_integration_limit_and_falls_with_noise():
    masks, _ = _blobs(seed=8)
    noise = np.random.default_rng(8).normal(size=masks.shape)
    values = [aupro(masks, masks + sigma * noise) for sigma in (0.1, 0.5, 2.0, 10.0)]
    assert values[0] > 0.99 and values == sorted(values, reverse=True)
    limits = [aupro(masks, masks + noise, max_fpr=m) for m in (0.01, 0.1, 0.3, 1.0)]
    assert limits == sorted(limits)


def test_pro_curve_two_regions_by_hand():
    mask = np.zeros((4, 4), bool)
    mask[0, 0:2] = True
    mask[2:4, 2:4] = True
    amap = np.zeros((4, 4))
    amap[0, 0:2] = 3
    amap[2, 2], amap[2, 3], amap[3, 2], amap[3, 3] = 3, 1, 1, 1
    amap[1, 0] = 2
    # 4 bins of width 0.75 over [0, 3] separate the scores 0, 1, 2 and 3; the points are
    # those of test_aupro_two_regions_by_hand.
    fpr, pro, thresholds = pro_curve(mask[None], amap[None], n_thresholds=4)
    np.testing.assert_allclose(thresholds, [np.inf, 2.25, 1.5, 0.75, 0.0])
    np.testing.assert_allclose(fpr, [0, 0, 0.1, 0.1, 1])
    np.testing.assert_allclose(pro, [0, 0.625, 0.625, 1, 1])


def test_aupro_is_the_area_under_pro_curve():
    masks, maps = _blobs(n_images=4, size=32, seed=10)
    fpr, pro, thresholds = pro_curve(masks, maps, n_thresholds=256)
    assert fpr.shape == pro.shape == thresholds.shape == (257,)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(thresholds) < 0)
    assert (fpr[0], pro[0]) == (0, 0) and (fpr[-1], pro[-1]) == pytest.approx((1, 1))
    area = float(np.sum(np.diff(fpr) * (pro[1:] + pro[:-1]) / 2))
    assert aupro(masks, maps, max_fpr=1.0, n_thresholds=256) == pytest.approx(area)


# ----------------------------------------------------------------------------- at a threshold
# Four normal images (one above the threshold 0.5, one exactly at it) and five defective
# ones of two types (scratch: two of three above; dent: none of two).
THRESHOLD = 0.5
LABELS = np.array([1, 1, 1, 1, -1, -1, -1, -1, -1])
SCORES = np.array([0.1, 0.2, 0.5, 0.7, 0.9, 0.6, 0.15, 0.3, 0.4])
TYPES = ["good"] * 4 + ["scratch"] * 3 + ["dent"] * 2
PATHS = [f"{kind}/{i}.png" for i, kind in enumerate(TYPES)]


def test_threshold_metrics_count_score_above_threshold_as_anomalous():
    metrics = threshold_metrics(LABELS, SCORES, THRESHOLD)
    # Normal: 0.1, 0.2, 0.5 (at the threshold: normal, as detector.predict) kept, 0.7 flagged.
    # Defective: 0.9, 0.6 caught; 0.15, 0.3, 0.4 missed.
    assert {key: metrics[key] for key in ("tn", "fp", "fn", "tp")} == {"tn": 3, "fp": 1, "fn": 3, "tp": 2}
    assert metrics["false_positive_rate"] == pytest.approx(1 / 4)
    assert metrics["recall"] == pytest.approx(2 / 5)
    assert metrics["precision"] == pytest.approx(2 / 3)
    assert metrics["f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 3))
    assert metrics["accuracy"] == pytest.approx(5 / 9)
    assert metrics["threshold"] == THRESHOLD
    assert all(type(metrics[key]) is int for key in ("tn", "fp", "fn", "tp"))
    # Boolean labels (True anomalous) give the same numbers.
    assert threshold_metrics(LABELS == -1, SCORES, THRESHOLD) == metrics


def test_threshold_metrics_when_nothing_is_flagged_and_bad_input():
    metrics = threshold_metrics([1, -1], [0.2, 0.3], threshold=1.0)
    assert (metrics["tp"], metrics["fp"], metrics["precision"], metrics["f1"], metrics["recall"]) == (
        0,
        0,
        0,
        0,
        0,
    )
    with pytest.raises(ValueError, match="single class"):
        threshold_metrics([1, 1], [0.2, 0.3], threshold=0.5)
    with pytest.raises(ValueError, match="threshold must be a finite number"):
        threshold_metrics([1, -1], [0.2, 0.3], threshold=float("nan"))


def test_per_type_metrics_by_hand():
    result = per_type_metrics(LABELS, SCORES, TYPES, THRESHOLD)
    assert list(result) == ["good", "scratch", "dent"]
    assert result["good"] == {
        "label": 1,
        "n_images": 4,
        "n_flagged": 1,
        "recall": None,
        "false_positive_rate": 0.25,
        "image_auroc": None,
    }
    # scratch (0.9, 0.6, 0.15) against the normal 0.1, 0.2, 0.5, 0.7: 4 + 3 + 1 of 12 pairs.
    assert result["scratch"] == {
        "label": -1,
        "n_images": 3,
        "n_flagged": 2,
        "recall": pytest.approx(2 / 3),
        "false_positive_rate": None,
        "image_auroc": pytest.approx(8 / 12),
    }
    # dent (0.3, 0.4): each above 0.1 and 0.2 only: 4 of 8 pairs.
    assert result["dent"]["recall"] == 0 and result["dent"]["n_flagged"] == 0
    assert result["dent"]["image_auroc"] == pytest.approx(0.5)
    assert result["dent"]["image_auroc"] == pytest.approx(
        roc_auc_score([0, 0, 0, 0, 1, 1], np.r_[SCORES[:4], SCORES[7:]])
    )


def test_per_type_metrics_without_normal_images_and_with_mixed_types():
    only_defects = per_type_metrics([-1, -1], [0.9, 0.1], ["scratch", "dent"], 0.5)
    assert only_defects["scratch"]["recall"] == 1 and only_defects["dent"]["recall"] == 0
    assert only_defects["scratch"]["image_auroc"] is None
    with pytest.raises(ValueError, match="defect type 'good' holds both normal and anomalous images"):
        per_type_metrics([1, -1], [0.1, 0.9], ["good", "good"], 0.5)
    with pytest.raises(ValueError, match="2 labels but 1 defect types"):
        per_type_metrics([1, -1], [0.1, 0.9], ["good"], 0.5)


def test_per_image_table_and_csv_hold_one_correct_row_per_image(tmp_path):
    rows = per_image_table(PATHS, LABELS, SCORES, THRESHOLD, TYPES)
    assert [row["predicted"] for row in rows] == [1, 1, 1, -1, -1, -1, 1, 1, 1]
    assert [row["correct"] for row in rows] == [True, True, True, False, True, True, False, False, False]
    assert rows[3] == {
        "path": "good/3.png",
        "defect_type": "good",
        "label": 1,
        "score": 0.7,
        "predicted": -1,
        "correct": False,
    }
    write_per_image_csv(tmp_path / "per_image.csv", PATHS, LABELS, SCORES, THRESHOLD, TYPES)
    with open(tmp_path / "per_image.csv", newline="") as handle:
        read = list(csv.DictReader(handle))
    assert tuple(read[0]) == PER_IMAGE_COLUMNS
    assert len(read) == len(PATHS)
    assert [row["path"] for row in read] == PATHS
    assert [row["defect_type"] for row in read] == TYPES
    assert [int(row["label"]) for row in read] == LABELS.tolist()
    assert [float(row["score"]) for row in read] == SCORES.tolist()  # exact round trip
    assert [int(row["predicted"]) for row in read] == [row["predicted"] for row in rows]
    assert [row["correct"] for row in read] == [str(row["correct"]) for row in rows]
    # A text stream works as well, and without types the labels name the rows.
    buffer = io.StringIO()
    write_per_image_csv(buffer, PATHS[:2], [1, -1], [0.1, 0.9], 0.5)
    assert buffer.getvalue().splitlines()[1:] == [
        "good/0.png,normal,1,0.1,1,True",
        "good/1.png,anomalous,-1,0.9,-1,True",
    ]


# ----------------------------------------------------------------------------- evaluate
def test_evaluate_reports_image_metrics_and_pixel_metrics_with_masks():
    masks, maps = _blobs(seed=9)
    labels = np.where(masks.any(axis=(1, 2)), -1, 1)
    scores = maps.max(axis=(1, 2))
    image_only = evaluate(labels, scores)
    assert image_only == {
        "image_auroc": image_auroc(labels, scores),
        "image_f1_max": image_f1_max(labels, scores),
    }
    everything = evaluate(labels, scores, masks, maps)
    assert set(everything) == {"image_auroc", "image_f1_max", "pixel_auroc", "aupro", "pixel_f1_max"}
    assert everything["pixel_auroc"] == pytest.approx(pixel_auroc(masks, maps))
    assert everything["aupro"] == pytest.approx(aupro(masks, maps))
    assert everything["pixel_f1_max"] == pytest.approx(pixel_f1_max(masks, maps))
    assert all(type(v) is float for v in everything.values())


def test_evaluate_needs_masks_and_maps_together():
    with pytest.raises(ValueError, match="masks were given without maps"):
        evaluate([1, -1], [0.0, 1.0], masks=np.zeros((2, 3, 3)))
    with pytest.raises(ValueError, match="2 labels but 1 masks"):
        evaluate([1, -1], [0.0, 1.0], masks=np.ones((1, 3, 3)), maps=np.ones((1, 3, 3)))
