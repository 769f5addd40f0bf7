"""The safe model format: ``sksimplenet.save(detector, path)`` and ``sksimplenet.load(path)``."""

import copy
import json
import os
import pickle
import re
import resource
from pathlib import Path

import joblib
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import save_file
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from torch import nn

import sksimplenet
from sksimplenet import ModelFileError, SimpleNetDetector, load, persistence, save

from .conftest import FAST, TINY

FITTED_ATTRIBUTES = (
    "offset_",
    "loss_history_",
    "n_train_images_",
    "feature_shape_",
    "input_size_",
    "fit_time_",
)


@pytest.fixture(scope="module")
def model_file(fitted, tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "detector.safetensors"
    save(fitted, path)
    return path


def read_file(path):
    with safe_open(path, framework="pt") as file:
        tensors = {name: file.get_tensor(name) for name in file.keys()}
        return json.loads(file.metadata()["sksimplenet"]), tensors


def rewrite(
    source,
    target,
    edit_header=lambda header: None,
    edit_tensors=lambda tensors: None,
    edit_document=lambda document: document,
):
    """Write ``source`` again with edits, with a valid checksum (as another version, or an
    attacker who recomputes it, would)."""
    header, tensors = read_file(source)
    edit_header(header)
    edit_tensors(tensors)
    document = edit_document(json.dumps(header, sort_keys=True))
    save_file(
        tensors,
        target,
        metadata={"sksimplenet": document, "sksimplenet.sha256": persistence._digest(document, tensors)},
    )
    return target


# ---------------------------------------------------------------------- round trips
def test_round_trip_scores_identically(fitted, stripes, model_file):
    images, _, _ = stripes
    restored = load(model_file)
    np.testing.assert_array_equal(restored.anomaly_map(images[25:35]), fitted.anomaly_map(images[25:35]))
    np.testing.assert_array_equal(restored.score_samples(images[25:35]), fitted.score_samples(images[25:35]))
    assert restored.get_params() == fitted.get_params()
    for name in FITTED_ATTRIBUTES:
        assert getattr(restored, name) == getattr(fitted, name), name
    assert restored.feature_shape_ == (12, 12, 152) and isinstance(restored.feature_shape_, tuple)


def test_loading_downloads_and_reads_no_backbone_weights(model_file, monkeypatch):
    # The backbone is rebuilt without weights; every weight comes from the file.
    from sksimplenet import _efficientnet_lite

    built_with = []
    original = _efficientnet_lite.efficientnet_lite0

    def record(pretrained=True):
        built_with.append(pretrained)
        return original(pretrained=pretrained)

    monkeypatch.setattr(_efficientnet_lite, "efficientnet_lite0", record)
    load(model_file)
    assert built_with == [False]


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_saved_file_has_the_permissions_of_any_new_file(fitted, tmp_path, umask):
    previous = os.umask(umask)
    try:
        save(fitted, tmp_path / "model.safetensors")
        joblib.dump(fitted, tmp_path / "model.joblib")
        (tmp_path / "plain.txt").write_text("x")
    finally:
        os.umask(previous)
    expected = 0o666 & ~umask
    for name in ("model.safetensors", "model.joblib", "plain.txt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == expected, name


def test_file_is_safetensors_with_json_metadata(fitted, model_file):
    header, tensors = read_file(model_file)
    assert header["format_version"] == persistence.FORMAT_VERSION == 1
    assert header["package_version"] == sksimplenet.__version__
    assert header["params"]["backbone"] == "efficientnet_lite0"
    assert header["params"]["epochs"] == FAST["epochs"]
    assert header["fitted"]["n_train_images_"] == 18
    assert header["fitted"]["feature_shape_"] == {"__tuple__": [12, 12, 152]}
    # The whole network, frozen backbone included.
    assert set(tensors) == set(fitted.model_.state_dict())
    assert any(name.startswith("extractor.body.") for name in tensors)


def test_tuples_and_paths_in_parameters_come_back_as_such(fitted, tmp_path):
    detector = copy.deepcopy(fitted).set_params(resize=(96,), weights=tmp_path / "weights.pth")
    save(detector, tmp_path / "detector.safetensors")
    params = load(tmp_path / "detector.safetensors").get_params()
    assert params["resize"] == (96,) and params["weights"] == tmp_path / "weights.pth"
    assert isinstance(params["weights"], Path)


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.block1 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.block2 = nn.Conv2d(16, 16, 3, stride=2, padding=1)

    def forward(self, x):
        return self.block2(self.block1(self.stem(x).relu()).relu())


def test_custom_backbone_module_must_be_passed_back(stripes, tmp_path):
    images, _, _ = stripes
    torch.manual_seed(0)
    detector = SimpleNetDetector(**{**FAST, "backbone": TinyNet(), "layers": ("block1", "block2")})
    save(detector.fit(images[:10]), tmp_path / "tiny.safetensors")

    with pytest.raises(ModelFileError, match=r"custom nn\.Module backbone of class 'TinyNet'.*=TinyNet"):
        load(tmp_path / "tiny.safetensors")
    # A freshly initialised module: only its architecture is used, the weights are the file's.
    restored = load(tmp_path / "tiny.safetensors", backbone=TinyNet())
    test = images[25:35]
    np.testing.assert_array_equal(restored.score_samples(test), detector.score_samples(test))
    assert isinstance(restored.backbone, TinyNet) and restored.layers == ("block1", "block2")


def test_backbone_argument_is_refused_for_named_backbones(model_file):
    with pytest.raises(ValueError, match=r"backbone= is only for files fitted with a custom nn\.Module"):
        load(model_file, backbone=TinyNet())


def test_files_written_before_batch_norm_folding_still_load(stripes, tmp_path, monkeypatch):
    # Earlier versions kept the backbone's BatchNorm layers: their files store them apart.
    images, _, _ = stripes
    with monkeypatch.context() as patch:
        patch.setattr(sksimplenet.backbones, "fold_batch_norms", lambda body: (body, {}))
        old = SimpleNetDetector(**FAST).fit(images[:20])
        save(old, tmp_path / "old.safetensors")
    _, tensors = read_file(tmp_path / "old.safetensors")
    assert any(name.endswith(".running_var") and name.startswith("extractor.") for name in tensors)
    restored = load(tmp_path / "old.safetensors")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in restored.model_.extractor.modules())
    # Equal up to the rounding of folding (absolute: some scores are near 0).
    np.testing.assert_allclose(
        restored.score_samples(images[25:35]), old.score_samples(images[25:35]), rtol=1e-4, atol=1e-5
    )
    np.testing.assert_allclose(restored.anomaly_map(images[25:27]), old.anomaly_map(images[25:27]), atol=1e-4)


# ---------------------------------------------------------------------- errors at save
def test_saving_an_unfitted_detector_raises():
    with pytest.raises(NotFittedError):
        save(SimpleNetDetector(), "never-written.safetensors")
    assert not Path("never-written.safetensors").exists()


def test_parameter_that_json_cannot_hold_is_refused_at_save(fitted, tmp_path):
    detector = copy.deepcopy(fitted).set_params(random_state=np.random.RandomState(0))
    with pytest.raises(TypeError, match=r"Cannot save parameter 'random_state': a numpy.*RandomState"):
        save(detector, tmp_path / "detector.safetensors")
    assert list(tmp_path.iterdir()) == []  # nothing half-written


# ---------------------------------------------------------------------- errors at load
def test_truncated_file(model_file, tmp_path):
    data = model_file.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match=r"cut\.safetensors' is not a readable model file: it is trunc"):
        load(tmp_path / "cut.safetensors")


