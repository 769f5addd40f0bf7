"""The ``sksimplenet`` command line, run in-process through ``main`` (and as a process where it matters)."""

import csv
import io
import json
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import joblib
import numpy as np
import pytest
from PIL import Image

from sksimplenet import SimpleNetDetector, load, save
from sksimplenet.cli import main, params_path
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
# Faster still, for the tests that fit several detectors: one epoch, a narrow discriminator.
TINIER = [*TINY, "--epochs", "1", "--set", "hidden_dim=64"]


def metric(output: str, name: str) -> float:
    """The value of one row of a markdown table of the command's output."""
    return float(re.search(rf"^\| {re.escape(name)} \| ([-0-9.e+]+) \|$", output, re.MULTILINE).group(1))


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def read_rgb(path):
    with Image.open(path) as png:
        return np.asarray(png.convert("RGB")).astype(int)


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


def fit_args(mvtec_root, output, *options):
    return [
        "fit",
        str(mvtec_root),
        "--layout",
        "mvtec",
        "--category",
        "widgets",
        *options,
        "-o",
        str(output),
    ]


@pytest.fixture(scope="module")
def fitted_run(mvtec_root, tmp_path_factory):
    """The model of one ``fit`` and what the command printed on stdout and stderr."""
    path = tmp_path_factory.mktemp("models") / "widgets.safetensors"
    capture = pytest.MonkeyPatch()
    out, err = io.StringIO(), io.StringIO()
    capture.setattr(sys, "stdout", out)
    capture.setattr(sys, "stderr", err)
    try:
        code = main(fit_args(mvtec_root, path, *TINY))
    finally:
        capture.undo()
    assert code == 0, err.getvalue()
    return path, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def model_path(fitted_run):
    return fitted_run[0]


