"""The ``sksimplenet`` command line, run in-process through ``main``."""

import csv
import json
import re

import joblib
import numpy as np
import pytest
from PIL import Image

from sksimplenet import SimpleNetDetector, load
from sksimplenet.cli import main
from sksimplenet.datasets import make_synthetic

TINY = [
    "--backbone",
    "efficientnet_lite0",
    "--resize",
    "64",
    "--crop-size",
    "none",
    "--epochs",
    "2",
    "--seed",
    "0",
    "--device",
    "cpu",
]


def metric(output: str, name: str) -> float:
    """The value of one row of the markdown metrics table."""
    return float(re.search(rf"^\| {re.escape(name)} \| ([0-9.]+) \|$", output, re.MULTILINE).group(1))


@pytest.fixture(scope="module")
def mvtec_root(tmp_path_factory):
    """A tiny MVTec AD tree: widgets/train/good (8), test/good (3), test/blob (3) with masks."""
    root = tmp_path_factory.mktemp("mvtec")
    images, labels, masks = make_synthetic(11, 3, texture="grid", defects=("blob",), size=64, random_state=0)
    folders = {
        name: root / "widgets" / name
        for name in ("train/good", "test/good", "test/blob", "ground_truth/blob")
    }
    for folder in folders.values():
        folder.mkdir(parents=True)
    for i in range(8):
        Image.fromarray(images[i]).save(folders["train/good"] / f"{i:03d}.png")
    for i in range(8, 11):
        Image.fromarray(images[i]).save(folders["test/good"] / f"{i:03d}.png")
    for i in range(11, 14):
        Image.fromarray(images[i]).save(folders["test/blob"] / f"{i:03d}.png")
        mask = Image.fromarray(masks[i].astype(np.uint8) * 255)
        mask.save(folders["ground_truth/blob"] / f"{i:03d}_mask.png")
    return root


