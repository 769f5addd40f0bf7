"""scikit-learn compatibility: estimator checks, clone, Pipeline, cross-validation, grid search."""

import numpy as np
import pytest
from PIL import Image
from sklearn.base import clone
from sklearn.exceptions import NotFittedError, SkipTestWarning
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils import get_tags
from sklearn.utils.estimator_checks import estimator_checks_generator, parametrize_with_checks

from sksimplenet import SimpleNetDetector
from sksimplenet.datasets import make_synthetic

from .conftest import TINY as SMALL


class _TabularTagged(SimpleNetDetector):
    """The detector with sklearn's default input tag (2-D arrays), only for the generic checks.

    SimpleNetDetector declares ``input_tags.two_d_array = False`` (its X is images), and
    scikit-learn then generates no checks beyond cloning. This subclass changes nothing
    but that tag, so that every generic check runs; those that need tabular data are
    listed in NOT_APPLICABLE and must fail (``xfail_strict``).
    """

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = True
        return tags


_TABULAR = (
    "fits on a 2-D tabular array (n_samples, n_features); X is images (a 4-D batch or a "
    "sequence of images or files) and a 2-D array is refused"
)
NOT_APPLICABLE = {
    "check_fit_score_takes_y": _TABULAR,
    "check_estimators_overwrite_params": _TABULAR,
    "check_dont_overwrite_parameters": _TABULAR,
    "check_estimators_fit_returns_self": _TABULAR,
    "check_readonly_memmap_input": _TABULAR + " (a read-only memmap batch of images is accepted)",
    "check_n_features_in_after_fitting": _TABULAR + "; an image has no n_features_in_",
    "check_n_features_in": _TABULAR + "; an image has no n_features_in_",
    "check_positive_only_tag_during_fit": _TABULAR + "; pixels are bounded, [0, 1] or integers",
    "check_estimators_dtypes": _TABULAR + "; image dtypes are uint8, uint16 and float",
    "check_complex_data": _TABULAR + " before any dtype check, so not with the expected message",
    "check_dtype_object": _TABULAR,
    "check_estimators_empty_data_messages": "expects the tabular message '0 feature(s)'; "
    "empty image input is refused with 'X is empty'",
    "check_pipeline_consistency": _TABULAR + " (Pipeline use is tested on images below)",
    "check_estimators_nan_inf": _TABULAR + "; NaN and inf pixels are refused with their own message",
    "check_estimator_sparse_tag": "sparse matrices are tabular; there are no sparse images",
    "check_estimator_sparse_array": "sparse arrays are tabular; there are no sparse images",
    "check_estimator_sparse_matrix": "sparse matrices are tabular; there are no sparse images",
    "check_estimators_pickle": _TABULAR + " (pickling a fitted detector is tested elsewhere)",
    "check_f_contiguous_array_estimator": _TABULAR,
    "check_outliers_fit_predict": _TABULAR,
    "check_outliers_train": _TABULAR,
    "check_classifier_data_not_an_array": _TABULAR,
    "check_methods_sample_order_invariance": _TABULAR,
    "check_methods_subset_invariance": _TABULAR,
    "check_fit2d_1sample": "expects tabular messages about one sample; a single image trains",
    "check_fit2d_1feature": "expects tabular messages about one feature; images have no features axis",
    "check_dict_unchanged": _TABULAR,
    "check_fit_idempotent": _TABULAR + " (refitting with a fixed random_state is tested below)",
    "check_fit_check_is_fitted": _TABULAR,
    "check_fit2d_predict1d": _TABULAR,
}


def _expected_failed_checks(estimator):
    return NOT_APPLICABLE if isinstance(estimator, _TabularTagged) else {}