@pytest.fixture(scope="module")
def scan_folder(mvtec_root, tmp_path_factory):
    """Four good image files and a truncated PNG between them."""
    folder = tmp_path_factory.mktemp("scan")
    sources = sorted((mvtec_root / "widgets" / "test").glob("*/*.png"))[:4]
    for index, source in enumerate(sources):
        (folder / f"{2 * index}.png").write_bytes(source.read_bytes())
    data = sources[0].read_bytes()
    (folder / "3_truncated.png").write_bytes(data[: len(data) // 2])
    return folder


def assert_one_line_error(capsys, *needles):
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("sksimplenet: error: ")
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err
    return err


# ----------------------------------------------------------------------------- demo, fit, evaluate
def test_demo_prints_good_metrics_and_writes_overlays(tmp_path, capsys, monkeypatch):
    pytest.importorskip("matplotlib")
    decoded = count_decodes(monkeypatch)
    fit = SimpleNetDetector.fit

    def fit_then_count_from_zero(self, *args, **kwargs):
        fitted = fit(self, *args, **kwargs)
        decoded["images"] = 0
        return fitted

    monkeypatch.setattr(SimpleNetDetector, "fit", fit_then_count_from_zero)
    code = main(["--quiet", "demo", "-o", str(tmp_path), "--epochs", "100"])

    output = capsys.readouterr().out
    assert code == 0
    assert metric(output, "image AUROC") >= 0.9
    for name in ("image F1-max", "pixel AUROC", "AUPRO", "pixel F1-max"):
        assert 0 <= metric(output, name) <= 1
    overlays = sorted(tmp_path.glob("test_*_overlay.png"))
    assert len(overlays) == 25
    with Image.open(overlays[0]) as png:
        assert png.size == (320, 96 + 58)  # the 96-pixel image and a band with the score and colour bar
    assert (tmp_path / "grid.png").is_file()
    assert json.loads((tmp_path / "metrics.json").read_text())["image_auroc"] == metric(output, "image AUROC")
    # After fit, each of the 25 test images goes through the network once (maps and scores together).
    assert decoded == {"images": 25}


def test_fit_saves_a_detector_that_loads_back(model_path):
    detector = load(model_path)

    assert detector.n_train_images_ + detector.n_held_out_images_ == 8
    assert detector.get_params()["backbone"] == "efficientnet_lite0"
    assert detector.get_params()["crop_size"] is None
    assert detector.input_size_ == (64, 64)


def test_fit_prints_the_final_loss_held_out_criterion_and_threshold(fitted_run):
    path, out, err = fitted_run
    detector = load(path)

    assert metric(out, "epochs") == len(detector.loss_history_) == 2
    assert metric(out, "training loss (last epoch)") == float(f"{detector.loss_history_[-1]:.6g}")
    assert metric(out, "held-out criterion (last epoch)") == float(f"{detector.validation_history_[-1]:.6g}")
    assert metric(out, "threshold (image anomaly score)") == float(f"{detector.threshold_:.6g}")
    # The progress bar on stderr showed the same last values, to four decimals.
    shown = re.findall(r"loss=([0-9.]+), held-out=([0-9.]+)", err)
    assert shown[-1] == (f"{detector.loss_history_[-1]:.4f}", f"{detector.validation_history_[-1]:.4f}")


def test_fit_writes_its_parameters_beside_the_model_and_config_repeats_the_run(
    fitted_run, mvtec_root, tmp_path, capsys
):
    path = fitted_run[0]
    detector = load(path)
    written = json.loads(params_path(path).read_text())
    assert params_path(path).name == "widgets.safetensors.params.json"
    expected = {name: value for name, value in detector.get_params().items() if name != "verbose"}
    assert written == json.loads(json.dumps(expected))
    assert written["epochs"] == 2 and written["random_state"] == 0 and written["resize"] == 64

    again = tmp_path / "again.safetensors"
    assert main(["--quiet", *fit_args(mvtec_root, again, "--config", str(params_path(path)))]) == 0

    repeated = load(again)
    assert repeated.get_params() == detector.get_params()
    assert repeated.threshold_ == detector.threshold_
    assert repeated.loss_history_ == detector.loss_history_


def test_named_options_and_set_reach_every_parameter(mvtec_root, tmp_path):
    path = tmp_path / "m.safetensors"
    options = [
        *TINIER,
        "--batch-size",
        "3",
        "--patch-fraction",
        "0.5",
        "--contamination",
        "0.2",
        "--image-score",
        "max",
        "--layers",
        "features.3,features.5",
        "--weights",
        "DEFAULT",
        "--validation-fraction",
        "0.25",
        "--sigma",
        "0.2,0.4",
        "--feature-scaling",
        "none",
        "--set",
        "adaptor_lr=2e-4",
        "--set",
        "weight_averaging=None",
        "--set",
        "resize=(64, 80)",
        "--set",
        "adaptor-bias=true",
    ]

    assert main(["--quiet", *fit_args(mvtec_root, path, *options)]) == 0

    params = load(path).get_params()
    assert params["batch_size"] == 3
    assert params["patch_fraction"] == 0.5
    assert params["contamination"] == 0.2
    assert params["image_score"] == "max"
    assert params["layers"] == ("features.3", "features.5")
    assert params["validation_fraction"] == 0.25
    assert params["sigma"] == (0.2, 0.4)
    assert params["feature_scaling"] is None
    assert params["hidden_dim"] == 64
    assert params["adaptor_lr"] == 2e-4
    assert params["weight_averaging"] is None
    assert params["resize"] == (64, 80)
    assert params["adaptor_bias"] is True
    assert load(path).n_held_out_images_ == 2  # ceil(0.25 * 8)


@pytest.mark.parametrize("suffix", [".json", ".toml"])
def test_config_then_named_options_then_set(mvtec_root, tmp_path, suffix):
    config = tmp_path / f"params{suffix}"
    if suffix == ".json":
        config.write_text(json.dumps({"batch_size": 2, "hidden_dim": 32, "margin": 0.25, "resize": [64, 64]}))
    else:
        config.write_text("batch_size = 2\nhidden_dim = 32\nmargin = 0.25\nresize = [64, 64]\n")
    path = tmp_path / "m.safetensors"
    options = ["--config", str(config), *TINIER, "--batch-size", "4", "--set", "hidden_dim=16"]

    assert main(["--quiet", *fit_args(mvtec_root, path, *options)]) == 0

    params = load(path).get_params()
    assert params["margin"] == 0.25  # from the file only
    assert params["batch_size"] == 4  # the named option over the file
    assert params["hidden_dim"] == 16  # --set, applied last, over TINIER's --set and the file
    assert params["resize"] == 64  # TINY's --resize over the file's list


def test_invalid_parameters_are_refused_by_name_before_any_data_is_read(tmp_path, capsys):
    missing = str(tmp_path / "no_such_dataset")
    model = tmp_path / "m.safetensors"

    def fit(*options):
        return main(["fit", missing, "--layout", "folder", *options, "-o", str(model)])

    assert fit("--set", "batch_size=0") == 2
    assert_one_line_error(capsys, "'batch_size' parameter", "Got 0")
    assert fit("--patch-fraction", "2") == 2
    assert_one_line_error(capsys, "'patch_fraction' parameter")
    assert fit("--set", "device=tpu") == 2
    assert_one_line_error(capsys, "'device' parameter", "'tpu'")
    assert fit("--set", "batch=4") == 2
    err = assert_one_line_error(capsys, "--set: unknown parameter 'batch'", "batch_size", "patch_fraction")
    assert "verbose" not in err.split("parameters are:")[1]
    assert fit("--set", "verbose=true") == 2
    assert_one_line_error(capsys, "verbose is set by --quiet")
    assert fit("--set", "batch_size") == 2
    assert_one_line_error(capsys, "NAME=VALUE")
    assert fit("--contamination", "some") == 2
    assert_one_line_error(capsys, "'contamination' parameter", "'some'")

    bad_key = tmp_path / "bad.json"
    bad_key.write_text('{"batch_size": 4, "bach_size": 4}')
    assert fit("--config", str(bad_key)) == 2
    assert_one_line_error(capsys, str(bad_key), "unknown parameter 'bach_size'")
    for name, text, needle in (
        ("list.json", "[1, 2]", "one table"),
        ("broken.json", "{", "not valid JSON"),
        ("broken.toml", "batch_size = ", "not valid TOML"),
        ("params.yaml", "batch_size: 4", ".json or .toml"),
    ):
        (tmp_path / name).write_text(text)
        assert fit("--config", str(tmp_path / name)) == 2
        assert_one_line_error(capsys, name, needle)
    assert fit("--config", str(tmp_path / "gone.json")) == 2
    assert_one_line_error(capsys, "gone.json", "does not exist")
    assert not model.exists()


def test_list_params_prints_every_parameter_with_its_default(capsys):
    assert main(["fit", "--list-params"]) == 0

    rows = {
        line.split(" | ")[0].strip("| "): line.split(" | ")[1:]
        for line in capsys.readouterr().out.splitlines()[2:]
    }
    assert set(rows) == set(SimpleNetDetector._get_param_names()) - {"verbose"}
    defaults = SimpleNetDetector().get_params()
    assert json.loads(rows["batch_size"][0]) == defaults["batch_size"] == 32
    assert json.loads(rows["contamination"][0]) == "auto"
    assert "[1, inf)" in rows["batch_size"][1]


def test_fit_help_says_where_the_defaults_come_from(capsys):
    assert main(["fit", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "the defaults of SimpleNetDetector (print them with --list-params" in text
    assert "then --config FILE, then the named options, then --set NAME=VALUE" in text
    for flag in (
        "--batch-size",
        "--patch-fraction",
        "--contamination",
        "--weights",
        "--layers",
        "--image-score",
    ):
        assert flag in text


def test_evaluate_prints_a_table_and_writes_json(mvtec_root, model_path, tmp_path, capsys, monkeypatch):
    out = tmp_path / "metrics.json"
    decoded = count_decodes(monkeypatch)

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
    document = json.loads(out.read_text())
    assert set(document) == {"metrics", "at_threshold", "per_type"}
    metrics = document["metrics"]
    assert set(metrics) == {"image_auroc", "image_f1_max", "pixel_auroc", "aupro", "pixel_f1_max"}
    assert all(0.0 <= value <= 1.0 for value in metrics.values())
    printed = capsys.readouterr().out
    assert printed.startswith("| metric | value |")
    assert metric(printed, "pixel AUROC") == round(metrics["pixel_auroc"], 4)
    assert decoded == {"images": 6}  # one pass over the 6 test images: maps and scores together


@pytest.fixture(scope="module")
def plain_folder(mvtec_root, tmp_path_factory):
    """The widgets in the folder layout: training images in it, good/ and blob/ to test, masks."""
    root = tmp_path_factory.mktemp("plain")
    widgets = mvtec_root / "widgets"
    for source in sorted((widgets / "train" / "good").glob("*.png")):
        (root / source.name).write_bytes(source.read_bytes())
    for kind in ("good", "blob"):
        (root / kind).mkdir()
        for source in sorted((widgets / "test" / kind).glob("*.png")):
            (root / kind / source.name).write_bytes(source.read_bytes())
    (root / "ground_truth").mkdir()
    (root / "ground_truth" / "blob").mkdir()
    for source in sorted((widgets / "ground_truth" / "blob").glob("*.png")):
        (root / "ground_truth" / "blob" / source.name).write_bytes(source.read_bytes())
    return root


def test_evaluate_a_folder_at_the_threshold_per_type_per_image_and_as_a_report(
    plain_folder, tmp_path, capsys
):
    model = tmp_path / "plain.safetensors"
    assert main(["--quiet", "fit", str(plain_folder), "--layout", "folder", *TINY, "-o", str(model)]) == 0
    detector = load(model)
    assert detector.n_train_images_ + detector.n_held_out_images_ == 8  # the images directly in the folder
    assert detector.provenance_["split"] == {"layout": "folder"}
    capsys.readouterr()
    per_image, report, out = tmp_path / "per_image.csv", tmp_path / "report", tmp_path / "metrics.json"
    arguments = [str(model), str(plain_folder), "--layout", "folder", "--device", "cpu"]
    options = ["--per-image", str(per_image), "--report", str(report), "--json", str(out)]
    assert main(["--quiet", "evaluate", *arguments, *options]) == 0
    captured = capsys.readouterr()
    assert "training images" not in captured.err  # no overlap with the training files

    rows = read_csv(per_image)
    paths = [row["path"] for row in rows]
    assert [row["defect_type"] for row in rows] == ["good"] * 3 + ["blob"] * 3
    scores = -detector.score_samples(paths)
    np.testing.assert_allclose([float(row["score"]) for row in rows], scores, rtol=1e-5)
    predicted = detector.predict(paths)
    assert [int(row["predicted"]) for row in rows] == predicted.tolist()
    document = json.loads(out.read_text())
    labels = np.array([1, 1, 1, -1, -1, -1])
    at_threshold = document["at_threshold"]
    assert at_threshold["fp"] == int(np.sum((predicted == -1) & (labels == 1)))
    assert at_threshold["tp"] == int(np.sum((predicted == -1) & (labels == -1)))
    assert metric(captured.out, "false positives (normal, flagged)") == at_threshold["fp"]
    assert set(document["per_type"]) == {"good", "blob"}
    assert document["per_type"]["blob"]["n_images"] == 3
    assert "pixel_auroc" in document["metrics"]  # the masks under ground_truth/ were found
    html = (report / "report.html").read_text()
    assert (
        html.lstrip().lower().startswith("<!doctype html")
        and "http://" not in html
        and "https://" not in html
    )


def test_evaluate_warns_naming_test_images_the_model_was_trained_on(
    mvtec_root, model_path, plain_folder, tmp_path, capsys
):
    leaky = tmp_path / "leaky"
    leaky.mkdir()
    (leaky / "good").mkdir()
    (leaky / "blob").mkdir()
    train = sorted((mvtec_root / "widgets" / "train" / "good").glob("*.png"))
    (leaky / "good" / "copy_of_train.png").write_bytes(train[0].read_bytes())  # renamed, same content
    for source in sorted((plain_folder / "blob").glob("*.png")):
        (leaky / "blob" / source.name).write_bytes(source.read_bytes())
    arguments = ["evaluate", str(model_path), str(leaky), "--layout", "folder", "--device", "cpu"]
    assert main(arguments) == 0
    err = capsys.readouterr().err
    assert "sksimplenet: warning: 1 of the 4 test images were training images of this model" in err
    assert str(leaky / "good" / "copy_of_train.png") in err
    # fitted on layout mvtec, category widgets: another split
    assert "the model was fitted on a split with {'category': 'widgets', 'layout': 'mvtec'}" in err
    assert main(["--quiet", *arguments]) == 0  # quiet: no notes and no warnings
    assert capsys.readouterr().err == ""


# ----------------------------------------------------------------------------- predict
def count_decodes(monkeypatch) -> dict:
    """Count the images that go through the network's input pipeline."""
    from sksimplenet.image_io import ImageDataset

    count = {"images": 0}
    original = ImageDataset.__getitem__

    def counted(self, index):
        count["images"] += 1
        return original(self, index)

    monkeypatch.setattr(ImageDataset, "__getitem__", counted)
    return count


def test_predict_writes_csv_and_overlays(mvtec_root, model_path, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    test_dir = mvtec_root / "widgets" / "test"
    decoded = count_decodes(monkeypatch)

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
    assert decoded == {"images": 6}  # each image through the network once, overlays included
    rows = read_csv(tmp_path / "predictions.csv")
    assert len(rows) == 6
    assert list(rows[0]) == ["path", "score", "label", "status", "error"]
    assert [row["path"] for row in rows][:1] == [str(test_dir / "good" / "008.png")]
    assert {row["status"] for row in rows} == {"ok"} and {row["error"] for row in rows} == {""}
    assert {int(row["label"]) for row in rows} <= {1, -1}
    detector = load(model_path)
    scores = -detector.score_samples([row["path"] for row in rows])
    np.testing.assert_allclose([float(row["score"]) for row in rows], scores, rtol=1e-5, atol=1e-5)
    # An image is labelled -1 exactly when its anomaly score passes the decision threshold.
    assert all((int(row["label"]) == -1) == (float(row["score"]) > detector.threshold_) for row in rows)
    overlays = sorted(path.name for path in tmp_path.glob("*_overlay.png"))
    assert overlays == [f"{i:03d}_overlay.png" for i in range(8, 14)]


def test_predict_masks_maps_and_overlays_share_one_scale_anchored_at_the_threshold(
    mvtec_root, model_path, tmp_path
):
    pytest.importorskip("matplotlib")
    from sksimplenet.plotting import FOOTER_PIXELS

    test_dir = mvtec_root / "widgets" / "test"
    args = ["--quiet", "predict", str(model_path), str(test_dir / "good"), str(test_dir / "blob")]
    assert main([*args, "-o", str(tmp_path), "--masks", "--maps", "--format", "json"]) == 0

    detector = load(model_path)
    threshold = detector.threshold_
    document = json.loads((tmp_path / "predictions.json").read_text())
    assert document["threshold"] == threshold
    images = document["images"]
    assert [image["status"] for image in images] == ["ok"] * 6
    maps = [np.load(tmp_path / image["map"]) for image in images]
    # The raw maps are anomaly_map at each image's own size.
    expected = detector.anomaly_map([image["path"] for image in images], original_size=True)
    for saved, computed in zip(maps, expected):
        assert saved.dtype == np.float32 and saved.shape == (64, 64)
        np.testing.assert_allclose(saved, computed, rtol=1e-5, atol=1e-5)
    # Masks are map >= threshold.
    for image, anomaly_map in zip(images, maps):
        with Image.open(tmp_path / image["mask"]) as png:
            assert png.mode == "L"
            np.testing.assert_array_equal(np.asarray(png) == 255, anomaly_map >= threshold)
            assert set(np.unique(np.asarray(png))) <= {0, 255}
    # One colour range for every overlay, centred on the threshold, just holding every map.
    vmin, vmax = document["color_range"]
    assert (vmin + vmax) / 2 == pytest.approx(threshold)
    low, high = min(m.min() for m in maps), max(m.max() for m in maps)
    assert vmin <= low and high <= vmax
    assert min(low - vmin, vmax - high) == pytest.approx(0, abs=1e-6)
    # So the colour bars below the images are the same in every overlay, pixel for pixel,
    # while the images (and the captions with their scores) differ.
    overlays = [read_rgb(tmp_path / image["overlay"]) for image in images]
    assert all(overlay.shape == (64 + FOOTER_PIXELS, 320, 3) for overlay in overlays)
    bar = slice(64 + 20, None)  # the band's lower part: the colour bar and its ticks
    for overlay in overlays[1:]:
        np.testing.assert_array_equal(overlay[bar], overlays[0][bar])
    assert np.abs(overlays[0][:64, :64] - overlays[-1][:64, :64]).mean() > 5

    # The same scores as the CSV.
    assert main([*args, "-o", str(tmp_path / "csv"), "--no-overlays"]) == 0
    rows = read_csv(tmp_path / "csv" / "predictions.csv")
    assert [row["path"] for row in rows] == [image["path"] for image in images]
    np.testing.assert_allclose([float(row["score"]) for row in rows], [i["score"] for i in images], rtol=1e-5)
    assert [int(row["label"]) for row in rows] == [image["label"] for image in images]
    assert not list((tmp_path / "csv").glob("*.png")) and not list((tmp_path / "csv").glob("*.npy"))


def test_predict_reports_an_unreadable_file_and_scores_the_others(model_path, scan_folder, tmp_path, capsys):
    pytest.importorskip("matplotlib")

    code = main(["--quiet", "predict", str(model_path), str(scan_folder), "-o", str(tmp_path), "--masks"])

    assert code == 1
    bad = str(scan_folder / "3_truncated.png")
    err = capsys.readouterr().err
    assert f"sksimplenet: skipped: '{bad}' is truncated or corrupt" in err
    assert "1 of 5 images could not be read" in err
    rows = read_csv(tmp_path / "predictions.csv")
    assert [row["path"] for row in rows] == [
        str(scan_folder / name) for name in sorted(p.name for p in scan_folder.iterdir())
    ]
    failed = [row for row in rows if row["status"] == "error"]
    assert [row["path"] for row in failed] == [bad]
    assert failed[0]["score"] == failed[0]["label"] == ""
    assert bad in failed[0]["error"] and "truncated" in failed[0]["error"]
    good = [row for row in rows if row["status"] == "ok"]
    assert len(good) == 4 and all(row["error"] == "" for row in good)
    scores = -load(model_path).score_samples([row["path"] for row in good])
    np.testing.assert_allclose([float(row["score"]) for row in good], scores, rtol=1e-5, atol=1e-5)
    assert sorted(p.name for p in tmp_path.glob("*_overlay.png")) == [
        "0_overlay.png",
        "2_overlay.png",
        "4_overlay.png",
        "6_overlay.png",
    ]
    assert len(list(tmp_path.glob("*_mask.png"))) == 4

    # As JSON on stdout, the same.
    assert main(["--quiet", "predict", str(model_path), str(scan_folder), "--format", "json"]) == 1
    images = json.loads(capsys.readouterr().out)["images"]
    assert [image["status"] for image in images] == [row["status"] for row in rows]
    bad_index = [row["path"] for row in rows].index(bad)
    assert images[bad_index]["error"] == failed[0]["error"] and images[bad_index]["score"] is None


def test_predict_fail_fast_stops_at_the_unreadable_file(model_path, scan_folder, tmp_path, capsys):
    code = main(["--quiet", "predict", str(model_path), str(scan_folder), "-o", str(tmp_path), "--fail-fast"])

    assert code == 2
    assert_one_line_error(capsys, str(scan_folder / "3_truncated.png"), "truncated")
    assert not (tmp_path / "predictions.csv").exists()


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
    save(detector, tmp_path / "cropped.safetensors")

    code = main(
        [
            "--quiet",
            "predict",
            str(tmp_path / "cropped.safetensors"),
            *map(str, paths[4:]),
            "-o",
            str(tmp_path),
            "--maps",
            "--masks",
        ]
    )

    assert code == 0
    overlay = read_rgb(tmp_path / "4_overlay.png")[:64, :128]  # the image, above the colour bar
    left_border = overlay[:, :32] - wide[4][:, :32].astype(int)
    centre = overlay[:, 32:96] - wide[4][:, 32:96].astype(int)
    assert np.abs(left_border).mean() < 2 < np.abs(centre).mean()  # the cut border shows the bare image
    anomaly_map = np.load(tmp_path / "4_map.npy")
    assert anomaly_map.shape == (64, 128)
    assert np.isnan(anomaly_map[:, :32]).all() and not np.isnan(anomaly_map[:, 32:96]).any()
    with Image.open(tmp_path / "4_mask.png") as png:
        assert not np.asarray(png)[:, :32].any()  # never seen, never flagged


def test_predict_without_output_writes_csv_to_stdout(mvtec_root, model_path, capsys):
    image = mvtec_root / "widgets" / "test" / "blob" / "011.png"

    code = main(["--quiet", "predict", str(model_path), str(image)])

    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    assert lines[0] == "path,score,label,status,error"
    path, score, label, status, error = lines[1].split(",")
    assert path == str(image) and label in ("1", "-1") and status == "ok" and error == ""
    assert float(score) == pytest.approx(-load(model_path).score_samples([str(image)])[0], rel=1e-5)


def test_quiet_works_after_the_command_too(mvtec_root, model_path, capsys):
    pytest.importorskip("matplotlib")
    image = str(mvtec_root / "widgets" / "test" / "blob" / "011.png")

    assert main(["predict", str(model_path), image]) == 0
    assert "scoring" in capsys.readouterr().err
    assert main(["predict", str(model_path), image, "--quiet"]) == 0
    assert capsys.readouterr().err == ""


def test_predict_options_that_write_files_need_an_output_folder(mvtec_root, model_path, capsys):
    image = str(mvtec_root / "widgets" / "test" / "blob" / "011.png")
    for flag in ("--masks", "--maps", "--no-overlays"):
        assert main(["predict", str(model_path), image, flag]) == 2
        assert_one_line_error(capsys, flag, "-o OUTDIR")


# ----------------------------------------------------------------------------- export, version, help
def test_export_writes_an_onnx_graph_that_scores_like_the_model(mvtec_root, model_path, tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from sksimplenet.export import prepare_images

    out = tmp_path / "nested" / "widgets.onnx"
    assert main(["--quiet", "export", str(model_path), str(out)]) == 0

    detector = load(model_path)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    metadata = session.get_modelmeta().custom_metadata_map
    assert float(metadata["outlier_threshold"]) == pytest.approx(detector.threshold_)
    images = sorted(str(p) for p in (mvtec_root / "widgets" / "test").glob("*/*.png"))[:3]
    _, scores = session.run(None, {"images": prepare_images(detector, images)})
    np.testing.assert_allclose(scores, -detector.score_samples(images), rtol=1e-4, atol=1e-4)


def test_export_without_onnx_says_what_to_install(model_path, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)

    assert main(["export", str(model_path), str(tmp_path / "m.onnx")]) == 2
    assert_one_line_error(capsys, "pip install")


def test_version(capsys):
    from sksimplenet import __version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"sksimplenet {__version__}"


def test_help_imports_no_torch():
    # Every module imported while answering --help, as the interpreter lists them.
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "sksimplenet", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0
    assert done.stdout.startswith("usage: sksimplenet")
    imported = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if "|" in line]
    assert "sksimplenet.cli" in imported
    assert not [name for name in imported if name.split(".")[0] in ("torch", "torchvision", "sklearn")]

    code = "import sys; from sksimplenet import cli; cli.build_parser(); print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "False"


def test_public_names_import_lazily_and_as_before():
    code = (
        "import sys, sksimplenet; print('torch' in sys.modules); "
        "from sksimplenet import SimpleNetDetector, PAPER_PARAMS, ModelFileError, load; "
        "from sksimplenet.detector import SimpleNetDetector as D; "
        "print(SimpleNetDetector is D, sorted(sksimplenet.__all__) == sorted(n for n in sksimplenet.__all__ "
        "if hasattr(sksimplenet, n)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["False", "True", "True"], done.stderr
    import sksimplenet

    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        sksimplenet.nothing  # noqa: B018


# ----------------------------------------------------------------------------- errors and model files
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

    assert main(["export", str(tmp_path / "none.safetensors"), str(tmp_path / "m.onnx")]) == 2
    assert_one_line_error(capsys, "none.safetensors", "does not exist")

    assert main([]) == 2
    assert_one_line_error(capsys, "COMMAND")


def test_a_joblib_model_file_needs_allow_pickle_and_then_scores_like_the_safe_one(
    mvtec_root, model_path, tmp_path, capsys
):
    pickled = tmp_path / "widgets.joblib"
    image = str(mvtec_root / "widgets" / "test" / "blob" / "012.png")
    assert main(["--quiet", *fit_args(mvtec_root, pickled, *TINY)]) == 0
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
    assert main(["export", str(tmp_path / name), str(tmp_path / "m.onnx")]) == 2
    assert_one_line_error(capsys, name, "is not a safe (safetensors) model file")
    assert not (tmp_path / "PWNED").exists()


def test_a_safe_model_file_is_recognised_by_its_content_not_its_name(
    model_path, tmp_path, mvtec_root, capsys
):
    renamed = tmp_path / "widgets.model"
    renamed.write_bytes(model_path.read_bytes())
    image = str(mvtec_root / "widgets" / "test" / "blob" / "012.png")
    assert main(["--quiet", "predict", str(renamed), image]) == 0


def test_the_documented_paper_config_is_paper_params_and_fit_accepts_it(tmp_path, capsys):
    from pathlib import Path

    from sksimplenet import PAPER_PARAMS
    from sksimplenet.config import read_config

    docs = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text(encoding="utf-8")
    start = docs.index("as `paper.json`:\n\n```json\n") + len("as `paper.json`:\n\n```json\n")
    config = tmp_path / "paper.json"
    config.write_text(docs[start : docs.index("```", start)])
    assert read_config(config) == PAPER_PARAMS

    missing = tmp_path / "no_such_dataset"
    assert main(["fit", str(missing), "--layout", "folder", "--config", str(config), "-o", "m"]) == 2
    assert_one_line_error(capsys, str(missing), "does not exist")  # the parameters passed


def test_precision_is_a_fit_option_and_a_scoring_override(mvtec_root, model_path, tmp_path, capsys):
    from sksimplenet import cli, precision

    assert cli.PRECISIONS == precision.PRECISIONS
    model = tmp_path / "bf16.safetensors"
    assert main(["--quiet", *fit_args(mvtec_root, model, *TINIER, "--precision", "bfloat16")]) == 0
    assert load(model).precision == "bfloat16"
    images = [str(path) for path in sorted((mvtec_root / "widgets" / "test" / "blob").glob("*.png"))]
    capsys.readouterr()
    assert (
        main(["--quiet", "predict", str(model_path), *images, "--precision", "bfloat16", "--device", "cpu"])
        == 0
    )
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    expected = -load(model_path).set_params(precision="bfloat16").score_samples(images)
    np.testing.assert_allclose([float(row["score"]) for row in rows], expected, rtol=1e-5)


# ----------------------------------------------------------------------------- operating point, threads
def test_calibrate_sets_the_threshold_from_normal_images_a_labelled_set_or_the_held_out_ones(
    mvtec_root, model_path, tmp_path, capsys
):
    normal = mvtec_root / "widgets" / "test" / "good"
    out = tmp_path / "calibrated.safetensors"
    assert (
        main(["--quiet", "calibrate", str(model_path), str(normal), "-o", str(out), "--contamination", "0.5"])
        == 0
    )
    calibrated, original = load(out), load(model_path)
    scores = -original.score_samples(sorted(str(p) for p in normal.glob("*.png")))
    assert calibrated.threshold_ == pytest.approx(np.quantile(scores, 0.5), rel=1e-5)
    assert f"| image | {original.threshold_:.6g} | {calibrated.threshold_:.6g} |" in capsys.readouterr().out
    labelled = ["--layout", "mvtec", "--category", "widgets", "--max-fpr", "0", "--pixel"]
    assert main(["--quiet", "calibrate", str(model_path), str(mvtec_root), "-o", str(out), *labelled]) == 0
    assert load(out).calibration_["method"] == "max_fpr" and load(out).pixel_threshold_ is not None
    assert main(["--quiet", "calibrate", str(model_path), "-o", str(out), "--contamination", "0.5"]) == 0
    assert load(out).calibration_["images"] == "held-out training images"
    capsys.readouterr()
    assert main(["calibrate", str(model_path), str(normal), "-o", str(out), "--max-fpr", "0.1"]) == 2
    assert_one_line_error(capsys, "--max-fpr and --min-recall need a labelled set")


def test_threshold_and_batch_size_options_of_predict_and_a_recursive_folder(mvtec_root, model_path, capsys):
    test_folder = mvtec_root / "widgets" / "test"  # good/ and blob/ below it
    options = ["--quiet", "predict", str(model_path), str(test_folder), "--recursive", "--device", "cpu"]
    assert main([*options, "--threshold=-1e9", "--batch-size", "2"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 6 and all(row["label"] == "-1" for row in rows)  # everything above -1e9
    assert main(options) == 0
    assert [row["score"] for row in csv.DictReader(io.StringIO(capsys.readouterr().out))] == [
        row["score"] for row in rows
    ]  # the batch size changes nothing but speed (to the printed digits)
    assert main(["--quiet", "predict", str(model_path), str(test_folder)]) == 2  # no images directly in it
    assert_one_line_error(capsys, "no image files in")


def test_threads_set_pytorch_threads_and_mps_is_named_when_missing(
    mvtec_root, model_path, tmp_path, capsys, monkeypatch
):
    import torch

    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    model = tmp_path / "m.safetensors"
    image = str(mvtec_root / "widgets" / "test" / "blob" / "012.png")
    assert main(["--quiet", "--threads", "1", "predict", str(model_path), image]) == 0
    assert calls == [1]
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert main(["--quiet", *fit_args(mvtec_root, model, *TINIER, "--device", "mps")]) == 2
    assert_one_line_error(capsys, "device='mps' was requested but MPS (Apple GPUs) is not available")


def test_drawing_commands_without_matplotlib_fail_before_any_work(
    mvtec_root, model_path, tmp_path, capsys, monkeypatch
):
    from sksimplenet import persistence

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setattr(persistence, "load", lambda *a, **k: pytest.fail("the model was loaded"))
    image = str(mvtec_root / "widgets" / "test" / "blob" / "012.png")
    assert main(["predict", str(model_path), image, "-o", str(tmp_path / "out")]) == 2
    assert_one_line_error(capsys, "matplotlib", "pip install")
    dataset = [str(mvtec_root), "--layout", "mvtec", "--category", "widgets"]
    assert main(["evaluate", str(model_path), *dataset, "--report", str(tmp_path / "r")]) == 2
    assert_one_line_error(capsys, "matplotlib")
    assert main(["demo", "-o", str(tmp_path / "demo")]) == 2
    assert_one_line_error(capsys, "matplotlib")


def test_fit_with_a_labelled_share_and_evaluate_leaving_those_images_out(mvtec_root, tmp_path, capsys):
    path = tmp_path / "labelled.safetensors"
    assert main(["--quiet", *fit_args(mvtec_root, path, *TINY, "--labelled-share", "0.34")]) == 0
    detector = load(path)
    assert detector.n_labelled_anomalies_ == 1 and detector.n_labelled_masks_ == 1
    assert detector.provenance_["split"]["labelled_share"] == 0.34
    out = tmp_path / "metrics.json"
    evaluate = ["evaluate", str(path), str(mvtec_root), "--layout", "mvtec", "--category", "widgets"]
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no test image was a training image
        assert main([*evaluate, "--json", str(out), "--device", "cpu"]) == 0
    assert "leaving out the 1 test images trained on as labelled defects" in capsys.readouterr().err
    per_type = json.loads(out.read_text())["per_type"]
    assert sum(row["n_images"] for row in per_type.values()) == 5  # 6 test images, 1 trained on


def test_fit_with_a_folder_of_labelled_defects(mvtec_root, tmp_path):
    defects = tmp_path / "rejects"
    defects.mkdir()
    blob = mvtec_root / "widgets" / "test" / "blob"
    masks = mvtec_root / "widgets" / "ground_truth" / "blob"
    shutil.copy(blob / "011.png", defects / "011.png")
    shutil.copy(masks / "011_mask.png", defects / "011_mask.png")
    shutil.copy(blob / "012.png", defects / "012.png")  # no mask: its label alone
    path = tmp_path / "rejects.safetensors"
    assert main(["--quiet", *fit_args(mvtec_root, path, *TINY, "--anomalous", str(defects))]) == 0
    detector = load(path)
    assert (detector.n_labelled_anomalies_, detector.n_labelled_masks_) == (2, 1)
    assert [Path(e["path"]).name for e in detector.provenance_["anomalous_files"]] == ["011.png", "012.png"]