def test_edited_weights_are_detected(model_file, tmp_path):
    data = bytearray(model_file.read_bytes())
    data[-100] ^= 0xFF  # one byte of the last tensor
    (tmp_path / "edited.safetensors").write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match=r"edited\.safetensors' is corrupted: its contents do not match"):
        load(tmp_path / "edited.safetensors")


def test_edited_metadata_is_detected(model_file, tmp_path):
    data = model_file.read_bytes()
    # The JSON document is a string inside the safetensors header, so its quotes are escaped.
    edited = data.replace(rb"n_train_images_\": 18", rb"n_train_images_\": 19")
    assert edited != data
    (tmp_path / "edited.safetensors").write_bytes(edited)
    with pytest.raises(ModelFileError, match="is corrupted: its contents do not match the checksum"):
        load(tmp_path / "edited.safetensors")


def test_unknown_format_version(model_file, tmp_path):
    future = rewrite(
        model_file,
        tmp_path / "future.safetensors",
        edit_header=lambda header: header.update(format_version=2),
    )
    with pytest.raises(ModelFileError, match="unknown format version 2: this .* reads format version 1"):
        load(future)


@pytest.mark.parametrize("version, loads", [("0.9.3", True), ("1.0.0", False)])
def test_package_version_rule_is_same_major_version(model_file, tmp_path, version, loads):
    other = rewrite(
        model_file,
        tmp_path / "other.safetensors",
        edit_header=lambda header: header.update(package_version=version),
    )
    if loads:
        assert load(other).n_train_images_ == 18
    else:
        with pytest.raises(ModelFileError, match=r"sksimplenet 1\.0\.0, which is incompatible .* same major"):
            load(other)


