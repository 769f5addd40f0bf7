import copy
import pickle
import warnings

import joblib
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GridSearchCV, StratifiedKFold

from sksimplenet import SimpleNetDetector
from sksimplenet.datasets import make_synthetic

from .conftest import FAST, TINY


@pytest.mark.parametrize("texture", ["stripes", "object"])
def test_detects_and_localises_synthetic_defects(texture):
    images, labels, masks = make_synthetic(40, 24, texture=texture, size=128, random_state=1)
    train, test = slice(0, 24), slice(24, None)
    detector = SimpleNetDetector(**{**FAST, "resize": 128, "epochs": 8}).fit(images[train])

    scores = detector.score_samples(images[test])
    maps = detector.anomaly_map(images[test])
    assert maps.shape == (40, 128, 128) and maps.dtype == np.float32
    assert roc_auc_score(labels[test] == -1, -scores) >= 0.9
    assert roc_auc_score(masks[test].ravel(), maps.ravel()) >= 0.9


def test_outlier_protocol(fitted, stripes):
    images, labels, _ = stripes
    scores = fitted.score_samples(images[20:])
    assert scores.shape == (25,)
    np.testing.assert_allclose(fitted.decision_function(images[20:]), scores - fitted.offset_)
    predictions = fitted.predict(images[20:])
    assert set(np.unique(predictions)) <= {-1, 1}
    np.testing.assert_array_equal(predictions, np.where(scores - fitted.offset_ < 0, -1, 1))
    # contamination="auto": the threshold is the held-out normal images' 99th percentile score.
    held_out = images[fitted.held_out_indices_]
    assert fitted.threshold_ == -fitted.offset_
    # From the cached features, float16 by default (about three significant digits): equal to
    # the scores up to that rounding.
    assert fitted.threshold_ == pytest.approx(np.quantile(-fitted.score_samples(held_out), 0.99), rel=3e-3)


def test_fitted_attributes(fitted):
    assert len(fitted.loss_history_) == len(fitted.validation_history_) == FAST["epochs"]
    assert fitted.n_train_images_ == 18 and fitted.n_held_out_images_ == 2  # validation_fraction=0.1
    assert len(set(fitted.held_out_indices_)) == 2 and set(fitted.held_out_indices_) <= set(range(20))
    assert fitted.feature_shape_ == (12, 12, 152)  # 96 px / stride 8; 40 + 112 channels
    assert fitted.input_size_ == (96, 96)


def test_contamination_sets_that_share_of_held_out_images_as_outliers(stripes):
    images, _, _ = stripes
    detector = SimpleNetDetector(**FAST, contamination=0.5, validation_fraction=0.5).fit(images[:20])
    assert (detector.predict(images[detector.held_out_indices_]) == -1).sum() == 5


def test_without_held_out_images_the_training_images_set_the_threshold(stripes):
    images, _, _ = stripes
    # A float32 cache, so that the threshold is computed from exactly the scores predict gives.
    detector = SimpleNetDetector(**FAST, contamination=0.25, validation_fraction=0.0, cache_dtype="float32")
    detector.fit(images[:20])
    assert detector.n_held_out_images_ == 0 and detector.validation_history_ == []
    assert (detector.predict(images[:20]) == -1).sum() == 5


def test_default_threshold_flags_few_normal_images(stripes, fitted):
    images, labels, _ = stripes
    new_normals = images[20:30]
    assert (fitted.predict(new_normals) == -1).mean() <= 0.2
    assert (fitted.predict(images[30:]) == -1).mean() >= 0.8  # the defective ones


def test_labels_of_minus_one_are_left_out_of_training_when_ignored(stripes):
    images, labels, _ = stripes
    with_y = SimpleNetDetector(**FAST, labelled_anomalies="ignore").fit(images, labels)
    normal_only = SimpleNetDetector(**FAST).fit(images[labels == 1])
    assert with_y.n_train_images_ + with_y.n_held_out_images_ == (labels == 1).sum()
    assert (labels[with_y.held_out_indices_] == 1).all()  # positions in X
    # The -1 images are extracted too (for decision_scores_), in a pass of their own: the
    # training images' batches, and so the fitted model, are the same.
    np.testing.assert_array_equal(with_y.score_samples(images[:5]), normal_only.score_samples(images[:5]))


