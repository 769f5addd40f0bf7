"""Thresholds from scores already computed, each with the record calibration_ stores."""

import warnings

import numpy as np
import pytest
import torch

import sksimplenet.thresholds
from sksimplenet.thresholds import (
    labelled_pixel_threshold,
    labelled_threshold,
    normal_pixel_threshold,
    quantile_threshold,
    warn_if_few_images,
)


def test_a_quantile_threshold_flags_the_share_of_normal_scores_asked_for():
    scores = np.arange(100.0)
    threshold, record = quantile_threshold(scores, 0.05, "normal calibration images")
    assert (scores > threshold).sum() == 5
    assert record == {
        "method": "quantile",
        "contamination": 0.05,
        "n_images": 100,
        "images": "normal calibration images",
    }


def test_a_labelled_threshold_records_its_criterion():
    labels = np.array([1, 1, 1, 1, -1, -1, -1])
    scores = np.array([0.1, 0.2, 0.3, 0.6, 0.5, 0.7, 0.9])
    threshold, record = labelled_threshold(labels, scores)
    assert threshold == pytest.approx(0.4) and record["method"] == "f1" and record["value"] is None
    threshold, record = labelled_threshold(labels, scores, max_fpr=0.0)
    assert threshold == pytest.approx(0.65)  # above the normal 0.6: no false alarm
    assert record == {
        "method": "max_fpr",
        "value": 0.0,
        "n_images": 7,
        "n_anomalous": 3,
        "images": "labelled validation images",
    }
    # 0/1 labels (1 anomalous), which operating_threshold also reads, give the same threshold and record.
    assert labelled_threshold((labels == -1).astype(int), scores, max_fpr=0.0) == (threshold, record)
    threshold, record = labelled_threshold(labels, scores, min_recall=0.6)
    assert threshold == pytest.approx(0.65) and record["method"] == "min_recall"
    with pytest.raises(ValueError, match="not both"):
        labelled_threshold(labels, scores, max_fpr=0.1, min_recall=0.9)


def test_a_pixel_threshold_from_normal_maps_is_a_quantile_of_their_maxima_ignoring_unseen_pixels():
    maps = [torch.full((4, 4), float(peak)) for peak in range(10)]
    maps[0][0, 0] = float("nan")  # a pixel the crop removed
    threshold, record = normal_pixel_threshold(maps, 0.1)
    assert threshold == pytest.approx(np.quantile(np.arange(10.0), 0.9))
    assert record == {"method": "quantile of the map maxima", "contamination": 0.1}


def test_a_pixel_threshold_from_masks_separates_defect_pixels():
    diagonal = np.eye(8, dtype=bool)
    maps = [torch.full((8, 8), 0.2), torch.from_numpy(np.where(diagonal, 0.9, 0.3))]
    masks = [None, diagonal]  # on the maps' grid: resize = the maps' size, no crop
    threshold, record = labelled_pixel_threshold(maps, masks, np.array([1, -1]), 8, None)
    assert 0.3 < threshold <= 0.9
    assert record == {"method": "pixel f1", "n_images": 2}


def test_too_few_normal_images_warn_once_per_process_at_the_callers_caller(monkeypatch):
    monkeypatch.setattr(sksimplenet.thresholds, "_WARNED_FEW_IMAGES", set())

    def calibrate():  # a caller such as SimpleNetDetector.calibrate
        warn_if_few_images(9, 0.01, "calibration")

    message = r"^Only 9 calibration images set the threshold: about 10%"
    with pytest.warns(UserWarning, match=message) as caught:
        calibrate()
    assert caught[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        calibrate()  # given once
        warn_if_few_images(1000, 0.01, "calibration")  # enough images: nothing to say