@pytest.fixture(scope="module")
def model_path(mvtec_root, tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "widgets.safetensors"
    code = main(
        [
            "--quiet",
            "fit",
            str(mvtec_root),
            "--layout",
            "mvtec",
            "--category",
            "widgets",
            *TINY,
            "-o",
            str(path),
        ]
    )
    assert code == 0
    return path


def test_demo_prints_good_metrics_and_writes_overlays(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    code = main(["--quiet", "demo", "-o", str(tmp_path), "--epochs", "100"])

    output = capsys.readouterr().out
    assert code == 0
    assert metric(output, "image AUROC") >= 0.9
    for name in ("image F1-max", "pixel AUROC", "AUPRO", "pixel F1-max"):
        assert 0 <= metric(output, name) <= 1
    overlays = sorted(tmp_path.glob("test_*_overlay.png"))
    assert len(overlays) == 25
    with Image.open(overlays[0]) as png:
        assert png.size == (96, 96)
    assert (tmp_path / "grid.png").is_file()
    assert json.loads((tmp_path / "metrics.json").read_text())["image_auroc"] == metric(output, "image AUROC")


def test_fit_saves_a_detector_that_loads_back(model_path):
    from sksimplenet.cli import load_detector

    detector = load_detector(model_path)

    assert detector.n_train_images_ + detector.n_held_out_images_ == 8
    assert detector.get_params()["backbone"] == "efficientnet_lite0"
    assert detector.get_params()["crop_size"] is None
    assert detector.input_size_ == (64, 64)


def test_evaluate_prints_a_table_and_writes_json(mvtec_root, model_path, tmp_path, capsys):
    out = tmp_path / "metrics.json"

    code = main(
        [
            "--quiet",
            "evaluate",
            str(model_path),
            str(mvtec_root),
            "--layout",
            "mvtec",
            "--category",
            "widgets",
            "--json",
            str(out),
            "--device",
            "cpu",
        ]
    )

    assert code == 0
    metrics = json.loads(out.read_text())
    assert set(metrics) == {"image_auroc", "image_f1_max", "pixel_auroc", "aupro", "pixel_f1_max"}
    assert all(0.0 <= value <= 1.0 for value in metrics.values())
    printed = capsys.readouterr().out
    assert printed.startswith("| metric | value |")
    assert metric(printed, "pixel AUROC") == round(metrics["pixel_auroc"], 4)


def test_predict_writes_csv_and_overlays(mvtec_root, model_path, tmp_path):
    pytest.importorskip("matplotlib")
    test_dir = mvtec_root / "widgets" / "test"

    code = main(
        [
            "--quiet",
            "predict",
            str(model_path),
            str(test_dir / "good"),
            str(test_dir / "blob"),
            "-o",
            str(tmp_path),
        ]
    )

    assert code == 0
    with open(tmp_path / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 6
    assert [row["path"] for row in rows][:1] == [str(test_dir / "good" / "008.png")]
    assert {int(row["label"]) for row in rows} <= {1, -1}
    assert all(np.isfinite(float(row["score"])) for row in rows)
    # An image is labelled -1 exactly when its anomaly score passes the decision threshold.
    threshold = load(model_path).threshold_
    assert all((int(row["label"]) == -1) == (float(row["score"]) > threshold) for row in rows)
    overlays = sorted(path.name for path in tmp_path.glob("*_overlay.png"))
    assert overlays == [f"{i:03d}_overlay.png" for i in range(8, 14)]


def test_predict_with_a_centre_crop_overlays_only_what_was_seen(tmp_path):
    pytest.importorskip("matplotlib")
    images = make_synthetic(6, 0, texture="grid", size=64, random_state=0)[0]
    wide = [np.concatenate([image, image], axis=1) for image in images]  # 64 x 128
    paths = []
    for i, image in enumerate(wide):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(image).save(paths[-1])
    with pytest.warns(UserWarning, match="cuts 50% of each image away"):
        detector = SimpleNetDetector("efficientnet_lite0", resize=64, crop_size=64, epochs=1, device="cpu")
        detector.fit(wide[:4])
    detector.save(tmp_path / "cropped.safetensors")

    code = main(
        [
            "--quiet",
            "predict",
            str(tmp_path / "cropped.safetensors"),
            *map(str, paths[4:]),
            "-o",
            str(tmp_path),
        ]
    )

    assert code == 0
    with Image.open(tmp_path / "4_overlay.png") as png:
        overlay = np.asarray(png.convert("RGB")).astype(int)
    assert overlay.shape == (64, 128, 3)
    left_border = overlay[:, :32] - wide[4][:, :32].astype(int)
    centre = overlay[:, 32:96] - wide[4][:, 32:96].astype(int)
    assert np.abs(left_border).mean() < 2 < np.abs(centre).mean()  # the cut border shows the bare image


def test_predict_without_output_writes_csv_to_stdout(mvtec_root, model_path, capsys):
    image = mvtec_root / "widgets" / "test" / "blob" / "011.png"

    code = main(["--quiet", "predict", str(model_path), str(image)])

    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    assert lines[0] == "path,score,label"
    path, score, label = lines[1].split(",")
    assert path == str(image) and label in ("1", "-1")


def assert_one_line_error(capsys, *needles):
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("sksimplenet: error: ")
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err
    return err


def test_a_missing_dataset_is_one_line_and_exit_code_2(tmp_path, capsys):
    missing = tmp_path / "no_such_dataset"

    code = main(["fit", str(missing), "--layout", "mvtec", "--category", "bottle", "-o", str(tmp_path / "m")])

    assert code == 2
    assert_one_line_error(capsys, str(missing), "does not exist")


def test_other_errors_are_one_line_too(mvtec_root, model_path, tmp_path, capsys):
    assert (
        main(
            [
                "evaluate",
                str(tmp_path / "none.joblib"),
                str(mvtec_root),
                "--layout",
                "mvtec",
                "--category",
                "widgets",
            ]
        )
        == 2
    )
    assert_one_line_error(capsys, "none.joblib")

    assert main(["fit", str(mvtec_root), "--layout", "mvtec", "-o", str(tmp_path / "m")]) == 2
    assert_one_line_error(capsys, "--category")

    assert (
        main(
            ["fit", str(mvtec_root), "--layout", "mvtec", "--category", "gadgets", "-o", str(tmp_path / "m")]
        )
        == 2
    )
    assert_one_line_error(capsys, "gadgets", "widgets")

    assert main(["fit", str(mvtec_root), "--layout", "zip", "-o", str(tmp_path / "m")]) == 2
    assert_one_line_error(capsys, "--layout", "zip")

    assert main(["predict", str(model_path), str(tmp_path / "gone.png")]) == 2
    assert_one_line_error(capsys, "gone.png")

    assert main([]) == 2
    assert_one_line_error(capsys, "COMMAND")


def test_a_joblib_model_file_needs_allow_pickle_and_then_scores_like_the_safe_one(
    mvtec_root, model_path, tmp_path, capsys
):
    pickled = tmp_path / "widgets.joblib"
    image = str(mvtec_root / "widgets" / "test" / "blob" / "012.png")
    assert (
        main(
            [
                "--quiet",
                "fit",
                str(mvtec_root),
                "--layout",
                "mvtec",
                "--category",
                "widgets",
                *TINY,
                "-o",
                str(pickled),
            ]
        )
        == 0
    )
    assert model_path.read_bytes()[8:9] == b"{"  # the safe format: a safetensors header
    capsys.readouterr()

    assert main(["--quiet", "predict", str(pickled), image]) == 2
    assert_one_line_error(capsys, "is not a safe (safetensors) model file", "--allow-pickle")
    scores = []
    for model, flags in ((model_path, []), (pickled, ["--allow-pickle"])):
        assert main(["--quiet", "predict", *flags, str(model), image]) == 0
        scores.append(float(capsys.readouterr().out.splitlines()[1].split(",")[1]))

    assert scores[0] == pytest.approx(scores[1], abs=1e-4)


class _RunsCodeWhenUnpickled:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('PWNED').write_text('code ran')",))


@pytest.mark.parametrize("name", ["model.SAFETENSORS", "model.safetensors.bak", "model"])
def test_a_pickle_is_never_opened_without_allow_pickle_whatever_its_name(
    mvtec_root, tmp_path, capsys, monkeypatch, name
):
    monkeypatch.chdir(tmp_path)
    joblib.dump(_RunsCodeWhenUnpickled(), tmp_path / name)
    image = str(mvtec_root / "widgets" / "test" / "blob" / "012.png")

    assert main(["predict", str(tmp_path / name), image]) == 2

    assert_one_line_error(capsys, name, "is not a safe (safetensors) model file")
    assert not (tmp_path / "PWNED").exists()


def test_a_safe_model_file_is_recognised_by_its_content_not_its_name(
    model_path, tmp_path, mvtec_root, capsys
):
    renamed = tmp_path / "widgets.model"
    renamed.write_bytes(model_path.read_bytes())
    image = str(mvtec_root / "widgets" / "test" / "blob" / "012.png")
    assert main(["--quiet", "predict", str(renamed), image]) == 0
