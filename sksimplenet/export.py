"""ONNX export of a fitted :class:`~sksimplenet.SimpleNetDetector`.

The exported graph is the whole inference path of ``model_``: input normalisation,
frozen backbone, patch features, scaler, adaptor, discriminator, upsampling, Gaussian
smoothing and the image score, in the folded form that scoring uses (see
:mod:`sksimplenet.model`). It runs with any ONNX runtime, without PyTorch or this
package.

Graph signature
---------------
- input ``images``: ``float32 (N, 3, H, W)``, RGB in [0, 1], already resized and
  centre-cropped (the detector's ``input_size_`` is what it was trained at);
- output ``anomaly_map``: ``float32 (N, H, W)``, higher = more anomalous;
- output ``score``: ``float32 (N,)``, each image's anomaly score as the detector's
  ``image_score`` makes it from the map: the mean of the map's highest 1 % of pixels by
  default, its maximum with ``image_score="max"`` (the paper's). It is
  ``-score_samples`` up to float rounding.

The graph computes in float32 whatever the detector's ``precision``. ``N``, ``H`` and
``W`` are dynamic (the metadata entry ``dynamic_size`` says so; a backbone whose graph holds
sizes of its own gives a file for ``input_size_`` only). Images of another size than
``input_size_`` are scored as the PyTorch model scores them at that size, but the model was
trained at ``input_size_``: preprocess as ``resize`` and ``crop_size`` say for the scores
the threshold was set for. ``score > outlier_threshold`` (a metadata entry,
``threshold_``) is what :meth:`~sksimplenet.SimpleNetDetector.predict` calls an outlier.
See ``docs/deployment.md`` for running the file without this package.
"""

from __future__ import annotations

import copy
import json
import numbers
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted
from torch import nn

from .image_io import as_image_list, load_image, preprocess

INPUT_NAME = "images"
OUTPUT_NAMES = ("anomaly_map", "score")


def _import_onnx():
    try:
        import onnx
    except ImportError as error:
        raise ImportError(
            "ONNX export needs the package 'onnx': pip install 'sksimplenet[export]'"
        ) from error
    return onnx


def _json(value) -> str:
    if isinstance(value, tuple):
        value = list(value)
    return json.dumps(value)


