"""One Python call per job: evaluate a labelled set, score files; the results write themselves."""

import csv
import json

import numpy as np
import pytest
from PIL import Image

from sksimplenet import evaluate, metrics
from sksimplenet.inspection import Evaluation, FileError, predict_files


@pytest.fixture(scope="module")
def files(stripes, tmp_path_factory):
    """The stripes as PNG files: 20 training images, then 10 normal and 15 defective test images,
    the defective ones in a subfolder, and one truncated file among the test images."""
    images, labels, masks = stripes
    root = tmp_path_factory.mktemp("files")
    (root / "defects").mkdir()
    paths = []
    for index, image in enumerate(images):
        folder = root / "defects" if labels[index] == -1 else root
        paths.append(folder / f"{index:02d}.png")
        Image.fromarray(image).save(paths[-1])
    data = paths[20].read_bytes()
    broken = root / "defects" / "99_truncated.png"
    broken.write_bytes(data[: len(data) // 2])
    return root, [str(path) for path in paths], broken


def test_evaluate_measures_what_the_metrics_module_computes(fitted, stripes):
    images, labels, masks = stripes
    result = evaluate(fitted, images[20:], labels[20:], masks=list(masks[20:]), defect_types=None)
    maps, scores = fitted.anomaly_map(images[20:], return_scores=True)
    pixel_masks = metrics.masks_at_map_resolution(
        list(masks[20:]), labels[20:], fitted.resize, fitted.crop_size, [m.shape for m in maps]
    )
    expected = metrics.evaluate(labels[20:], scores, pixel_masks, list(maps))
    assert result.metrics == pytest.approx(expected)
    assert result.at_threshold == metrics.threshold_metrics(labels[20:], scores, fitted.threshold_)
    assert set(result.per_type) == {"normal", "anomalous"}
    assert [row["predicted"] for row in result.per_image] == fitted.predict(images[20:]).tolist()
    assert result.model["backbone"] == "efficientnet_lite0"
    assert result.to_markdown().startswith("| metric | value |")


def test_an_evaluation_writes_json_csv_and_html(fitted, stripes, tmp_path):
    images, labels, masks = stripes
    result = evaluate(fitted, images[20:], labels[20:], masks=list(masks[20:]))
    document = json.loads(result.to_json(tmp_path / "out" / "metrics.json").read_text())
    assert document == json.loads(json.dumps({"metrics": result.metrics, "at_threshold": result.at_threshold,
                                              "per_type": result.per_type}))  # fmt: skip
    with open(result.to_csv(tmp_path / "per_image.csv"), newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [float(row["score"]) for row in rows] == pytest.approx(result.scores.tolist())
    assert result.to_html(tmp_path / "report").name == "report.html"


def test_evaluating_training_files_warns_naming_them(fitted, files):
    root, paths, _ = files
    detector = fitted.__class__(**fitted.get_params()).fit(paths[:20])
    labels = np.r_[np.ones(3), -np.ones(3)]
    with pytest.warns(UserWarning, match=r"1 of the 6 test images were training images") as caught:
        evaluate(detector, [paths[0], *paths[21:23], *paths[30:33]], labels, keep_maps=False)
    assert paths[0] in str(caught[0].message)


def test_evaluation_without_maps_keeps_none_and_scores_the_same(fitted, stripes):
    images, labels, _ = stripes
    result = evaluate(fitted, images[20:], labels[20:], keep_maps=False)
    assert result.maps is None and result.pro_curve is None
    np.testing.assert_allclose(result.scores, -fitted.score_samples(images[20:]))


def test_from_predictions_takes_scores_computed_elsewhere():
    result = Evaluation.from_predictions([1, 1, -1, -1], [0.1, 0.6, 0.7, 0.2], 0.5)
    assert (result.at_threshold["fp"], result.at_threshold["tp"]) == (1, 1)
    assert result.names == ["image 0", "image 1", "image 2", "image 3"]
    assert result.metrics["image_auroc"] == 0.75  # 3 of the 4 (normal, anomalous) pairs in order


def test_predict_files_scores_every_readable_file_and_names_the_other(fitted, files):
    root, paths, broken = files
    with predict_files(fitted, [root], recursive=True) as predictions:
        records = {record.path: record for record in predictions.records}
    assert len(records) == 46 and predictions.n_failed == 1
    assert records[str(broken)].status == "error" and str(broken) in records[str(broken)].error
    scored = paths[20:]
    expected = -fitted.score_samples(scored)
    # Equal to rounding: a chunk with a bad file is scored again image by image (other batches).
    np.testing.assert_allclose([records[path].score for path in scored], expected, rtol=1e-5, atol=1e-5)
    labels = [records[path].label for path in scored]
    assert labels == fitted.predict(scored).tolist()
    # Without recursion, the folder's own files only.
    with predict_files(fitted, [root]) as flat:
        assert len(flat.records) == 30 and flat.n_failed == 0
    with pytest.raises(FileError, match="99_truncated.png"):
        predict_files(fitted, [str(broken)], fail_fast=True)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        predict_files(fitted, [root / "missing.png"])


def test_predictions_write_overlays_masks_maps_and_a_table(fitted, files, tmp_path):
    pytest.importorskip("matplotlib")
    root, paths, broken = files
    chosen = [paths[25], paths[40], str(broken)]
    with predict_files(fitted, chosen, keep_maps=True) as predictions:
        scratch = predictions.records[0].map_file.parent
        written = predictions.write(tmp_path, format="json", masks=True, maps=True, model="m.safetensors")
        anomaly_map = predictions.records[1].anomaly_map()
    assert not scratch.exists()  # the temporary maps went with the results
    document = json.loads(written.read_text())
    assert document["model"] == "m.safetensors" and document["threshold"] == fitted.threshold_
    first, second, failed = document["images"]
    assert first["overlay"] == "25_overlay.png" and second["mask"] == "40_mask.png"
    assert failed["status"] == "error" and failed["overlay"] is None
    np.testing.assert_array_equal(np.load(tmp_path / "40_map.npy"), anomaly_map)
    with Image.open(tmp_path / "40_mask.png") as mask:
        np.testing.assert_array_equal(np.asarray(mask) > 0, anomaly_map >= fitted.threshold_)
    low, high = document["color_range"]
    assert high - fitted.threshold_ == pytest.approx(fitted.threshold_ - low)
    with pytest.raises(ValueError, match="keep_maps=True"):
        predict_files(fitted, chosen[:1]).write(tmp_path)
