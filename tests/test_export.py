"""ONNX export: the exported graph, run by onnxruntime, scores as the PyTorch model does."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.exceptions import NotFittedError

from sksimplenet import SimpleNetDetector
from sksimplenet.datasets import make_synthetic
from sksimplenet.export import export_metadata, export_onnx, prepare_images

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

SMALL = dict(epochs=1, hidden_dim=64, device="cpu", random_state=0)
BACKBONES = {
    "resnet18": dict(backbone="resnet18", weights=None, resize=72, crop_size=64, contamination=0.1),
    "efficientnet_lite0": dict(backbone="efficientnet_lite0", resize=64, crop_size=None),
}


DOCS = Path(__file__).resolve().parents[1] / "docs" / "deployment.md"


def documented_prepare(resize, crop_size):
    """The ``prepare`` function of docs/deployment.md (Pillow and NumPy only), as printed there."""
    text = DOCS.read_text(encoding="utf-8")
    start = text.index("def prepare(path):")
    source = text[start : text.index("\n\n\n", start)]
    namespace = {"np": np, "Image": Image, "resize": resize, "crop_size": crop_size}
    exec(source, namespace)
    return namespace["prepare"]


@pytest.fixture(scope="module")
def data():
    images, labels, _ = make_synthetic(6, 3, texture="grid", size=80, random_state=0)
    return images[:6], images


@pytest.fixture(scope="module", params=sorted(BACKBONES))
def exported(request, data, tmp_path_factory):
    train, _ = data
    detector = SimpleNetDetector(**BACKBONES[request.param], **SMALL).fit(train)
    path = tmp_path_factory.mktemp("onnx") / f"{request.param}.onnx"
    returned = detector.export_onnx(path)
    assert returned == path and path.is_file()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return detector, path, session


@pytest.mark.parametrize("batch", [1, 3])
def test_onnxruntime_matches_pytorch(exported, data, batch):
    detector, _, session = exported
    _, images = data
    chosen = images[[0, 7, 8][:batch]]  # a normal image first, then defective ones
    inputs = prepare_images(detector, chosen)
    assert inputs.shape == (batch, 3, 64, 64) and inputs.dtype == np.float32

    maps, scores = session.run(["anomaly_map", "score"], {"images": inputs})
    assert maps.shape == (batch, 64, 64) and scores.shape == (batch,)
    with torch.no_grad():
        ref_maps, ref_scores = detector.model_(torch.from_numpy(inputs))
    np.testing.assert_allclose(maps, ref_maps.numpy(), rtol=0, atol=1e-4)
    np.testing.assert_allclose(scores, ref_scores.numpy(), rtol=0, atol=1e-4)
    # The same numbers as the estimator's own API.
    np.testing.assert_allclose(maps, detector.anomaly_map(chosen), rtol=0, atol=1e-4)
    np.testing.assert_allclose(scores, -detector.score_samples(chosen), rtol=0, atol=1e-4)
    np.testing.assert_array_equal(np.where(scores > -detector.offset_, -1, 1), detector.predict(chosen))


def test_graph_signature_and_metadata(exported):
    detector, path, session = exported
    (graph_input,) = session.get_inputs()
    assert graph_input.name == "images"
    assert graph_input.shape == ["batch", 3, "height", "width"]  # batch and size dynamic
    outputs = {o.name: o.shape for o in session.get_outputs()}
    assert outputs == {"anomaly_map": ["batch", "height", "width"], "score": ["batch"]}

    meta = session.get_modelmeta().custom_metadata_map
    assert meta == {**export_metadata(detector), "dynamic_size": "true"}
    assert (int(meta["input_height"]), int(meta["input_width"])) == (64, 64)
    assert json.loads(meta["resize"]) == detector.resize
    assert json.loads(meta["crop_size"]) == detector.crop_size
    assert float(meta["outlier_threshold"]) == -detector.offset_
    assert meta["backbone"] == detector.backbone
    assert tuple(json.loads(meta["layers"])) == detector.model_.extractor.layers
    onnx.checker.check_model(onnx.load(str(path)))


@pytest.mark.parametrize("size", [(64, 64), (96, 80), (57, 71)], ids=["training", "larger", "odd"])
def test_the_graph_scores_other_sizes_as_the_model_does(exported, size):
    detector, _, session = exported
    images = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(3))
    maps, scores = session.run(["anomaly_map", "score"], {"images": images.numpy()})
    with torch.no_grad():
        ref_maps, ref_scores = detector.model_(images)
    assert maps.shape == (2, *size)
    np.testing.assert_allclose(maps, ref_maps.numpy(), rtol=0, atol=1e-4)
    np.testing.assert_allclose(scores, ref_scores.numpy(), rtol=0, atol=1e-4)


def test_a_backbone_with_sizes_of_its_own_gives_a_fixed_size_graph(data, tmp_path, monkeypatch):
    from sksimplenet import export

    monkeypatch.setattr(export, "_scores_at_other_sizes", lambda *args: False)
    detector = SimpleNetDetector(**BACKBONES["efficientnet_lite0"], **SMALL).fit(data[0])
    with pytest.warns(UserWarning, match=r"takes inputs of input_size_ = \(64, 64\) only"):
        detector.export_onnx(tmp_path / "fixed.onnx")
    session = ort.InferenceSession(str(tmp_path / "fixed.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == ["batch", 3, 64, 64]
    assert session.get_modelmeta().custom_metadata_map["dynamic_size"] == "false"


def test_threshold_recorded_for_a_fitted_offset(exported):
    detector, _, session = exported
    meta = session.get_modelmeta().custom_metadata_map
    assert float(meta["outlier_threshold"]) == detector.threshold_ == -detector.offset_


def test_documented_recipe_without_the_package(exported, tmp_path):
    """The preprocessing of docs/deployment.md (Pillow and NumPy only) gives the detector's numbers."""
    detector, _, session = exported
    # Landscape and portrait images when the detector crops (any size then fits), else square.
    shapes = [(90, 120), (100, 80)] if detector.crop_size is not None else [(80, 80), (80, 80)]
    paths = []
    for i, (h, w) in enumerate(shapes):
        images, _, _ = make_synthetic(0, 1, texture="dots", size=max(h, w), random_state=i)
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(images[0][:h, :w]).save(paths[-1])

    meta = session.get_modelmeta().custom_metadata_map
    prepare = documented_prepare(json.loads(meta["resize"]), json.loads(meta["crop_size"]))
    batch = np.stack([prepare(path) for path in paths])
    assert batch.shape == (2, 3, int(meta["input_height"]), int(meta["input_width"]))
    maps, scores = session.run(None, {"images": batch})

    files = [str(p) for p in paths]
    np.testing.assert_allclose(scores, -detector.score_samples(files), rtol=0, atol=1e-4)
    np.testing.assert_allclose(maps, detector.anomaly_map(files), rtol=0, atol=1e-4)


