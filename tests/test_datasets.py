from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sksimplenet.datasets import (
    list_mvtec_categories,
    load_folder,
    load_mvtec,
    load_one_class,
    load_visa,
    one_class_classes,
    run_one_class_protocol,
)


def _png(path: Path, value: int = 128, size: int = 4) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size), value, np.uint8)).save(path)
    return path


def _names(paths) -> list[str]:
    return [f"{Path(p).parent.name}/{Path(p).name}" for p in paths]


# ----------------------------------------------------------------------------- MVTec layout
@pytest.fixture
def mvtec_root(tmp_path):
    bottle = tmp_path / "bottle"
    for name in ("000.png", "001.png", "002.PNG"):
        _png(bottle / "train" / "good" / name)
    (bottle / "train" / "good" / "notes.txt").write_text("not an image")
    _png(bottle / "test" / "good" / "000.png")
    _png(bottle / "test" / "crack" / "000.png")
    _png(bottle / "test" / "crack" / "001.png")
    _png(bottle / "test" / "broken" / "000.jpg")
    _png(bottle / "ground_truth" / "crack" / "000_mask.png", 255)
    _png(bottle / "ground_truth" / "crack" / "001_mask.png", 255)
    _png(bottle / "ground_truth" / "broken" / "000_mask.png", 255)
    (tmp_path / "cable" / "train").mkdir(parents=True)
    (tmp_path / "cable" / "test").mkdir()
    (tmp_path / "license_files").mkdir()
    return tmp_path


def test_list_mvtec_categories_keeps_folders_with_train_and_test(mvtec_root):
    assert list_mvtec_categories(mvtec_root) == ["bottle", "cable"]


def test_load_mvtec_returns_paths_labels_and_masks(mvtec_root):
    data = load_mvtec(mvtec_root, "bottle")
    assert _names(data["train_paths"]) == ["good/000.png", "good/001.png", "good/002.PNG"]
    # Normal test images first, then each defect folder alphabetically.
    assert _names(data["test_paths"]) == ["good/000.png", "broken/000.jpg", "crack/000.png", "crack/001.png"]
    assert data["test_labels"].tolist() == [1, -1, -1, -1]
    assert data["test_categories"] == ["good", "broken", "crack", "crack"]
    assert data["test_masks"][0] is None
    assert _names(data["test_masks"][1:]) == [
        "broken/000_mask.png",
        "crack/000_mask.png",
        "crack/001_mask.png",
    ]
    assert all(Path(p).is_file() for p in data["train_paths"] + data["test_paths"])


def test_load_mvtec_accepts_masks_named_like_their_images(tmp_path):
    # BTAD as distributed: train/ok, test/ok|ko, ground_truth/ko/<name>.png.
    _png(tmp_path / "01" / "train" / "ok" / "0000.bmp")
    _png(tmp_path / "01" / "test" / "ok" / "0001.bmp")
    _png(tmp_path / "01" / "test" / "ko" / "0002.bmp")
    _png(tmp_path / "01" / "ground_truth" / "ko" / "0002.png", 255)
    data = load_mvtec(tmp_path, "01", normal_dir="ok")
    assert data["test_labels"].tolist() == [1, -1]
    assert data["test_masks"][0] is None and _names(data["test_masks"][1:]) == ["ko/0002.png"]


