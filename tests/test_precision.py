"""Reduced precision of the backbone: ``SimpleNetDetector(precision=...)``."""

import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from sksimplenet import SimpleNetDetector, load, precision, save
from sksimplenet.precision import backbone_dtype, missing_feature, training_dtype

from .conftest import FAST

CPU = torch.device("cpu")


@pytest.fixture
def cpu_with(monkeypatch):
    """Pretend this CPU has exactly the given capability flags."""

    def pretend(*flags):
        monkeypatch.setattr(
            precision, "cpu_capabilities", lambda: {"architecture": "x86_64", **dict.fromkeys(flags, True)}
        )
        monkeypatch.setattr(precision, "_warned", set())

    return pretend


def test_auto_picks_bfloat16_only_on_a_cpu_with_native_bfloat16(cpu_with):
    cpu_with("avx512_bf16")
    assert backbone_dtype("auto", CPU) == torch.bfloat16
    cpu_with("amx_bf16")
    assert backbone_dtype("auto", CPU) == torch.bfloat16
    cpu_with("avx2")
    assert backbone_dtype("auto", CPU) == torch.float32
    assert backbone_dtype("auto", torch.device("cuda")) == torch.float16
    assert backbone_dtype("auto", torch.device("mps")) == torch.float32


def test_training_steps_use_bfloat16_only_where_it_is_native(cpu_with):
    cpu_with("avx512_bf16")
    assert training_dtype("auto", CPU) == torch.bfloat16
    assert training_dtype("float32", CPU) == torch.float32
    cpu_with("avx2")
    assert training_dtype("auto", CPU) == torch.float32  # never an emulated type unasked
    assert training_dtype("auto", torch.device("mps")) == torch.float32
    with pytest.warns(UserWarning, match="precision='bfloat16' on a CPU without AVX512-BF16"):
        assert training_dtype("bfloat16", CPU) == torch.bfloat16


def test_training_in_bfloat16_learns_the_same_detector(stripes):
    images, labels, _ = stripes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # emulated bfloat16 on CPUs without it
        reduced = SimpleNetDetector(**FAST, training_precision="bfloat16").fit(images[:20])
    full = SimpleNetDetector(**FAST, training_precision="float32").fit(images[:20])
    assert reduced.loss_history_ != full.loss_history_  # the steps did run in bfloat16
    assert (reduced.training_dtype_, full.training_dtype_) == ("bfloat16", "float32")
    assert reduced.model_.discriminator.head.weight.dtype == torch.float32  # the weights did not
    anomalous = labels[20:] == -1
    auroc = [roc_auc_score(anomalous, -d.score_samples(images[20:])) for d in (reduced, full)]
    assert min(auroc) >= 0.9 and abs(auroc[0] - auroc[1]) <= 0.05


def test_missing_native_support_is_named_and_warned_once(cpu_with):
    cpu_with("avx2")
    assert missing_feature(torch.bfloat16, CPU) == "AVX512-BF16 or AMX-BF16"
    assert missing_feature(torch.float16, CPU) == "AVX512-FP16 or AMX-FP16"
    assert missing_feature(torch.float32, CPU) is None
    with pytest.warns(
        UserWarning, match=r"precision='float16' on a CPU without AVX512-FP16 or AMX-FP16: .*many times"
    ):
        assert backbone_dtype("float16", CPU) == torch.float16
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        backbone_dtype("float16", CPU)  # once per process
    cpu_with("avx512_fp16")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert backbone_dtype("float16", CPU) == torch.float16


@pytest.mark.parametrize("reduced", ["bfloat16", "float16"])
def test_reduced_precision_scores_close_to_float32(stripes, reduced):
    images, labels, _ = stripes
    detector = SimpleNetDetector(**FAST).fit(images[:20])
    maps32, scores32 = detector.anomaly_map(images[20:], return_scores=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # emulated float16 on most CPUs
        maps, scores = detector.set_params(precision=reduced).anomaly_map(images[20:], return_scores=True)
    assert not np.array_equal(scores, scores32)  # the backbone did run in another precision
    assert np.abs(scores - scores32).max() <= 0.1 * np.ptp(scores32)
    assert np.abs(maps - maps32).max() <= 0.1 * np.ptp(maps32)
    anomalous = labels[20:] == -1
    assert abs(roc_auc_score(anomalous, scores) - roc_auc_score(anomalous, scores32)) <= 0.05


def test_precision_is_used_by_fit_and_saved(stripes, tmp_path):
    images, _, _ = stripes
    detector = SimpleNetDetector(**FAST, precision="bfloat16").fit(images[:12])
    assert detector.model_.precision == "bfloat16"
    float32_fit = SimpleNetDetector(**FAST).fit(images[:12])
    assert detector.loss_history_ != float32_fit.loss_history_  # features were extracted in bfloat16
    save(detector, tmp_path / "model.safetensors")
    restored = load(tmp_path / "model.safetensors")
    assert restored.precision == "bfloat16"
    np.testing.assert_array_equal(
        restored.score_samples(images[20:24]), detector.score_samples(images[20:24])
    )