def test_export_leaves_the_detector_unchanged(exported, data, tmp_path):
    detector, _, _ = exported
    _, images = data
    before = detector.score_samples(images[:2])
    state = {k: v.clone() for k, v in detector.model_.state_dict().items()}
    export_onnx(detector, tmp_path / "again.onnx", opset=18)
    assert (tmp_path / "again.onnx").is_file()
    np.testing.assert_array_equal(detector.score_samples(images[:2]), before)
    for key, value in detector.model_.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert not detector.model_.training


def test_export_errors(tmp_path, exported):
    with pytest.raises(NotFittedError):
        export_onnx(SimpleNetDetector(), tmp_path / "x.onnx")
    detector = exported[0]
    for opset in (12, 17.0, "17", True):
        with pytest.raises(ValueError, match="opset"):
            export_onnx(detector, tmp_path / "x.onnx", opset=opset)
    assert not (tmp_path / "x.onnx").exists()


def test_prepare_images_sizes(exported):
    detector = exported[0]
    images = [np.zeros((80, 80, 3), np.uint8), np.zeros((80, 120, 3), np.uint8)]
    if detector.crop_size is not None:  # the centre crop makes every image 64 x 64
        assert prepare_images(detector, images).shape == (2, 3, 64, 64)
    else:
        with pytest.raises(ValueError, match="different sizes"):
            prepare_images(detector, images)
        with pytest.raises(ValueError, match=r"\(64, 96\).*exported graph takes \(64, 64\)"):
            prepare_images(detector, images[1:])


def test_a_detector_scoring_in_bfloat16_exports_a_float32_graph(exported, data, tmp_path):
    detector, _, _ = exported
    _, images = data
    detector.set_params(precision="bfloat16").score_samples(images[:1])  # its model now runs in bfloat16
    try:
        path = detector.export_onnx(tmp_path / "bf16.onnx")
        assert detector.model_.precision == "bfloat16"  # the detector itself is unchanged
    finally:
        detector.set_params(precision="float32")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = prepare_images(detector, images[:2])
    _, scores = session.run(["anomaly_map", "score"], {"images": inputs})
    with torch.no_grad():
        detector.model_.precision = "float32"
        _, reference = detector.model_(torch.from_numpy(inputs))
    np.testing.assert_allclose(scores, reference.numpy(), rtol=0, atol=1e-4)