def test_missing_weight_tensor(model_file, tmp_path):
    incomplete = rewrite(
        model_file,
        tmp_path / "incomplete.safetensors",
        edit_tensors=lambda tensors: tensors.pop("discriminator.head.weight"),
    )
    with pytest.raises(ModelFileError, match=r"missing 1 weight tensors \(e\.g\. \['discriminator\.head\.w"):
        load(incomplete)


def test_missing_fitted_attribute(model_file, tmp_path):
    incomplete = rewrite(
        model_file,
        tmp_path / "incomplete.safetensors",
        edit_header=lambda header: header["fitted"].pop("threshold_"),
    )
    with pytest.raises(ModelFileError, match=r"missing the fitted attributes \['threshold_'\]"):
        load(incomplete)


def test_file_from_before_held_out_images_loads_with_what_that_fit_amounts_to(model_file, tmp_path, stripes):
    def drop_new_entries(header):
        # Such files stored offset_ (-threshold_) and none of the later entries.
        header["fitted"]["offset_"] = -header["fitted"]["threshold_"]
        for name in ("threshold_", "validation_history_", "n_held_out_images_", "held_out_indices_"):
            header["fitted"].pop(name)
        for name in ("pixel_threshold_", "calibration_", "provenance_", "decision_scores_", "labels_"):
            header["fitted"].pop(name)
        for name in ("weight_averaging", "validation_fraction"):
            header["params"].pop(name)

    older = load(rewrite(model_file, tmp_path / "older.safetensors", edit_header=drop_new_entries))
    assert older.threshold_ == load(model_file).threshold_ == -older.offset_
    assert older.pixel_threshold_ is None and older.calibration_["method"] == "quantile"
    assert older.validation_history_ == older.held_out_indices_ == [] and older.n_held_out_images_ == 0
    images = stripes[0][20:25]
    np.testing.assert_array_equal(older.predict(images), load(model_file).predict(images))


def test_files_from_before_count_padding_keep_the_rule_they_were_fitted_with(stripes, tmp_path):
    images = stripes[0]
    inside_only = SimpleNetDetector(**TINY, count_padding=False).fit(images[:12])
    save(inside_only, tmp_path / "current.safetensors")
    older = load(
        rewrite(
            tmp_path / "current.safetensors",
            tmp_path / "older.safetensors",
            edit_header=lambda header: header["params"].pop("count_padding"),
        )
    )
    assert older.count_padding is False and older.model_.count_padding is False
    np.testing.assert_array_equal(
        older.score_samples(images[30:36]), inside_only.score_samples(images[30:36])
    )
    # Scored with the new rule instead, the same weights give other scores.
    older.model_.count_padding = True
    older.model_.eval()
    assert np.abs(older.score_samples(images[30:36]) - inside_only.score_samples(images[30:36])).max() > 1e-4


def test_files_from_before_training_precision_say_and_refit_float32(model_file, tmp_path):
    older = load(
        rewrite(
            model_file,
            tmp_path / "older.safetensors",
            edit_header=lambda header: (
                header["params"].pop("training_precision"),
                header["fitted"].pop("training_dtype_"),
            ),
        )
    )
    # Models saved before the parameter were trained in float32; a clone refits them so.
    assert older.training_precision == "float32" and older.training_dtype_ == "float32"
    assert clone(older).get_params()["training_precision"] == "float32"
    assert load(model_file).training_precision == "auto"


def test_unknown_parameter(model_file, tmp_path):
    newer = rewrite(
        model_file,
        tmp_path / "newer.safetensors",
        edit_header=lambda header: header["params"].update(warp_drive=True),
    )
    with pytest.raises(ModelFileError, match=r"has parameters \['warp_drive'\] that this sksimplenet"):
        load(newer)


def test_safetensors_file_of_another_program(tmp_path):
    save_file({"weight": torch.ones(2)}, tmp_path / "other.safetensors")
    with pytest.raises(ModelFileError, match="is a safetensors file but not a sksimplenet model file"):
        load(tmp_path / "other.safetensors")


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickle_is_refused_without_being_executed(tmp_path):
    marker = tmp_path / "code-ran"
    (tmp_path / "model.safetensors").write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(ModelFileError, match="is not a safe \\(safetensors\\) model file"):
        load(tmp_path / "model.safetensors")
    assert not marker.exists()


