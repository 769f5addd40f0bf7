"""Each benchmark script runs, end to end, on a tiny generated data set (seconds, not figures)."""

import argparse
import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sksimplenet.datasets import make_synthetic

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
SCRIPTS = ("quality", "speed", "precision", "resources", "gpu", "scaling")
HELPERS = ("common", "timing")


@pytest.fixture
def benchmark(monkeypatch):
    """Import a benchmark script afresh, with the benchmarks folder on the path."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    for name in (*SCRIPTS, *HELPERS):
        monkeypatch.delitem(sys.modules, name, raising=False)
    return importlib.import_module


@pytest.fixture(scope="module")
def tiny_mvtec(tmp_path_factory):
    """A category in the MVTec AD layout: 12 training images, 4 normal and 4 defective test images."""
    root = tmp_path_factory.mktemp("mvtec") / "widgets"
    images, labels, masks = make_synthetic(16, 4, texture="stripes", size=64, random_state=3)
    folders = {"train": root / "train" / "good", "good": root / "test" / "good", "bad": root / "test" / "bad"}
    for folder in [*folders.values(), root / "ground_truth" / "bad"]:
        folder.mkdir(parents=True)
    for index, image in enumerate(images):
        folder = folders["train"] if index < 12 else folders["good"] if labels[index] == 1 else folders["bad"]
        Image.fromarray(image).save(folder / f"{index:02d}.png")
        if labels[index] == -1:
            Image.fromarray(masks[index].astype(np.uint8) * 255).save(
                root / "ground_truth" / "bad" / f"{index:02d}_mask.png"
            )
    return root


def test_every_script_is_one_of_the_questions_and_has_a_main(benchmark):
    scripts = {path.stem for path in BENCHMARKS.glob("*.py")}
    assert scripts == {*SCRIPTS, *HELPERS}
    for name in SCRIPTS:
        assert callable(benchmark(name).main), name


def test_quality_fits_scores_and_measures_the_reference(benchmark, tiny_mvtec, tmp_path, capsys):
    quality = benchmark("quality")
    out = tmp_path / "rows.json"
    quality.main(
        ["--datasets", str(tiny_mvtec), "--seeds", "0", "--set", "epochs=1", "--set", "resize=(64, 64)"]
        + ["--variants", "defaults", "no synthetic defects", "--json", str(out)]
    )
    rows = json.loads(out.read_text())["rows"]
    assert [row["variant"] for row in rows] == ["defaults", "no synthetic defects"]
    for row in rows:
        assert 0 <= row["image_auroc"] <= 1 and 0 <= row["pixel_auroc"] <= 1
        assert 0 <= row["fpr"] <= 1 and row["epochs"] == 1
    # The generated defects are plain: the reference finds them.
    assert rows[0]["reference_image_auroc"] >= 0.9 and rows[0]["reference_pixel_auroc"] >= 0.8
    assert "| widgets | defaults | 1 |" in capsys.readouterr().out


def test_the_reference_embeds_patches_as_the_official_unfold_does(benchmark, tiny_mvtec):
    import torch

    from sksimplenet.backbones import build_feature_extractor
    from sksimplenet.image_io import load_image, preprocess

    path = sorted((tiny_mvtec / "train" / "good").iterdir())[0]
    features = benchmark("common").layer_features([path], resize=(64, 64)).float()
    with torch.inference_mode():
        maps = build_feature_extractor("efficientnet_lite0", None)(
            preprocess(load_image(path), (64, 64), None)[None]
        )
    levels = []
    for level in maps:  # each 3 x 3 patch unfolded with zero padding, averaged, resized to the first
        n, c, h, w = level.shape
        mean = torch.nn.functional.unfold(level, 3, padding=1).view(n, c, 9, h, w).mean(2)
        levels.append(torch.nn.functional.interpolate(mean, size=maps[0].shape[-2:], mode="bilinear"))
    expected = torch.cat(levels, 1).permute(0, 2, 3, 1)
    torch.testing.assert_close(features, expected, atol=2e-2, rtol=1e-2)  # float16 storage


def test_speed_times_scoring_against_the_backbone(benchmark, capsys):
    benchmark("speed").main(
        ["--quick", "--parts", "a", "b", "--batch", "2", "--size", "64", "--files", "4"]
        + ["--backbones", "efficientnet_lite0", "--threads", "1"]
    )
    out = capsys.readouterr().out
    assert "ratio (a)" in out and "max |folded - unfolded|" in out and "(b) input pipeline" in out


def test_speed_measures_each_lever_of_the_scoring_path(benchmark, capsys):
    args = argparse.Namespace(
        backbone="wide_resnet50_2", layers="layer2,layer3", weights=None, size=32, precisions="float32"
    )
    rows = benchmark("speed").levers(args, rounds=1, compile_backbone=False)
    batches = [("float32", b) for b in (4, 8, 16, 32)] + [("int8", 8)]
    assert [(row["precision"], row["batch"]) for row in rows] == batches
    assert all(row["images_per_second"] > 0 and row["backbone_gmadd_per_second"] > 0 for row in rows)
    assert "of a 2048² product" in capsys.readouterr().out


def test_speed_needs_a_checkout_of_the_official_code(benchmark, tmp_path):
    with pytest.raises(SystemExit, match="no simplenet.py and common.py"):
        benchmark("speed").import_official(tmp_path)


def test_resources_measure_memory_and_fit_time(benchmark, capsys):
    benchmark("resources").main(
        ["--quick", "--parts", "a", "b", "--images", "4", "--size", "64", "--threads", "1"]
        + ["--configs", "effnet-lite0, in memory", "--backbones", "efficientnet_lite0"]
    )
    out = capsys.readouterr().out
    assert "effnet-lite0, in memory" in out and "naive / cached" in out


def test_resources_splits_a_default_fit_into_its_parts(benchmark, tiny_mvtec, capsys):
    resources = benchmark("resources")
    parts = dict(resources.fit_profile(str(tiny_mvtec), {"epochs": 2, "resize": (64, 64)}))
    top_level = [
        value for label, value in parts.items() if not label.startswith(" ") and label != "whole fit"
    ]
    assert sum(top_level) == pytest.approx(parts["whole fit"])
    assert 0 < parts["  of which synthetic defects"] < parts["features of the images and synthetic defects"]
    assert 0 < parts["  of which the held-out criterion"] < parts["training (steps and held-out criterion)"]
    assert parts["the rest (checks, BatchNorm pass, threshold)"] >= 0
    # The timers are removed afterwards: the library is as it was.
    assert resources.sksimplenet.detector.build_training_set.__name__ == "build_training_set"


def test_precision_compares_precisions_on_a_data_set(benchmark, tiny_mvtec, capsys):
    precision = benchmark("precision")
    precision.main(
        ["--datasets", str(tiny_mvtec), "--seeds", "0", "--skip-speed", "--precisions", "bfloat16"]
        + ["--set", "epochs=1", "--set", "resize=(64, 64)"]
    )
    assert "all splits" in capsys.readouterr().out


def test_precision_measures_an_int8_backbone_in_fit_and_scoring(benchmark, tiny_mvtec, capsys):
    benchmark("precision").main(
        ["--datasets", str(tiny_mvtec), "--seeds", "0", "--skip-speed", "--precisions", "int8"]
        + ["--set", "epochs=1", "--set", "resize=(64, 64)"]
    )
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert any(row[2:3] == ["int8"] and 0 <= float(row[3]) <= 1 for row in rows if len(row) > 3)


def test_int8_body_computes_same_padding_statically_and_keeps_its_size(benchmark):
    from sksimplenet.backbones import build_feature_extractor

    common = benchmark("common")
    body = build_feature_extractor("efficientnet_lite0", None).body
    images = torch.randn(2, 3, 67, 50)  # odd and even sizes: asymmetric padding at stride 2
    with torch.no_grad():
        expected, static = body(images), common.static_same_padding(body, images)(images)
        assert expected.keys() == static.keys()
        for name in expected:
            torch.testing.assert_close(static[name], expected[name], rtol=1e-3, atol=1e-4)
        int8 = common.Int8Body(body)
        quantised = int8(images)
        for name in expected:  # int8 rounding, not another network
            correlation = torch.corrcoef(torch.stack([quantised[name].flatten(), expected[name].flatten()]))
            assert correlation[0, 1] > 0.9
        with pytest.raises(ValueError, match="quantised for"):
            int8(torch.randn(1, 3, 64, 64))


def test_gpu_runs_its_parts_on_the_cpu_when_asked(benchmark, capsys):
    benchmark("gpu").main(
        ["--quick", "--device", "cpu", "--backbone", "efficientnet_lite0", "--size", "64", "--epochs", "2"]
        + ["--precisions", "float32"]
    )
    out = capsys.readouterr().out
    assert "EXTRAPOLATION" in out and "latency at batch 1" in out


def test_gpu_says_it_needs_a_gpu(benchmark, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="needs an NVIDIA GPU"):
        benchmark("gpu").main([])


def test_quality_labelled_regime_tests_every_share_on_one_test_set(
    benchmark, tiny_mvtec, tmp_path, capsys, monkeypatch
):
    quality = benchmark("quality")
    embedded = []
    features = quality.layer_features
    monkeypatch.setattr(
        quality, "layer_features", lambda paths, **kw: embedded.append(list(paths)) or features(paths, **kw)
    )
    out = tmp_path / "rows.json"
    quality.main(
        ["--datasets", str(tiny_mvtec), "--seeds", "0", "--set", "epochs=1", "--set", "resize=(64, 64)"]
        + ["--labelled-shares", "0", "0.5", "--json", str(out)]
    )
    rows = json.loads(out.read_text())["rows"]
    assert [(row["share"], row["n_labelled"]) for row in rows] == [(0.0, 0), (0.5, 2)]
    for row in rows:
        assert 0 <= row["image_auroc"] <= 1 and 0 <= row["pixel_auroc"] <= 1 and 0 <= row["fpr"] <= 1
    assert rows[0]["reference_image_auroc"] == rows[1]["reference_image_auroc"]  # one test set
    for row in rows:  # the detector's own rule (top 1 %) is one of the rules measured on its maps
        assert row["image_auroc_by_rule"]["0.01"] == pytest.approx(row["image_auroc"], abs=1e-9)
    bank, test = embedded  # the reference's bank: normal training images; its test: never labelled
    assert all("/train/good/" in path for path in bank) and len(bank) == 12
    assert len(test) == 6 and not set(test) & set(bank)
    assert "| widgets | 0.5 | True | 1 |" in capsys.readouterr().out
    quality.main(["--from-json", str(out), "--figure", str(tmp_path / "curve.png")])
    assert "| widgets | 0.5 | True | 1 |" in capsys.readouterr().out  # the same table from the file
    assert Image.open(tmp_path / "curve.png").size == (1080, 408)


def test_labelled_runs_with_fewer_shares_test_on_the_tables_images(benchmark):
    quality = benchmark("quality")
    split = {
        "train_paths": ["normal.png"],
        "test_paths": [f"{i:02d}.png" for i in range(40)],
        "test_labels": [1] * 20 + [-1] * 20,
        "test_categories": ["good"] * 20 + ["crack"] * 10 + ["blowhole"] * 10,
    }
    tables = quality.labelled_test_set(split, [0, 0.05, 0.2], seed=1)["test_paths"]
    assert len(tables) == 36  # 20 % of each defect type moved into training
    assert quality.labelled_test_set(split, [0, 0.05], seed=1)["test_paths"] == tables
    assert len(quality.labelled_test_set(split, [0.5], seed=1)["test_paths"]) == 30


def test_leave_one_type_out_compares_with_one_unsupervised_fit_on_the_same_images(
    benchmark, tiny_mvtec, tmp_path, capsys
):
    out = tmp_path / "rows.json"
    benchmark("quality").main(
        ["--datasets", str(tiny_mvtec), "--seeds", "0", "--set", "epochs=1", "--set", "resize=(64, 64)"]
        + ["--labelled-shares", "0.5", "--unseen-types", "bad", "--json", str(out)]
    )
    (row,) = json.loads(out.read_text())["rows"]
    # The only type is never labelled: that fit learns from normal images only, so it must
    # score exactly as the unsupervised fit does on the same images.
    assert row["unseen_type"] == "bad" and row["n_labelled"] == 0
    assert row["unseen_image_auroc"] == row["unsupervised_unseen_image_auroc"] == row["image_auroc"]
    assert row["unsupervised_image_auroc"] == row["image_auroc"]
    assert "| bad | 0.5 | 1 |" in capsys.readouterr().out


@pytest.fixture
def tiny_mtd(tmp_path):
    """Six normal tiles and four defect images in MTD's folder layout."""
    images, _, _ = make_synthetic(10, 0, texture="noise", size=48, random_state=5)
    for folder in ("MT_Free/Imgs", "MT_Crack/Imgs"):
        (tmp_path / folder).mkdir(parents=True)
    for index, image in enumerate(images):
        folder = "MT_Free/Imgs" if index < 6 else "MT_Crack/Imgs"
        Image.fromarray(image).save(tmp_path / folder / f"{index}.jpg")
    return tmp_path