def test_load_mvtec_names_what_is_missing(mvtec_root):
    with pytest.raises(
        FileNotFoundError, match=r"carpet does not exist \(categories found: \['bottle', 'cable'\]"
    ):
        load_mvtec(mvtec_root, "carpet")
    with pytest.raises(FileNotFoundError, match=r"cable[/\\]train[/\\]good does not exist"):
        load_mvtec(mvtec_root, "cable")
    (mvtec_root / "bottle" / "ground_truth" / "crack" / "001_mask.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"no mask for .*001\.png: expected .*001_mask\.png"):
        load_mvtec(mvtec_root, "bottle")
    image_labels_only = load_mvtec(mvtec_root, "bottle", require_masks=False)
    assert image_labels_only["test_masks"][3] is None
    assert image_labels_only["test_labels"][3] == -1


# ----------------------------------------------------------------------------- plain folder
@pytest.fixture
def folder_root(tmp_path):
    """Two training images, a test set of good/, scratch/ (masked) and dent/ (unmasked)."""
    _png(tmp_path / "train_0.png")
    _png(tmp_path / "train_1.JPG")
    (tmp_path / "notes.txt").write_text("not an image")
    _png(tmp_path / "good" / "g0.png")
    _png(tmp_path / "good" / "g1.png")
    _png(tmp_path / "scratch" / "s0.png")
    _png(tmp_path / "scratch" / "s1.png")
    _png(tmp_path / "dent" / "d0.bmp")
    _png(tmp_path / "ground_truth" / "scratch" / "s0_mask.png", 255)
    _png(tmp_path / "ground_truth" / "scratch" / "s1.png", 255)
    _png(tmp_path / "ground_truth" / "good" / "g0_mask.png", 255)  # ignored: normal images
    (tmp_path / ".cache").mkdir()
    _png(tmp_path / ".cache" / "hidden.png")
    return tmp_path


def test_load_folder_trains_on_its_images_and_tests_on_its_subfolders(folder_root):
    data = load_folder(folder_root)
    assert [Path(p).name for p in data["train_paths"]] == ["train_0.png", "train_1.JPG"]
    # Normal images first, then each defect type alphabetically; ground_truth/ is not a type.
    assert _names(data["test_paths"]) == [
        "good/g0.png",
        "good/g1.png",
        "dent/d0.bmp",
        "scratch/s0.png",
        "scratch/s1.png",
    ]
    assert data["test_labels"].tolist() == [1, 1, -1, -1, -1]
    assert data["test_categories"] == ["good", "good", "dent", "scratch", "scratch"]
    assert data["test_masks"][:3] == [None, None, None]
    assert _names(data["test_masks"][3:]) == ["scratch/s0_mask.png", "scratch/s1.png"]
    assert Path(data["test_masks"][3]).parent.parent.name == "ground_truth"


def test_load_folder_of_training_images_only_has_an_empty_test_set(tmp_path):
    _png(tmp_path / "a.png")
    data = load_folder(tmp_path)
    assert _names(data["train_paths"]) == [f"{tmp_path.name}/a.png"]
    assert data["test_paths"] == [] and data["test_masks"] == [] and data["test_categories"] == []
    assert data["test_labels"].shape == (0,)


def test_load_folder_reads_an_mvtec_test_folder_with_its_masks_elsewhere(mvtec_root):
    bottle = mvtec_root / "bottle"
    data = load_folder(bottle / "test", mask_root=bottle / "ground_truth", require_masks=True)
    reference = load_mvtec(mvtec_root, "bottle")
    assert data["train_paths"] == []
    for key in ("test_paths", "test_masks", "test_categories"):
        assert data[key] == reference[key]
    assert data["test_labels"].tolist() == reference["test_labels"].tolist()


def test_load_folder_names_what_is_missing(folder_root, tmp_path_factory):
    with pytest.raises(FileNotFoundError, match=r"no mask for .*d0\.bmp: expected .*d0_mask\.png"):
        load_folder(folder_root, require_masks=True)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_folder(folder_root / "absent")
    empty = tmp_path_factory.mktemp("empty")
    (empty / "good").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no image files in .*good/ and defect subfolders"):
        load_folder(empty)


# ----------------------------------------------------------------------------- VisA
@pytest.fixture
def visa_root(tmp_path):
    for name in ("Normal/0000.JPG", "Normal/0001.JPG", "Normal/0002.JPG", "Anomaly/000.JPG"):
        _png(tmp_path / "candle" / "Data" / "Images" / name)
    _png(tmp_path / "candle" / "Data" / "Masks" / "Anomaly" / "000.png", 255)
    _png(tmp_path / "pcb1" / "Data" / "Images" / "Normal" / "0000.JPG")
    rows = [
        "object,split,label,image,mask",
        "candle,train,normal,candle/Data/Images/Normal/0000.JPG,",
        "candle,train,normal,candle/Data/Images/Normal/0001.JPG,",
        "pcb1,train,normal,pcb1/Data/Images/Normal/0000.JPG,",
        "candle,test,anomaly,candle/Data/Images/Anomaly/000.JPG,candle/Data/Masks/Anomaly/000.png",
        "candle,test,normal,candle/Data/Images/Normal/0002.JPG,",
    ]
    (tmp_path / "split_csv").mkdir()
    (tmp_path / "split_csv" / "1cls.csv").write_text("\n".join(rows) + "\n")
    return tmp_path


def test_load_visa_follows_the_split_csv(visa_root):
    data = load_visa(visa_root, "candle")
    assert data["train_paths"] == [
        str(visa_root / "candle/Data/Images/Normal/0000.JPG"),
        str(visa_root / "candle/Data/Images/Normal/0001.JPG"),
    ]
    assert data["test_paths"] == [
        str(visa_root / "candle/Data/Images/Anomaly/000.JPG"),
        str(visa_root / "candle/Data/Images/Normal/0002.JPG"),
    ]
    assert data["test_labels"].tolist() == [-1, 1]
    assert data["test_masks"] == [str(visa_root / "candle/Data/Masks/Anomaly/000.png"), None]
    assert data["test_categories"] == ["anomaly", "normal"]


def test_load_visa_reports_unknown_objects_and_missing_files(visa_root, tmp_path):
    with pytest.raises(ValueError, match=r"no rows for object 'capsules'.*\['candle', 'pcb1'\]"):
        load_visa(visa_root, "capsules")
    with pytest.raises(FileNotFoundError, match=r"2cls_fewshot\.csv does not exist"):
        load_visa(visa_root, "candle", split_csv="split_csv/2cls_fewshot.csv")
    with pytest.raises(FileNotFoundError, match="relative to"):
        load_visa(visa_root / "candle", "candle", split_csv=visa_root / "split_csv" / "1cls.csv")


# ----------------------------------------------------------------------------- one-class
@pytest.fixture
def one_class_root(tmp_path):
    """Three classes of flat grey images; brightness decides how normal an image looks."""
    brightness = {
        "train": {"a": [40], "b": [100], "c": [200]},
        "test": {"a": [40, 70], "b": [50, 100], "c": [200]},
    }
    for split, classes in brightness.items():
        for name, values in classes.items():
            for i, value in enumerate(values):
                _png(tmp_path / split / name / f"{i}.png", value)
    return tmp_path


class MeanBrightness:
    """Stub detector: normality = -|brightness - mean training brightness|."""

    @staticmethod
    def _brightness(paths):
        return np.array([np.asarray(Image.open(p), dtype=float).mean() for p in paths])

    def fit(self, paths):
        self.mean_ = self._brightness(paths).mean()
        return self

    def score_samples(self, paths):
        return -np.abs(self._brightness(paths) - self.mean_)


def test_load_one_class_labels_the_normal_class_plus_one(one_class_root):
    assert one_class_classes(one_class_root) == ["a", "b", "c"]
    data = load_one_class(one_class_root, "b")
    assert _names(data["train_paths"]) == ["b/0.png"]
    assert _names(data["test_paths"]) == ["a/0.png", "a/1.png", "b/0.png", "b/1.png", "c/0.png"]
    assert data["test_labels"].tolist() == [-1, -1, 1, 1, -1]
    assert data["test_masks"] == [None] * 5
    assert data["test_categories"] == ["a", "a", "b", "b", "c"]
    with pytest.raises(FileNotFoundError, match=r"train[/\\]dog does not exist"):
        load_one_class(one_class_root, "dog")


def test_one_class_protocol_auroc_per_class_and_mean(one_class_root):
    result = run_one_class_protocol(one_class_root, MeanBrightness)
    # Normal "a" (train mean 40): normal distances 0, 30; anomalous 10 (b/50), 60 (b/100),
    # 160 (c/200): 5 of 6 pairs ordered. Normal "b" (mean 100): normal 50, 0; anomalous 60,
    # 30, 100: 5 of 6. Normal "c": every other image is farther: 1.
    assert result["per_class_auroc"] == pytest.approx({"a": 5 / 6, "b": 5 / 6, "c": 1.0})
    assert result["mean_auroc"] == pytest.approx(8 / 9)
    subset = run_one_class_protocol(one_class_root, MeanBrightness, classes=["a", "c"])
    assert subset == {
        "per_class_auroc": pytest.approx({"a": 5 / 6, "c": 1.0}),
        "mean_auroc": pytest.approx(11 / 12),
    }