@parametrize_with_checks(
    [SimpleNetDetector(**SMALL), _TabularTagged(**SMALL)],
    expected_failed_checks=_expected_failed_checks,
    xfail_strict=True,
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_images_tag_leaves_only_the_cloning_check():
    """scikit-learn generates no tabular checks for an estimator whose X is not 2-D."""
    with pytest.warns(SkipTestWarning, match="two_d_array=False"):
        checks = list(estimator_checks_generator(SimpleNetDetector(**SMALL), mark=None))
    assert [getattr(check, "func", check).__name__ for _, check in checks] == ["check_estimator_cloneable"]


def test_tags():
    tags = get_tags(SimpleNetDetector())
    assert tags.estimator_type == "outlier_detector"
    assert tags.input_tags.two_d_array is False
    assert tags.input_tags.allow_nan is False
    assert tags.requires_fit is True
    assert tags.target_tags.required is False


# ---------------------------------------------------------------------- on images
@pytest.fixture(scope="module")
def labelled():
    """8 normal and 4 defective 64-pixel stripe images, mixed, with +1/-1 labels."""
    images, labels, _ = make_synthetic(8, 4, texture="stripes", size=64, random_state=3)
    order = np.random.default_rng(0).permutation(len(images))
    return images[order], labels[order]


def test_clone(labelled):
    images, labels = labelled
    detector = SimpleNetDetector(**SMALL).fit(images[labels == 1])
    copy = clone(detector)
    assert copy is not detector
    assert copy.get_params() == detector.get_params()
    assert not hasattr(copy, "model_")
    with pytest.raises(NotFittedError):
        copy.score_samples(images)
    # Same parameters and seed: refitting the clone reproduces the detector.
    copy.fit(images[labels == 1])
    np.testing.assert_array_equal(copy.score_samples(images), detector.score_samples(images))
    assert copy.model_ is not detector.model_


def _load_and_crop(paths):
    """Read image files and cut off an 8-pixel border."""
    return [np.asarray(Image.open(path).convert("RGB"))[8:-8, 8:-8] for path in paths]


def test_pipeline_with_a_loading_transformer(labelled, tmp_path):
    images, labels = labelled
    paths = []
    for i, image in enumerate(images):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(image).save(paths[-1])
    pipeline = Pipeline(
        [
            ("load", FunctionTransformer(_load_and_crop)),
            ("detector", SimpleNetDetector(**{**SMALL, "resize": 48, "labelled_anomalies": "ignore"})),
        ]
    )
    pipeline.set_params(detector__contamination=0.2)
    pipeline.fit(paths, labels)  # y reaches the detector, which (ignoring -1) trains on +1 images only

    direct = SimpleNetDetector(**{**SMALL, "resize": 48, "contamination": 0.2})
    cropped = images[:, 8:-8, 8:-8]
    direct.fit(cropped[labels == 1])
    detector = pipeline.named_steps["detector"]
    assert detector.n_train_images_ + detector.n_held_out_images_ == 8 and detector.input_size_ == (48, 48)
    np.testing.assert_array_equal(pipeline.score_samples(paths), direct.score_samples(cropped))
    np.testing.assert_array_equal(pipeline.decision_function(paths), direct.decision_function(cropped))
    np.testing.assert_array_equal(pipeline.predict(paths), direct.predict(cropped))
    assert detector.offset_ == direct.offset_ != 0.0
    assert not hasattr(clone(pipeline).named_steps["detector"], "model_")


def test_cross_val_score_roc_auc(labelled):
    images, labels = labelled
    cv = StratifiedKFold(2, shuffle=True, random_state=0)
    params = {**SMALL, "epochs": 4, "hidden_dim": 1024}  # enough to rank better than chance
    scores = cross_val_score(SimpleNetDetector(**params), images, labels, cv=cv, scoring="roc_auc")
    assert scores.shape == (2,)

    expected = []
    for train, test in cv.split(images, labels):
        fitted = SimpleNetDetector(**params).fit(images[train], labels[train])
        assert fitted.n_train_images_ + fitted.n_held_out_images_ == int((labels[train] == 1).sum())
        # +1 (normal) is the positive class; decision_function is higher for normal images.
        expected.append(roc_auc_score(labels[test], fitted.decision_function(images[test])))
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-12)
    assert scores.mean() > 0.5


def test_grid_search_in_two_processes(labelled):
    images, labels = labelled
    cv = StratifiedKFold(2, shuffle=True, random_state=0)
    grid = {"sigma": [0.015, 0.2]}
    search = GridSearchCV(SimpleNetDetector(**SMALL), grid, cv=cv, scoring="roc_auc", n_jobs=2)
    search.fit(images, labels)
    sequential = GridSearchCV(
        SimpleNetDetector(**SMALL), grid, cv=cv, scoring="roc_auc", n_jobs=1, refit=False
    )
    sequential.fit(images, labels)

    np.testing.assert_allclose(
        search.cv_results_["mean_test_score"], sequential.cv_results_["mean_test_score"], rtol=0, atol=1e-12
    )
    assert search.best_params_ == sequential.best_params_
    assert search.best_params_["sigma"] in grid["sigma"]
    best = search.best_estimator_
    assert best.sigma == search.best_params_["sigma"] and best.n_train_images_ + best.n_held_out_images_ == 8
    # The refit model is the one a direct fit with the best parameters gives.
    direct = SimpleNetDetector(**{**SMALL, **search.best_params_}).fit(images, labels)
    np.testing.assert_allclose(best.score_samples(images), direct.score_samples(images), rtol=0, atol=1e-6)