def test_scaling_reaches_larger_sets_with_the_flips_and_rotations_of_each_tile(benchmark, tiny_mtd):
    scaling = benchmark("scaling")
    images = scaling.tiles(tiny_mtd, 48)
    assert images.shape == (48, 224, 224, 3)
    np.testing.assert_array_equal(images[6], np.rot90(images[0]))
    np.testing.assert_array_equal(images[24], images[0][:, ::-1])
    assert len({image.tobytes() for image in images}) == 48
    with pytest.raises(SystemExit, match="at most 48"):
        scaling.tiles(tiny_mtd, 49)


def test_greedy_coreset_takes_the_outliers_first_and_completes_a_stopped_loop(benchmark):
    scaling = benchmark("scaling")
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(1000, 16, generator=generator) * 0.01
    features[:5] += 10 * torch.eye(16)[:5]  # five far-away patches
    indices, seconds, complete = scaling.greedy_coreset(features, 0.005)
    assert complete and sorted(indices.tolist()) == [0, 1, 2, 3, 4]
    indices, seconds, complete = scaling.greedy_coreset(features, 0.1, budget=0.0)
    assert not complete and len(set(indices.tolist())) == 100


def test_scaling_measures_every_method_in_a_fresh_process(benchmark, tiny_mtd, tmp_path, capsys):
    out = tmp_path / "rows.json"
    benchmark("scaling").main(
        ["--root", str(tiny_mtd), "--sizes", "4", "12", "--test-images", "2", "--rounds", "1"]
        + ["--set", "epochs=1", "--json", str(out)]
    )
    rows = json.loads(out.read_text())
    assert [(row["method"], row["training_images"]) for row in rows] == [
        (method, n) for method in ("simplenet", "random bank 10 %", "coreset 1 %") for n in (4, 12)
    ]
    simplenet, banks = rows[:2], rows[2:]
    assert simplenet[0]["saved_mib"] == pytest.approx(simplenet[1]["saved_mib"], rel=0.01)
    patches = {
        row["training_images"]: row["bank_patches"] for row in banks if row["method"] == "random bank 10 %"
    }
    assert patches[12] == pytest.approx(3 * patches[4], abs=1)  # a tenth of the patches: grows with the set
    assert all(row["ms_per_image"] > 0 and row["peak_mib"] > row["before_model_mib"] > 0 for row in rows)
    assert "scoring time at 12 images / at 4" in capsys.readouterr().out


def test_resources_time_one_training_step_per_step_size(benchmark, monkeypatch):
    import sksimplenet.training

    resources = benchmark("resources")
    trained = []  # (hidden width, patch fraction, precision, epochs) of each training run
    train = sksimplenet.training.train_discriminator

    def recorded(features, scaler, adaptor, discriminator, settings, **kwargs):
        trained.append(
            (discriminator.body[0].out_features, settings.patch_fraction, settings.precision, settings.epochs)
        )
        return train(features, scaler, adaptor, discriminator, settings, **kwargs)

    monkeypatch.setattr(sksimplenet.training, "train_discriminator", recorded)
    rows = dict(resources.step_cost(epochs=1, n_images=32, profile=False))
    assert list(rows) == list(resources.STEP_VARIANTS) and all(isinstance(ms, float) for ms in rows.values())
    # Each variant: a warm-up epoch, then one epoch and 1 + epochs (timed as a difference).
    assert trained == [
        (width, fraction, precision, epochs)
        for width, fraction, precision in [
            (512, 0.125, "auto"),
            (1024, 0.125, "auto"),
            (512, 0.0625, "auto"),
            (512, 0.125, "float32"),
        ]
        for epochs in (1, 1, 2)
    ]
