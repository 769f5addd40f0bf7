"""Learning from labelled defects: fit(X, y, masks=...), and the bad inputs it refuses."""

import numpy as np
import pytest
import sklearn
from PIL import Image
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline

from sksimplenet import SimpleNetDetector, load, save, training_set
from sksimplenet.datasets import make_synthetic
from sksimplenet.detector import complete_fitted_attributes
from sksimplenet.metrics import image_auroc, pixel_auroc
from sksimplenet.provenance import files_seen_in_training
from sksimplenet.training_set import positions_far_from, positions_inside, read_masks

from .conftest import FAST, TINY

# "noise" texture: defects that the unsupervised fit finds only in part.
# A short run (10 epochs of 8 images, 1/8 of the patches) at FAST's hidden width 1024: with the
# default 512 the masked defects gained +0.033 of pixel AUROC here instead of more than 0.04.
FIT = {**FAST, "epochs": 10, "batch_size": 8, "patch_fraction": 0.125}


@pytest.fixture(scope="module")
def noise():
    """30 normal + 12 labelled defective training images; 10 normal + 28 defective test images."""
    images, labels, masks = make_synthetic(40, 40, texture="noise", size=96, random_state=0)
    train = list(range(30)) + list(range(40, 52))
    test = list(range(30, 40)) + list(range(52, 80))
    return images[train], labels[train], masks[train], images[test], labels[test], masks[test]


def _quality(detector, images, labels, masks):
    maps, scores = detector.anomaly_map(images, return_scores=True)
    return image_auroc(labels, scores), pixel_auroc(masks, maps)


def test_masked_defects_raise_pixel_auroc_on_new_defects(noise):
    X, y, masks, X_test, y_test, masks_test = noise
    unsupervised = SimpleNetDetector(**FIT).fit(X[y == 1])
    supervised = SimpleNetDetector(**FIT).fit(X, y, masks=list(masks))
    image_before, pixel_before = _quality(unsupervised, X_test, y_test, masks_test)
    image_after, pixel_after = _quality(supervised, X_test, y_test, masks_test)
    assert pixel_after > pixel_before + 0.04
    assert image_after > image_before + 0.05
    assert supervised.n_labelled_anomalies_ == 12 and supervised.n_labelled_masks_ == 12
    # The threshold still comes from held-out normal images only.
    assert (y[supervised.held_out_indices_] == 1).all()


def test_image_labels_alone_raise_image_auroc(noise):
    X, y, _, X_test, y_test, masks_test = noise
    unsupervised = SimpleNetDetector(**FIT).fit(X[y == 1])
    weak = SimpleNetDetector(**FIT).fit(X, y)
    assert weak.n_labelled_anomalies_ == 12 and weak.n_labelled_masks_ == 0
    assert (
        _quality(weak, X_test, y_test, masks_test)[0]
        > _quality(unsupervised, X_test, y_test, masks_test)[0] + 0.02
    )


def test_learn_both_also_trains_the_masked_images_by_image(noise, monkeypatch, tmp_path):
    X, y, masks, X_test, y_test, masks_test = noise
    trained_by_image = {}
    train = SimpleNetDetector._train

    def spy(self, extractor, data, seed, device):
        trained_by_image[self.labelled_anomalies] = None if data.weak is None else len(data.weak)
        return train(self, extractor, data, seed, device)

    monkeypatch.setattr(SimpleNetDetector, "_train", spy)
    masks_only = SimpleNetDetector(**FIT).fit(X, y, masks=list(masks))
    both = SimpleNetDetector(**FIT, labelled_anomalies="learn_both").fit(X, y, masks=list(masks))
    # Every labelled image has a mask: "learn" trains none of them by image, "learn_both" all 12.
    assert trained_by_image == {"learn": None, "learn_both": 12}
    assert both.n_labelled_anomalies_ == 12 and both.n_labelled_masks_ == 12
    assert both.n_labelled_by_image_ == 12 and masks_only.n_labelled_by_image_ == 0
    assert "12 images (12 with masks, 12 of them also by image, 0 by label only)" in both.summary()
    save(both, tmp_path / "both.safetensors")
    assert load(tmp_path / "both.safetensors").n_labelled_by_image_ == 12
    # Models saved before the attribute existed trained by image exactly those without a mask.
    earlier = complete_fitted_attributes({"n_labelled_anomalies_": 5, "n_labelled_masks_": 2})
    assert earlier["n_labelled_by_image_"] == 3
    assert not np.array_equal(both.score_samples(X_test), masks_only.score_samples(X_test))
    image, pixel = _quality(both, X_test, y_test, masks_test)
    assert image > 0.9 and pixel > 0.9


