"""Which files a detector was fitted on: ``provenance_`` and ``files_seen_in_training``."""

import hashlib
import shutil

import numpy as np
from PIL import Image

from sksimplenet import SimpleNetDetector, load, save
from sksimplenet.provenance import file_sha256, files_seen_in_training

from .conftest import FAST


def write_images(folder, images):
    folder.mkdir()
    paths = []
    for index, image in enumerate(images):
        paths.append(str(folder / f"{index}.png"))
        Image.fromarray(image).save(paths[-1])
    return paths


def test_fit_on_files_records_each_file_and_catches_a_renamed_copy_in_a_test_set(stripes, tmp_path):
    images, _, _ = stripes
    train = write_images(tmp_path / "train", images[:8])
    test = write_images(tmp_path / "test", images[20:24])
    detector = SimpleNetDetector(**FAST).fit(train)

    recorded = detector.provenance_["files"]
    assert sorted(entry["path"] for entry in recorded) == sorted(train)
    for entry in recorded:
        with open(entry["path"], "rb") as handle:
            assert entry["sha256"] == hashlib.sha256(handle.read()).hexdigest() == file_sha256(entry["path"])
    assert detector.provenance_["split"] is None

    leaked = str(tmp_path / "test" / "renamed.png")
    shutil.copy(train[3], leaked)
    assert files_seen_in_training(detector, test + [leaked]) == [leaked]
    assert files_seen_in_training(detector, test) == []

    save(detector, tmp_path / "model.safetensors")
    restored = load(tmp_path / "model.safetensors")
    assert restored.provenance_ == detector.provenance_
    np.testing.assert_array_equal(restored.decision_scores_, detector.decision_scores_)
    np.testing.assert_array_equal(restored.labels_, detector.labels_)


def test_in_memory_images_record_no_files(fitted, stripes):
    assert fitted.provenance_ == {"files": [], "split": None, "anomalous_files": []}
    assert files_seen_in_training(fitted, []) == []