def test_a_joblib_file_loads_only_when_pickles_are_allowed(fitted, stripes, tmp_path):
    joblib.dump(fitted, tmp_path / "model.joblib")
    with pytest.raises(ModelFileError, match="pass allow_pickle=True"):
        load(tmp_path / "model.joblib")
    restored = load(tmp_path / "model.joblib", allow_pickle=True)
    images = stripes[0][25:30]
    np.testing.assert_array_equal(restored.score_samples(images), fitted.score_samples(images))
    joblib.dump({"not": "a detector"}, tmp_path / "other.joblib")
    with pytest.raises(ModelFileError, match="holds a dict, not a fitted SimpleNetDetector"):
        load(tmp_path / "other.joblib", allow_pickle=True)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.safetensors' does not exist"):
        load(tmp_path / "nothing.safetensors")


# ---------------------------------------------------------------------- crafted files
def peak_memory_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def set_param(name, value):
    return lambda header: header["params"].update({name: value})


def set_fitted(name, value):
    return lambda header: header["fitted"].update({name: value})


def huge_integer(document):
    return re.sub(r'"n_train_images_": \d+', '"n_train_images_": ' + "9" * 5000, document)


def deeply_nested(document):
    return document.replace('"sigma": 0.3', '"sigma": ' + "[" * 100_000 + "]" * 100_000)


@pytest.mark.parametrize(
    "edits, message",
    [
        ({"edit_header": set_param("hidden_dim", 4_000_000)}, r"'discriminator\.body\.0\.weight' is torch"),
        ({"edit_header": set_param("sigma", -1)}, r"The 'sigma' parameter of SimpleNetDetector must be"),
        ({"edit_header": set_param("resize", {"__tuple__": "ab"})}, r"'resize' is a malformed tuple"),
        ({"edit_header": set_param("weights", {"__weights__": "No.SUCH"})}, r"unknown torchvision weights"),
        (
            {"edit_header": set_param("sigma", {"__ndarray__": [1], "dtype": "O", "shape": [1]})},
            r"parameter 'sigma' has an array dtype 'O'",
        ),
        (
            {"edit_header": set_param("sigma", {"__ndarray__": [1], "dtype": "<f8", "shape": [10**9]})},
            r"holds 1 values, not the 1000000000",
        ),
        ({"edit_header": set_param("backbone", {"__module__": 3})}, r"parameter 'backbone' is malformed"),
        ({"edit_header": set_fitted("model_", 1)}, r"has fitted attributes \['model_'\] that this"),
        ({"edit_header": set_fitted("__dict__", {})}, r"has fitted attributes \['__dict__'\] that this"),
        (
            {"edit_header": set_fitted("feature_shape_", {"__tuple__": [12, 12, "x"]})},
            r"fitted attribute 'feature_shape_' must be a \(height, width, feature_dim\) tuple",
        ),
        ({"edit_header": set_fitted("feature_shape_", [12, 12, 152])}, r"'feature_shape_' must be"),
        ({"edit_header": set_fitted("input_size_", {"__tuple__": [10**9, 96]})}, r"'input_size_' must be"),
        ({"edit_header": set_fitted("threshold_", "0.1")}, r"fitted attribute 'threshold_' must be"),
        (
            {"edit_header": set_fitted("calibration_", {"method": [1]})},
            r"fitted attribute 'calibration_' must be",
        ),
        ({"edit_header": set_fitted("held_out_indices_", [1, 2, 3, 4, 5, 6])}, r"held_out_indices_ does not"),
        ({"edit_header": lambda header: header.update(payload="x")}, r"has unknown entries \['payload'\]"),
        ({"edit_document": deeply_nested}, r"nested deeper than 32 levels"),
        ({"edit_header": set_fitted("threshold_", float("nan"))}, r"NaN is not a finite number"),
        ({"edit_document": huge_integer}, r"does not parse \(Exceeds the limit"),
        (
            {"edit_tensors": lambda tensors: tensors["discriminator.body.1.running_var"].fill_(-1.0)},
            r"'discriminator\.body\.1\.running_var' holds negative variances",
        ),
        (
            {"edit_tensors": lambda tensors: tensors["scaler.scale"].fill_(0.0)},
            r"'scaler\.scale' holds scales",
        ),
        (
            {"edit_tensors": lambda tensors: tensors.update({"adaptor.linear.weight": torch.zeros(3, 3)})},
            r"weight tensor 'adaptor\.linear\.weight' is torch\.float32 \(3, 3\); its parameters make it",
        ),
        (
            {"edit_tensors": lambda tensors: tensors["discriminator.head.weight"].fill_(float("nan"))},
            r"weight tensor 'discriminator\.head\.weight' holds NaN or infinite values",
        ),
        (
            {
                "edit_tensors": lambda t: t.update(
                    {"discriminator.head.weight": t["discriminator.head.weight"].double()}
                )
            },
            r"'discriminator\.head\.weight' is torch\.float64",
        ),
    ],
    ids=[
        "huge-hidden-dim",
        "invalid-sigma",
        "tuple-of-a-string",
        "unknown-weights",
        "object-array",
        "array-shape-too-large",
        "backbone-not-a-class-name",
        "fitted-model_",
        "fitted-__dict__",
        "feature-shape-with-a-string",
        "feature-shape-as-a-list",
        "huge-input-size",
        "threshold-as-a-string",
        "calibration-record-holding-a-list",
        "held-out-indices-without-their-count",
        "unknown-top-level-entry",
        "deep-nesting",
        "nan-constant",
        "huge-integer",
        "negative-variance",
        "zero-scale",
        "weight-of-another-shape",
        "nan-weights",
        "weight-of-another-dtype",
    ],
)
def test_crafted_file_is_refused_before_anything_is_built(model_file, tmp_path, edits, message):
    crafted = rewrite(model_file, tmp_path / "crafted.safetensors", **edits)
    before = peak_memory_bytes()
    with pytest.raises(ModelFileError, match=message):
        load(crafted)
    assert peak_memory_bytes() - before < 100 << 20