def test_no_anomalies_or_ignore_scores_bit_identically(stripes):
    images, labels, masks = stripes
    normal = images[labels == 1]
    plain = SimpleNetDetector(**TINY).fit(normal)
    all_normal = SimpleNetDetector(**TINY).fit(normal, np.ones(len(normal), int), masks=[None] * len(normal))
    ignored = SimpleNetDetector(**TINY, labelled_anomalies="ignore").fit(images, labels, masks=list(masks))
    expected = plain.score_samples(images)
    np.testing.assert_array_equal(all_normal.score_samples(images), expected)
    np.testing.assert_array_equal(ignored.score_samples(images), expected)
    assert ignored.n_labelled_anomalies_ == 0 and ignored.provenance_["anomalous_files"] == []


def test_masks_sliced_by_grid_search_folds(stripes):
    images, labels, masks = stripes

    def auroc(estimator, X, y):
        return roc_auc_score(y == -1, -estimator.score_samples(X))

    search = GridSearchCV(
        SimpleNetDetector(**TINY),
        {"sigma": [0.3, 0.6]},
        cv=StratifiedKFold(2, shuffle=True, random_state=0),
        scoring=auroc,
    )
    # A fold given all 45 masks for its 22 or 23 images would raise: fit checks the lengths.
    search.fit(images, labels, masks=list(masks))
    assert len(search.cv_results_["mean_test_score"]) == 2
    assert search.best_estimator_.n_labelled_masks_ == 15


def test_metadata_routing_sends_masks_through_a_pipeline(stripes):
    images, labels, masks = stripes
    with sklearn.config_context(enable_metadata_routing=True):
        pipeline = Pipeline([("detector", SimpleNetDetector(**TINY).set_fit_request(masks=True))])
        pipeline.fit(images, labels, masks=list(masks))
    assert pipeline.named_steps["detector"].n_labelled_masks_ == 15


def test_labelled_anomaly_files_are_recorded_and_caught(tmp_path, stripes):
    images, labels, masks = stripes
    paths, mask_paths = [], []
    for i in [*range(8), 30, 31]:
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(images[i]).save(paths[-1])
        mask_paths.append(None)
        if labels[i] == -1:
            mask_paths[-1] = str(tmp_path / f"{i}_mask.png")
            Image.fromarray(masks[i].astype(np.uint8) * 255).save(mask_paths[-1])
    y = labels[[*range(8), 30, 31]]
    detector = SimpleNetDetector(**TINY).fit(paths, y, masks=mask_paths)
    assert [entry["path"] for entry in detector.provenance_["anomalous_files"]] == paths[-2:]
    assert files_seen_in_training(detector, paths[-2:]) == paths[-2:]
    assert "2 images (2 with masks, 0 by label only)" in detector.summary()
    save(detector, tmp_path / "model.safetensors")
    loaded = load(tmp_path / "model.safetensors")
    assert (loaded.n_labelled_anomalies_, loaded.n_labelled_masks_) == (2, 2)
    assert loaded.provenance_ == detector.provenance_ and loaded.labelled_anomalies == "learn"
    np.testing.assert_array_equal(loaded.score_samples(paths), detector.score_samples(paths))


# ----------------------------------------------------------------------------- bad inputs
def _small():
    images, labels, masks = make_synthetic(6, 2, texture="stripes", size=32, random_state=0)
    return images, labels, list(masks)


def test_masks_need_labels_and_one_per_image():
    images, labels, masks = _small()
    with pytest.raises(ValueError, match="masks were given without y"):
        SimpleNetDetector(**TINY).fit(images, masks=masks)
    with pytest.raises(ValueError, match="masks has 7 items but X has 8 images"):
        SimpleNetDetector(**TINY).fit(images, labels, masks=masks[:7])


def test_a_mask_of_another_aspect_ratio_names_both_sizes():
    images, labels, masks = _small()
    masks[7] = np.ones((32, 48), bool)
    with pytest.raises(ValueError, match=r"mask of image 7 is 32 x 48 .* its image is 32 x 32"):
        SimpleNetDetector(**TINY).fit(images, labels, masks=masks)