class _ExportGraph(nn.Module):
    """``model_`` with its outputs reshaped to the input's size, so that the file declares them."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps, scores = self.model(images)
        return maps.reshape(-1, images.shape[2], images.shape[3]), scores.reshape(-1)


def export_metadata(detector) -> dict[str, str]:
    """String metadata stored in the exported file: what a deployment needs to know.

    Parameters
    ----------
    detector : SimpleNetDetector
        A fitted detector.

    Returns
    -------
    dict of str to str
        ``input_height``, ``input_width``, ``resize``, ``crop_size`` (JSON), the decision
        threshold ``outlier_threshold`` on ``score`` (``-offset_``), ``backbone``,
        ``layers`` (JSON), ``channel_order`` (``"RGB"``), ``layout`` (``"NCHW"``),
        ``value_range`` (``"[0, 1]"``) and ``sksimplenet_version``.
    """
    from . import __version__

    check_is_fitted(detector, "model_")
    backbone = detector.backbone
    height, width = detector.input_size_
    return {
        "input_height": str(int(height)),
        "input_width": str(int(width)),
        "resize": _json(detector.resize),
        "crop_size": _json(detector.crop_size),
        "outlier_threshold": repr(float(-detector.offset_)),
        "backbone": backbone if isinstance(backbone, str) else type(backbone).__name__,
        "layers": _json(list(detector.model_.extractor.layers)),
        "channel_order": "RGB",
        "layout": "NCHW",
        "value_range": "[0, 1]",
        "sksimplenet_version": __version__,
    }


def _record(model: nn.Module, example: torch.Tensor, path: Path, opset: int, dynamic_size: bool) -> None:
    """Trace ``model`` on ``example`` into an ONNX file; the batch axis (and H, W) dynamic."""
    axes = {0: "batch", 2: "height", 3: "width"} if dynamic_size else {0: "batch"}
    output_axes = {0: "batch", 1: "height", 2: "width"} if dynamic_size else {0: "batch"}
    with warnings.catch_warnings(), torch.no_grad():
        # Python-side arithmetic on sizes is recorded as constants where it is static (the
        # architecture's level order, the kernels); the tracer warns about each.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # The TorchScript exporter announces its own deprecation; nothing a caller can act on.
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message=".*feature will be removed.*")
        warnings.filterwarnings("ignore", message=".*Constant folding.*")
        # One call first builds the folded inference head (sksimplenet.model), so that the
        # graph records its weights as constants rather than the arithmetic that folds them.
        model(example)
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes={INPUT_NAME: axes, OUTPUT_NAMES[0]: output_axes, OUTPUT_NAMES[1]: {0: "batch"}},
            opset_version=int(opset),
            do_constant_folding=True,
            dynamo=False,
        )


def _scores_at_other_sizes(model: nn.Module, path: Path, size: tuple[int, int]) -> bool:
    """Whether the graph at ``path`` scores inputs of other sizes as ``model`` does (checked
    with onnxruntime when it is installed; assumed otherwise)."""
    try:
        import onnxruntime
    except ImportError:
        return True
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(0)
    for height, width in ((size[0] + 32, size[1] + 16), (max(32, size[0] - 16), size[1] + 32)):
        images = torch.rand(1, 3, height, width, generator=generator)
        try:
            maps, scores = session.run(list(OUTPUT_NAMES), {INPUT_NAME: images.numpy()})
        except Exception:  # a runtime error of the graph at that size: a fixed-size graph
            return False
        with torch.no_grad():
            expected_maps, expected_scores = model(images)
        if maps.shape != tuple(expected_maps.shape) or not np.allclose(
            maps, expected_maps.numpy(), atol=1e-3
        ):
            return False
        if not np.allclose(scores, expected_scores.numpy(), atol=1e-3):
            return False
    return True


def export_onnx(detector, path: str | os.PathLike, opset: int = 17) -> Path:
    """Write a fitted detector's inference graph to an ONNX file.

    Parameters
    ----------
    detector : SimpleNetDetector
        A fitted detector; it is not modified (a CPU copy of ``model_`` is exported).
    path : str or path
        Destination file (suggested extension: ``.onnx``).
    opset : int, default=17
        ONNX operator set version, at least 13.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    sklearn.exceptions.NotFittedError
        The detector is not fitted.
    ImportError
        The package ``onnx`` is missing (``pip install 'sksimplenet[export]'``).
    ValueError
        ``opset`` is not an integer >= 13.

    Warns
    -----
    UserWarning
        The backbone's graph holds sizes of its own, so that the file takes only
        ``input_size_``.

    Notes
    -----
    The graph is recorded with PyTorch's TorchScript-based exporter (``dynamo=False``)
    from a batch of two images at ``input_size_``, with the batch axis, the height and the
    width dynamic: the folded head, the upsampling, the smoothing and the image score follow
    the input's size. When onnxruntime is installed, the file is run at two other sizes and
    compared with the PyTorch model; a backbone whose graph holds fixed sizes fails that
    check, and the graph is then recorded for ``input_size_`` only (with a warning).
    """
    check_is_fitted(detector, "model_")
    if not isinstance(opset, numbers.Integral) or isinstance(opset, bool) or opset < 13:
        raise ValueError(f"opset must be an integer >= 13, got {opset!r}")
    onnx = _import_onnx()
    path = Path(path)

    network = copy.deepcopy(detector.model_).cpu().float()
    network.precision = "float32"  # a graph in plain float32: runtimes pick their own precision
    model = _ExportGraph(network).eval()
    example = torch.zeros(2, 3, *detector.input_size_)
    _record(model, example, path, opset, dynamic_size=True)
    dynamic = _scores_at_other_sizes(network, path, tuple(detector.input_size_))
    if not dynamic:
        warnings.warn(
            "The backbone's graph holds sizes of its own: the ONNX file takes inputs of "
            f"input_size_ = {tuple(detector.input_size_)} only",
            UserWarning,
            stacklevel=2,
        )
        _record(model, example, path, opset, dynamic_size=False)

    proto = onnx.load(str(path))
    proto.doc_string = "SimpleNet anomaly detector exported by sksimplenet"
    for key, value in {**export_metadata(detector), "dynamic_size": json.dumps(dynamic)}.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return path


def prepare_images(detector, X) -> np.ndarray:
    """Preprocess images exactly as the detector does, into the exported graph's input.

    Parameters
    ----------
    detector : SimpleNetDetector
        Supplies ``resize`` and ``crop_size``.
    X : sequence of images or array-like
        Any form :meth:`~sksimplenet.SimpleNetDetector.fit` accepts.

    Returns
    -------
    ndarray of shape (n_images, 3, H, W), float32
        RGB in [0, 1], resized and centre-cropped.

    Raises
    ------
    ValueError
        The images do not all have the same size after preprocessing, or (for a fitted
        detector) not its ``input_size_``.
    """
    images = as_image_list(X)
    tensors = [
        preprocess(load_image(image, index), detector.resize, detector.crop_size)
        for index, image in enumerate(images)
    ]
    sizes = sorted({tuple(t.shape[-2:]) for t in tensors})
    if len(sizes) > 1:
        raise ValueError(
            f"Images have different sizes after preprocessing {sizes}: "
            "set crop_size, or resize=(height, width)"
        )
    if hasattr(detector, "input_size_") and sizes[0] != tuple(detector.input_size_):
        raise ValueError(
            f"Images are {sizes[0]} after preprocessing; the exported graph takes "
            f"{tuple(detector.input_size_)} (the training size)"
        )
    return torch.stack(tensors).numpy().astype(np.float32, copy=False)