def test_same_random_state_gives_identical_scores(stripes, fitted):
    images, _, _ = stripes
    again = SimpleNetDetector(**FAST).fit(images[:20])
    np.testing.assert_array_equal(again.score_samples(images[20:]), fitted.score_samples(images[20:]))
    other = SimpleNetDetector(**{**FAST, "random_state": 1}).fit(images[:20])
    assert not np.array_equal(other.score_samples(images[20:]), fitted.score_samples(images[20:]))


def test_maps_at_original_size(fitted, stripes):
    rng = np.random.default_rng(0)
    images = [
        rng.integers(0, 255, (120, 200, 3), dtype=np.uint8),
        rng.integers(0, 255, (90, 90), dtype=np.uint8),
    ]
    maps = fitted.anomaly_map(images, original_size=True)
    assert [m.shape for m in maps] == [(120, 200), (90, 90)]
    cropped = fitted.anomaly_map(images[1:])
    assert cropped.shape == (1, 96, 96)
    # The image score is the mean of the top 1 % of the map at network resolution.
    top = np.sort(cropped.reshape(-1))[::-1][: round(0.01 * 96 * 96)]
    np.testing.assert_allclose(-fitted.score_samples(images[1:]), [top.mean()], rtol=1e-5)
    paper_style = SimpleNetDetector(**FAST, image_score="max").fit(stripes[0][:20])
    paper_maps = paper_style.anomaly_map(images[1:])
    np.testing.assert_allclose(-paper_style.score_samples(images[1:]), paper_maps.max(axis=(1, 2)), rtol=1e-6)


def test_not_fitted_error():
    with pytest.raises(NotFittedError):
        SimpleNetDetector().predict(np.zeros((1, 32, 32, 3), np.uint8))


def test_params_are_stored_verbatim_and_clone_works():
    detector = SimpleNetDetector("resnet18", layers=("layer1", "layer2"), sigma=0.1, epochs=3)
    params = detector.get_params()
    assert params["backbone"] == "resnet18" and params["layers"] == ("layer1", "layer2")
    assert params["sigma"] == 0.1 and params["epochs"] == 3
    copy = clone(detector).set_params(sigma=0.2)
    assert copy.sigma == 0.2 and detector.sigma == 0.1


@pytest.mark.parametrize("dump, load", [(pickle.dumps, pickle.loads), ("joblib", "joblib")])
def test_pickle_and_joblib_round_trip(fitted, stripes, tmp_path, dump, load):
    images, _, _ = stripes
    if dump == "joblib":
        joblib.dump(fitted, tmp_path / "model.joblib")
        restored = joblib.load(tmp_path / "model.joblib")
    else:
        restored = load(dump(fitted))
    np.testing.assert_array_equal(restored.score_samples(images[20:]), fitted.score_samples(images[20:]))
    unfitted = pickle.loads(pickle.dumps(SimpleNetDetector(sigma=0.3)))
    assert unfitted.get_params() == SimpleNetDetector(sigma=0.3).get_params()


def test_detectors_pickled_before_count_padding_unpickle_with_the_rule_they_were_fitted_with(stripes):
    images = stripes[0]
    inside_only = SimpleNetDetector(**TINY, count_padding=False).fit(images[:12])
    older = copy.deepcopy(inside_only)  # as an older version pickled it: no such attribute
    del older.count_padding, older.model_.count_padding
    restored = pickle.loads(pickle.dumps(older))
    assert restored.get_params()["count_padding"] is False and restored.model_.count_padding is False
    np.testing.assert_array_equal(
        restored.score_samples(images[30:36]), inside_only.score_samples(images[30:36])
    )