def test_document_size_is_bounded(model_file, tmp_path, monkeypatch):
    monkeypatch.setattr(persistence, "MAX_DOCUMENT_CHARS", 1000)
    with pytest.raises(ModelFileError, match=r"-character document, more than .*MAX_DOCUMENT_CHARS = 1000"):
        load(model_file)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(["__tuple__", "__path__", "__ndarray__", "dtype", "shape", "x"]), children
        )
    ),
    max_leaves=6,
)


def mutate_header(header, data):
    """Replace one value anywhere in the document (or delete it) with an arbitrary JSON value."""
    node = header
    while True:
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        if not keys:
            return
        key = data.draw(st.sampled_from(keys))
        child = node[key]
        if isinstance(child, (dict, list)) and child and data.draw(st.booleans()):
            node = child
            continue
        if isinstance(node, dict) and data.draw(st.booleans()):
            del node[key]
        else:
            node[key] = data.draw(JSON_VALUES)
        return


def mutate_tensors(tensors, data):
    name = data.draw(st.sampled_from(sorted(tensors)))
    tensor = tensors[name]
    change = data.draw(st.sampled_from(["drop", "shape", "dtype", "value", "rename"]))
    if change == "drop":
        del tensors[name]
    elif change == "shape":
        tensors[name] = torch.zeros(data.draw(st.lists(st.integers(0, 4), max_size=3)))
    elif change == "dtype":
        tensors[name] = tensor.to(data.draw(st.sampled_from([torch.float64, torch.int64, torch.float16])))
    elif change == "value" and tensor.numel():
        value = st.floats(-100, 100) | st.sampled_from([float("nan"), float("inf"), -float("inf")])
        tensor.view(-1)[data.draw(st.integers(0, tensor.numel() - 1))] = data.draw(value)
    else:
        tensors[name + "x"] = tensors.pop(name)


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_any_mutated_file_loads_as_a_working_detector_or_raises_model_file_error(
    model_file, tmp_path, stripes, data
):
    edit_header = lambda header: mutate_header(header, data)  # noqa: E731
    edit_tensors = lambda tensors: mutate_tensors(tensors, data)  # noqa: E731
    which = data.draw(st.sampled_from(["header", "tensors", "both"]))
    crafted = rewrite(
        model_file,
        tmp_path / "mutated.safetensors",
        edit_header=edit_header if which != "tensors" else lambda header: None,
        edit_tensors=edit_tensors if which != "header" else lambda tensors: None,
    )
    before = peak_memory_bytes()
    try:
        detector = load(crafted)
    except ModelFileError:
        pass
    else:
        scores = detector.score_samples(stripes[0][:2])
        assert scores.shape == (2,) and np.isfinite(scores).all()
    assert peak_memory_bytes() - before < 200 << 20
