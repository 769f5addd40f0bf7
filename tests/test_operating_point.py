"""Model selection on the anomalous class, and an operating point set after fit."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score, get_scorer
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score

from sksimplenet import SimpleNetDetector, load, save
from sksimplenet.metrics import anomaly_scorer, best_pixel_threshold, operating_threshold, pixel_f1_max

from .conftest import FAST, TINY


@pytest.fixture(scope="module")
def labelled(stripes):
    images, labels, masks = stripes
    return images[20:], labels[20:], masks[20:]


def test_scorers_measure_the_anomalous_class_with_the_right_sign(fitted, labelled):
    images, labels, _ = labelled
    labels = labels.copy()
    labels[[0, 1, -1, -2]] *= -1  # two labels wrong each way: the classes are no longer separable
    decision = fitted.decision_function(images)
    assert anomaly_scorer("average_precision")(fitted, images, labels) == pytest.approx(
        average_precision_score(labels == -1, -decision)
    )
    assert anomaly_scorer("f1")(fitted, images, labels) == pytest.approx(
        f1_score(labels, fitted.predict(images), pos_label=-1)
    )
    # scikit-learn's own "average_precision" measures the normal class: another number.
    assert get_scorer("average_precision")(fitted, images, labels) != pytest.approx(
        anomaly_scorer("average_precision")(fitted, images, labels)
    )
    assert anomaly_scorer("roc_auc")(fitted, images, labels) == pytest.approx(
        get_scorer("roc_auc")(fitted, images, labels)
    )
    with pytest.raises(ValueError, match="metric must be one of"):
        anomaly_scorer("accuracy")


def test_a_fold_without_both_classes_says_to_use_a_stratified_splitter(fitted, labelled):
    images, labels, _ = labelled
    normal = labels == 1
    with pytest.raises(ValueError, match="single class.*StratifiedKFold"):
        anomaly_scorer("average_precision")(fitted, images[normal], labels[normal])


def test_a_labelled_search_with_a_stratified_splitter_scores_every_fold(stripes):
    images, labels, _ = stripes
    cv = StratifiedKFold(n_splits=2, shuffle=True, random_state=0)
    search = GridSearchCV(
        SimpleNetDetector(**{**FAST, "epochs": 2}),
        {"sigma": [0.1, 0.3]},
        scoring=anomaly_scorer("average_precision"),
        cv=cv,
    ).fit(images, labels)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    scores = cross_val_score(SimpleNetDetector(**TINY), images, labels, cv=cv, scoring=anomaly_scorer("f1"))
    assert np.isfinite(scores).all() and ((0 <= scores) & (scores <= 1)).all()


def test_operating_thresholds_on_labelled_scores():
    labels = np.array([1, 1, 1, 1, -1, -1, -1])
    scores = np.array([0.1, 0.2, 0.3, 0.6, 0.5, 0.7, 0.9])
    # F1 is best flagging the three defects and the normal 0.6 (threshold between 0.3 and 0.5).
    assert operating_threshold(labels, scores) == pytest.approx(0.4)
    # No false alarm: above 0.6; at most one in four: above 0.3.
    assert operating_threshold(labels, scores, "max_fpr", 0.0) == pytest.approx(0.65)
    assert operating_threshold(labels, scores, "max_fpr", 0.25) == pytest.approx(0.4)
    # Catch two of three defects with the fewest alarms: between 0.6 and 0.7.
    assert operating_threshold(labels, scores, "min_recall", 0.6) == pytest.approx(0.65)
    with pytest.raises(ValueError, match="needs a value"):
        operating_threshold(labels, scores, "max_fpr")


def test_the_best_pixel_threshold_separates_defect_pixels():
    masks = [np.zeros((4, 4), bool), np.eye(4, dtype=bool)]
    maps = [np.full((4, 4), 0.2), np.where(np.eye(4, dtype=bool), 0.9, 0.3)]
    threshold = best_pixel_threshold(masks, maps)
    assert 0.3 < threshold <= 0.9


def test_calibrate_from_new_normal_images_sets_the_quantile(fitted, stripes):
    images = stripes[0]
    detector = load_copy(fitted)
    detector.set_params(contamination=0.2).calibrate(images[20:30])
    scores = -detector.score_samples(images[20:30])
    assert detector.threshold_ == pytest.approx(np.quantile(scores, 0.8))
    assert detector.offset_ == -detector.threshold_
    assert (detector.predict(images[20:30]) == -1).sum() == 2
    assert detector.calibration_["method"] == "quantile" and detector.calibration_["n_images"] == 10
    np.testing.assert_array_equal(detector.labels_, detector.decision_scores_ > detector.threshold_)


def test_calibrate_without_images_uses_the_held_out_scores_with_the_current_contamination(fitted):
    detector = load_copy(fitted)
    held_out = fitted.decision_scores_[fitted.held_out_indices_]
    detector.set_params(contamination=0.5).calibrate()
    assert detector.threshold_ == pytest.approx(np.quantile(held_out, 0.5))
    detector.set_params(contamination="auto").calibrate()
    assert detector.threshold_ == pytest.approx(fitted.threshold_)


def test_calibrate_on_a_labelled_set_and_assigning_the_threshold(fitted, labelled):
    images, labels, _ = labelled
    detector = load_copy(fitted)
    scores = -fitted.score_samples(images)
    detector.calibrate(images, labels, max_fpr=0.0)
    assert detector.threshold_ == pytest.approx(operating_threshold(labels, scores, "max_fpr", 0.0), rel=1e-5)
    assert (detector.predict(images)[labels == 1] == 1).all()  # no normal image flagged
    assert detector.calibration_ | {"pixel": None} == {
        "method": "max_fpr", "value": 0.0, "n_images": 25, "n_anomalous": 15,
        "images": "labelled validation images", "pixel": None,
    }  # fmt: skip
    detector.threshold_ = 1e9  # assigning the threshold moves predict with it
    assert (detector.predict(images) == 1).all() and detector.offset_ == -1e9
    with pytest.raises(ValueError, match="not both"):
        detector.calibrate(images, labels, max_fpr=0.1, min_recall=0.9)


def test_a_pixel_threshold_from_masks_or_normal_images_is_kept_and_saved(fitted, labelled, stripes, tmp_path):
    images, labels, masks = labelled
    detector = load_copy(fitted)
    assert detector.pixel_threshold_ is None and detector.mask_threshold == detector.threshold_
    detector.calibrate(images, labels, masks=list(masks), pixel=True)
    assert detector.pixel_threshold_ is not None and detector.calibration_["pixel"]["method"] == "pixel f1"
    maps = detector.anomaly_map(images)  # 96 x 96, as the masks

    def pixel_f1(threshold):
        return f1_score(masks.ravel(), (maps >= threshold).ravel())

    # The masks' F1 is the best the maps allow, and better than at the image threshold.
    assert pixel_f1(detector.mask_threshold) == pytest.approx(pixel_f1_max(list(masks), list(maps)), abs=0.01)
    assert pixel_f1(detector.mask_threshold) > pixel_f1(detector.threshold_)
    save(detector, tmp_path / "m.safetensors")
    restored = load(tmp_path / "m.safetensors")
    assert (
        restored.pixel_threshold_ == detector.pixel_threshold_
        and restored.calibration_ == detector.calibration_
    )
    detector.set_params(contamination=0.1).calibrate(stripes[0][20:30], pixel=True)
    peaks = detector.anomaly_map(stripes[0][20:30]).max(axis=(1, 2))
    assert detector.pixel_threshold_ == pytest.approx(np.quantile(peaks, 0.9), rel=1e-5)


def test_calibrate_refuses_a_pixel_threshold_it_cannot_set_before_scoring_any_image(fitted, labelled):
    images, labels, _ = labelled
    detector = load_copy(fitted)
    detector._infer = None  # scoring would fail with a TypeError: the check comes first
    with pytest.raises(ValueError, match="needs their masks"):
        detector.calibrate(images, labels, pixel=True)
    with pytest.raises(ValueError, match="needs images"):
        detector.calibrate(pixel=True)
    assert detector.threshold_ == fitted.threshold_ and detector.calibration_ == fitted.calibration_


def load_copy(detector):
    import copy

    return copy.deepcopy(detector)
