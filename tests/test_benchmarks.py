"""Each benchmark script runs, end to end, on a tiny generated data set (seconds, not figures)."""

import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sksimplenet.datasets import make_synthetic

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
SCRIPTS = ("quality", "speed", "precision", "resources", "gpu")
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


def test_precision_compares_precisions_on_a_data_set(benchmark, tiny_mvtec, capsys):
    precision = benchmark("precision")
    precision.main(
        ["--datasets", str(tiny_mvtec), "--seeds", "0", "--skip-speed", "--precisions", "bfloat16"]
        + ["--set", "epochs=1", "--set", "resize=(64, 64)"]
    )
    assert "all splits" in capsys.readouterr().out


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
    bank, test = embedded  # the reference's bank: normal training images; its test: never labelled
    assert all("/train/good/" in path for path in bank) and len(bank) == 12
    assert len(test) == 6 and not set(test) & set(bank)
    assert "| widgets | 0.5 | True | 1 |" in capsys.readouterr().out