def test_a_mask_at_another_resolution_is_resized():
    images, labels, masks = _small()
    doubled = [None if m is None else np.kron(m, np.ones((2, 2), bool)) for m in masks]
    (same,) = [read_masks(masks, list(images), labels)[7]]
    (resized,) = [read_masks(doubled, list(images), labels)[7]]
    np.testing.assert_array_equal(resized, same)


def test_defect_pixels_on_a_normal_image_are_refused(tmp_path):
    images, labels, masks = _small()
    masks[2] = np.ones((32, 32), bool)
    with pytest.raises(
        ValueError, match=r"mask of image 2 marks 1024 defect pixels but the image is labelled \+1"
    ):
        SimpleNetDetector(**TINY).fit(images, labels, masks=masks)


def test_missing_unreadable_and_non_2d_masks_name_the_image(tmp_path):
    images, labels, masks = _small()
    paths = []
    for i, image in enumerate(images):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(image).save(paths[-1])
    masks[7] = str(tmp_path / "absent.png")
    with pytest.raises(FileNotFoundError, match=r"mask of image 7 .*absent.png'\) does not exist .*7.png"):
        SimpleNetDetector(**TINY).fit(paths, labels, masks=masks)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    masks[7] = str(tmp_path / "broken.png")
    with pytest.raises(ValueError, match="mask of image 7 .* is not a readable image file"):
        SimpleNetDetector(**TINY).fit(paths, labels, masks=masks)
    masks[7] = np.zeros((32, 32, 3))
    with pytest.raises(ValueError, match="mask of image 7 must be a 2-D"):
        SimpleNetDetector(**TINY).fit(paths, labels, masks=masks)


def test_an_empty_mask_trains_by_label_with_one_warning():
    images, labels, masks = _small()
    masks[6], masks[7] = np.zeros((32, 32), bool), np.zeros((32, 32), bool)
    with pytest.warns(UserWarning, match="2 images labelled -1 have an empty mask"):
        detector = SimpleNetDetector(**TINY).fit(images, labels, masks=masks)
    assert detector.n_labelled_anomalies_ == 2 and detector.n_labelled_masks_ == 0


def test_a_failed_fit_leaves_the_fitted_model_as_it_was():
    images, labels, masks = _small()
    detector = SimpleNetDetector(**TINY).fit(images, labels, masks=masks)
    before = detector.score_samples(images)
    state = dict(detector.__dict__)
    masks[1] = np.ones((32, 32), bool)
    with pytest.raises(ValueError, match="labelled"):
        detector.fit(images, labels, masks=masks)
    assert detector.__dict__.keys() == state.keys() and detector.model_ is state["model_"]
    np.testing.assert_array_equal(detector.score_samples(images), before)
    with pytest.raises(ValueError, match="Every image is labelled -1"):
        detector.fit(images[6:], labels[6:], masks=masks[6:])


def test_positions_inside_a_small_defect_are_not_lost():
    import torch

    coverage = torch.zeros(32, 32)
    coverage[3, 3] = 1.0  # 1/16 of one 4 x 4 cell
    inside = positions_inside(coverage, (8, 8))
    assert inside.sum() == 1 and inside[0, 0]
    coverage[8:16, 8:16] = 1.0
    assert positions_inside(coverage, (8, 8)).sum() == 4


def test_positions_far_from_a_defect_keep_a_margin_of_cells():
    import torch

    coverage = torch.zeros(32, 32)
    coverage[13, 13] = 0.5  # touches cell (3, 3) of an 8 x 8 grid
    assert (~positions_far_from(coverage, (8, 8), 1)).nonzero().tolist() == [[3, 3]]
    near = ~positions_far_from(coverage, (8, 8), 2)
    assert near.sum() == 9 and near[2:5, 2:5].all()


def test_positions_far_from_the_masks_can_train_as_normal(noise, monkeypatch):
    X, y, masks, X_test, y_test, masks_test = noise
    default = SimpleNetDetector(**FIT).fit(X, y, masks=list(masks))
    monkeypatch.setattr(training_set, "OUTSIDE_MASK_MARGIN", 2)
    with_outside = SimpleNetDetector(**FIT).fit(X, y, masks=list(masks))
    # A different training mix: the scores change, the model still finds the defects.
    assert not np.array_equal(default.score_samples(X_test), with_outside.score_samples(X_test))
    image, pixel = _quality(with_outside, X_test, y_test, masks_test)
    assert image > 0.9 and pixel > 0.9
