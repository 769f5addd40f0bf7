"""The runnable examples run offline, exit cleanly and print what they promise."""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(name: str, *args: str, cwd) -> str:
    completed = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    assert "Traceback" not in completed.stderr
    return completed.stdout


def value(output: str, pattern: str) -> float:
    return float(re.search(pattern, output, re.MULTILINE).group(1))


def test_quickstart_fits_scores_and_localises(tmp_path):
    output = run_example("quickstart.py", "--quick", cwd=tmp_path)

    assert "fitted on 18 normal images (2 more held out" in output
    assert "anomaly maps: shape (25, 96, 96)" in output
    assert value(output, r"^image_auroc: ([0-9.]+)$") >= 0.9
    assert value(output, r"^pixel_auroc: ([0-9.]+)$") >= 0.8
    assert "labelled defective" in output
    on_defects = value(output, r"on defect pixels: ([-0-9.]+),")
    elsewhere = value(output, r"elsewhere: ([-0-9.]+)$")
    assert on_defects > elsewhere


def test_grid_search_cross_validates_sigma(tmp_path):
    output = run_example("grid_search_sigma.py", "--quick", cwd=tmp_path)

    assert "grid search: 2 settings x 2 folds" in output
    rows = re.findall(r"^sigma=\S+\s+cross-validated AUROC ([0-9.]+)", output, re.MULTILINE)
    aurocs = [float(v) for v in rows]
    assert len(aurocs) == 2 and all(0 <= a <= 1 for a in aurocs)
    best = value(output, r"^best sigma: \S+ \(AUROC ([0-9.]+)\)$")
    assert best == max(aurocs)
    assert 0 <= value(output, r"accuracy ([0-9.]+)$") <= 1


def _detectors_built_by_mvtec_reproduction(monkeypatch, *args: str) -> list[dict]:
    """The parameters of the detectors the reproduction script builds; nothing is fitted."""
    spec = importlib.util.spec_from_file_location("mvtec_reproduction", EXAMPLES / "mvtec_reproduction.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    built = []

    class Built(Exception):
        pass

    def record(**params):
        built.append(params)
        raise Built

    monkeypatch.setattr(module, "SimpleNetDetector", record)
    monkeypatch.setattr(module, "load_mvtec", lambda root, category: {})
    with pytest.raises(Built):
        module.main(["mvtec", "--categories", "bottle", *args])
    return built


def test_mvtec_reproduction_runs_the_papers_configuration(monkeypatch):
    from sksimplenet import PAPER_PARAMS, SimpleNetDetector

    (params,) = _detectors_built_by_mvtec_reproduction(monkeypatch)

    assert {key: params[key] for key in PAPER_PARAMS} == PAPER_PARAMS
    assert params["sigma"] == 0.015 and params["image_score"] == "max"
    assert params["backbone"] == "wide_resnet50_2"
    SimpleNetDetector(**params)  # every parameter is one the estimator takes

    (defaults,) = _detectors_built_by_mvtec_reproduction(monkeypatch, "--package-defaults")
    assert not set(PAPER_PARAMS) & set(defaults)


def test_evaluate_folder_writes_the_report_in_five_lines(tmp_path):
    from PIL import Image

    from sksimplenet.datasets import make_synthetic

    script = (EXAMPLES / "evaluate_folder.py").read_text()
    code = script[script.index("folder, report = ") :].strip().splitlines()
    assert len(code) <= 8  # the job itself: load, fit, evaluate, print, write
    images, labels, masks = make_synthetic(14, 4, texture="grid", defects=("blob",), size=48, random_state=2)
    data = tmp_path / "data"
    for name in ("good", "blob", "ground_truth/blob"):
        (data / name).mkdir(parents=True)
    for index, image in enumerate(images):
        folder = data if index < 10 else data / ("good" if labels[index] == 1 else "blob")
        Image.fromarray(image).save(folder / f"{index:02d}.png")
        if labels[index] == -1:
            Image.fromarray(masks[index].astype("uint8") * 255).save(
                data / "ground_truth/blob" / f"{index:02d}.png"
            )
    output = run_example("evaluate_folder.py", str(data), str(tmp_path / "report"), cwd=tmp_path)
    assert 0 <= value(output, r"^\| pixel AUROC \| ([0-9.]+) \|$") <= 1
    assert (tmp_path / "report" / "report.html").is_file()