def test_grid_search_over_sigma(stripes):
    images, labels, _ = stripes
    search = GridSearchCV(
        SimpleNetDetector(**{**FAST, "epochs": 2}),
        {"sigma": [0.015, 0.1]},
        scoring="roc_auc",
        cv=StratifiedKFold(n_splits=2, shuffle=True, random_state=0),
    ).fit(images, labels)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    assert search.best_estimator_.sigma in (0.015, 0.1)
    best = search.best_estimator_
    assert best.n_train_images_ + best.n_held_out_images_ == (labels == 1).sum()


def test_paper_configuration_is_reachable():
    from sksimplenet import PAPER_PARAMS

    paper = SimpleNetDetector(**PAPER_PARAMS)
    assert paper.sigma == 0.015 and paper.feature_scaling is None and paper.image_score == "max"
    assert paper.backbone == "wide_resnet50_2" and paper.epochs == 160 and paper.batch_size == 4
    assert (paper.resize, paper.crop_size, paper.smoothing_sigma) == (256, 224, 4.0)


def test_too_few_held_out_images_for_the_threshold_warn_once_per_process(stripes, monkeypatch):
    import sksimplenet.thresholds

    monkeypatch.setattr(sksimplenet.thresholds, "_WARNED_FEW_IMAGES", set())  # as in a new process
    images, _, _ = stripes
    # 20 images, 10 % held out: 2 images cannot set a 99th percentile.
    with pytest.warns(
        UserWarning, match=r"^Only 2 held-out images set the threshold: about 33% .* not the 1%"
    ):
        SimpleNetDetector(**{**FAST, "epochs": 1}).fit(images[:20])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second fit, as in the next fold of a search: no warning
        SimpleNetDetector(**{**FAST, "epochs": 1}).fit(images[:20])


def test_numpy_scalars_as_parameters_fit_like_python_numbers(stripes):
    # ParameterGrid over a NumPy array hands the estimator NumPy scalars.
    images, _, _ = stripes
    params = {**FAST, "epochs": 1, "validation_fraction": 0.0}
    plain = SimpleNetDetector(**params, sigma=0.3).fit(images[:6])
    numpy = SimpleNetDetector(**params, sigma=np.float32(0.3)).fit(images[:6])
    np.testing.assert_allclose(
        numpy.score_samples(images[20:23]), plain.score_samples(images[20:23]), rtol=1e-5
    )


def test_pyod_attributes_score_every_training_image_in_order(stripes):
    images, labels, _ = stripes  # 30 normal, then 15 anomalous
    y = np.where(labels == -1, -1, 1)
    detector = SimpleNetDetector(**FAST).fit(images, y)  # the anomalous ones are left out of training
    assert detector.decision_scores_.shape == (45,)
    # Scored as score_samples scores them (up to the float16 feature cache).
    spread = np.ptp(detector.decision_scores_)
    np.testing.assert_allclose(detector.decision_scores_, -detector.score_samples(images), atol=0.02 * spread)
    assert roc_auc_score(labels == -1, detector.decision_scores_) >= 0.9
    np.testing.assert_array_equal(
        detector.labels_, (detector.decision_scores_ > detector.threshold_).astype(int)
    )
    assert detector.labels_.dtype.kind == "i" and set(np.unique(detector.labels_)) <= {0, 1}
    assert detector.labels_[labels == -1].mean() > detector.labels_[labels == 1].mean()


def test_f1_on_the_anomalous_class_with_pos_label_minus_one(fitted, stripes):
    from sklearn.metrics import f1_score

    images, labels, _ = stripes
    predictions = fitted.predict(images[20:])
    expected_tp = np.sum((predictions == -1) & (labels[20:] == -1))
    precision = expected_tp / max(np.sum(predictions == -1), 1)
    recall = expected_tp / np.sum(labels[20:] == -1)
    f1 = f1_score(labels[20:], predictions, pos_label=-1)
    assert f1 == pytest.approx(0 if expected_tp == 0 else 2 * precision * recall / (precision + recall))
