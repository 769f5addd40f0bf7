"""A self-contained HTML report of an evaluation: metrics tables, curves and the worst mistakes.

:func:`write_report` writes two files into a folder:

- ``report.html``: every figure is embedded as a base64 PNG ``data:`` URI and the styles
  are inline, so the page needs no network and no other file to be viewed; open it in any
  browser (``file://``) or send it as one attachment;
- ``per_image.csv``: one row per image (:func:`sksimplenet.metrics.write_per_image_csv`),
  linked from the page with a relative address.

Conventions are those of :mod:`sksimplenet.metrics`: scores and maps are higher = more
anomalous, labels are +1 normal / -1 anomalous (or True anomalous), and an image is
predicted anomalous when its score is strictly above the threshold.

Matplotlib is needed (``pip install sksimplenet[plot]``); figures are drawn by its Agg
canvas, without :mod:`matplotlib.pyplot`.
"""

from __future__ import annotations

import base64
import io
import os
from html import escape
from pathlib import Path

import numpy as np

from .metrics import METRIC_LABELS, write_per_image_csv

__all__ = ["REPORT_FILE", "PER_IMAGE_FILE", "write_report"]

REPORT_FILE = "report.html"
PER_IMAGE_FILE = "per_image.csv"

THRESHOLD_LABELS = {
    "threshold": "threshold (image score)",
    "tn": "true negatives: normal, predicted normal",
    "fp": "false positives: normal, predicted anomalous",
    "fn": "false negatives: anomalous, predicted normal",
    "tp": "true positives: anomalous, predicted anomalous",
    "false_positive_rate": "false-positive rate",
    "recall": "recall (true-positive rate)",
    "precision": "precision",
    "f1": "F1 (anomalous class)",
    "accuracy": "accuracy",
}
TYPE_COLUMNS = {
    "label": "label",
    "n_images": "images",
    "n_flagged": "predicted anomalous",
    "recall": "recall",
    "false_positive_rate": "false-positive rate",
    "image_auroc": "image AUROC vs normal",
}
MASK_COLOR = "lime"
_FIGURE_DPI = 100
_STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 70em; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #eee; text-align: left; }
figure { display: inline-block; margin: 0 1em 1em 0; vertical-align: top; }
figure img { display: block; }
figcaption { font-size: 0.85em; max-width: 20em; overflow-wrap: anywhere; }
p.note { color: #555; font-size: 0.9em; }
"""


# ----------------------------------------------------------------------------- figures
def _figure(width_inches: float, height_inches: float):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("sksimplenet.report needs matplotlib: pip install sksimplenet[plot]") from None
    figure = Figure(figsize=(width_inches, height_inches), dpi=_FIGURE_DPI)
    FigureCanvasAgg(figure)
    return figure


def _png_data_uri(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_FIGURE_DPI)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _roc_figure(anomalous: np.ndarray, scores: np.ndarray, at_threshold: dict) -> str:
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(anomalous, scores)
    figure = _figure(4.5, 4.0)
    ax = figure.add_subplot()
    ax.plot(fpr, tpr, color="C0", label="image ROC")
    ax.plot([0, 1], [0, 1], color="0.7", linestyle=":", label="chance")
    ax.plot(
        [at_threshold["false_positive_rate"]],
        [at_threshold["recall"]],
        "o",
        color="C3",
        label="at the threshold",
    )
    ax.set(xlabel="false-positive rate", ylabel="true-positive rate (recall)", xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(loc="lower right")
    figure.tight_layout()
    return _png_data_uri(figure)


def _pro_figure(fpr: np.ndarray, pro: np.ndarray, max_fpr: float) -> str:
    figure = _figure(4.5, 4.0)
    ax = figure.add_subplot()
    ax.plot(fpr, pro, color="C2", label="PRO")
    ax.axvline(max_fpr, color="0.5", linestyle="--", label=f"AUPRO limit (FPR {max_fpr:g})")
    ax.set(
        xlabel="false-positive rate of normal pixels",
        ylabel="per-region overlap",
        xlim=(0, 1),
        ylim=(0, 1.02),
    )
    ax.legend(loc="lower right")
    figure.tight_layout()
    return _png_data_uri(figure)


def _histogram_figure(anomalous: np.ndarray, scores: np.ndarray, threshold: float) -> str:
    edges = np.histogram_bin_edges(np.r_[scores, threshold], bins=30)
    figure = _figure(6.0, 3.5)
    ax = figure.add_subplot()
    ax.hist(scores[~anomalous], bins=edges, alpha=0.6, color="C0", label=f"normal ({(~anomalous).sum()})")
    ax.hist(scores[anomalous], bins=edges, alpha=0.6, color="C3", label=f"anomalous ({anomalous.sum()})")
    ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.4g}")
    ax.set(xlabel="image anomaly score", ylabel="images")
    ax.legend()
    figure.tight_layout()
    return _png_data_uri(figure)


def _case_figure(image, amap, mask, threshold: float, result, vmin: float, vmax: float) -> str:
    """The image as the network saw it beside its overlay, with the colour bar below both."""
    from matplotlib.cm import ScalarMappable

    from .plotting import overlay, plain_image

    height, width = np.shape(amap)
    scale = 3.0 / max(height, width)
    panel_w, panel_h, bar_h = width * scale, height * scale, 0.55
    figure = _figure(2 * panel_w + 0.1, panel_h + bar_h)
    total_w, total_h = 2 * panel_w + 0.1, panel_h + bar_h
    left = figure.add_axes((0, bar_h / total_h, panel_w / total_w, panel_h / total_h))
    right = figure.add_axes(
        ((panel_w + 0.1) / total_w, bar_h / total_h, panel_w / total_w, panel_h / total_h)
    )
    left.imshow(plain_image(image, (height, width), result.resize, result.crop_size), interpolation="nearest")
    left.set_axis_off()
    overlay(
        image,
        amap,
        ax=right,
        threshold=threshold,
        resize=result.resize,
        crop_size=result.crop_size,
        vmin=vmin,
        vmax=vmax,
    )
    if mask is not None and mask.any() and not mask.all():
        right.contour(mask.astype(float), levels=[0.5], colors=MASK_COLOR, linewidths=1.5, linestyles="--")
    cax = figure.add_axes((0.08, 0.3 * bar_h / total_h, 0.84, 0.22 * bar_h / total_h))
    artist = right.images[-1]
    bar = figure.colorbar(
        ScalarMappable(norm=artist.norm, cmap=artist.cmap), cax=cax, orientation="horizontal"
    )
    cax.axvline(threshold, color="black", linewidth=1.5)
    bar.set_ticks([vmin, threshold, vmax], labels=[f"{v:.3g}" for v in (vmin, threshold, vmax)])
    cax.tick_params(labelsize=7, length=2, pad=1)
    return _png_data_uri(figure)


# ----------------------------------------------------------------------------- html pieces
def _number(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(int(value))
    return f"{float(value):.4f}"


def _cell(table: str, key: str, value, row: str | None = None) -> str:
    """A table cell showing ``value`` rounded, with its exact value in ``data-value``."""
    exact = (
        "" if value is None else repr(int(value) if isinstance(value, (int, np.integer)) else float(value))
    )
    row_attribute = "" if row is None else f' data-row="{escape(row)}"'
    return (
        f'<td class="number" data-table="{table}"{row_attribute} data-key="{escape(key)}" '
        f'data-value="{exact}">{_number(value)}</td>'
    )


def _two_column_table(table: str, values: dict, labels: dict) -> str:
    rows = [
        f"<tr><th>{escape(labels.get(key, key))}</th>{_cell(table, key, value)}</tr>"
        for key, value in values.items()
    ]
    return "<table>\n<tr><th>metric</th><th>value</th></tr>\n" + "\n".join(rows) + "\n</table>"


def _confusion_table(m: dict) -> str:
    return (
        "<table>\n<tr><th></th><th>predicted normal</th><th>predicted anomalous</th></tr>\n"
        f"<tr><th>normal</th>{_cell('confusion', 'tn', m['tn'])}{_cell('confusion', 'fp', m['fp'])}</tr>\n"
        f"<tr><th>anomalous</th>{_cell('confusion', 'fn', m['fn'])}{_cell('confusion', 'tp', m['tp'])}</tr>\n"
        "</table>"
    )


def _type_table(per_type: dict) -> str:
    header = (
        "<tr><th>type</th>"
        + "".join(f"<th>{escape(label)}</th>" for label in TYPE_COLUMNS.values())
        + "</tr>"
    )
    rows = []
    for name, entry in per_type.items():
        cells = "".join(_cell("per_type", key, entry[key], row=name) for key in TYPE_COLUMNS)
        rows.append(f"<tr><th>{escape(name)}</th>{cells}</tr>")
    return "<table>\n" + header + "\n" + "\n".join(rows) + "\n</table>"


def _img(uri: str, alt: str) -> str:
    return f'<img src="{uri}" alt="{escape(alt)}">'


def _cases_section(kind: str, heading: str, indices, names, types, scores, figures) -> str:
    parts = [f"<h2>{escape(heading)}</h2>"]
    if not len(indices):
        parts.append('<p class="note">None.</p>')
        return "\n".join(parts)
    for index in indices:
        caption = f"{names[index]} ({types[index]}), score {scores[index]:.4g}"
        image = _img(figures[index], caption) if index in figures else ""
        parts.append(
            f'<figure data-case="{kind}" data-index="{int(index)}">{image}'
            f"<figcaption>{escape(caption)}</figcaption></figure>"
        )
    return "\n".join(parts)


# ----------------------------------------------------------------------------- the report
def _model_section(model: dict) -> str:
    if not model:
        return ""
    rows = "\n".join(
        f"<tr><th>{escape(name)}</th><td>{escape(str(value))}</td></tr>" for name, value in model.items()
    )
    return f"<h2>Model</h2>\n<table>\n{rows}\n</table>"


def write_report(
    directory: str | os.PathLike,
    evaluation,
    *,
    title: str = "Anomaly detection report",
    n_worst: int = 4,
) -> Path:
    """Write ``report.html`` (self-contained) and ``per_image.csv`` into ``directory``.

    The page holds: a summary; the model that made the scores (when known); the
    threshold-free metrics; the confusion matrix and rates at the threshold; the
    per-defect-type table; the image ROC curve with the operating point; the PRO curve (with
    maps and masks); the histogram of normal and anomalous image scores with the threshold;
    and, with maps, the worst false positives (normal images with the highest scores above
    the threshold) and the worst false negatives (anomalous images with the lowest scores at
    or below it), each as the plain image beside its heatmap overlay, on one colour scale
    with a colour bar, the predicted region outlined in white and the ground truth, where
    known, dashed in green. Every figure is an embedded PNG; the only other file the page
    refers to is ``per_image.csv``, by a relative link.

    Each metric cell carries its exact value, so the page can be read by programs:
    ``<td data-table="TABLE" [data-row="TYPE"] data-key="KEY" data-value="VALUE">``, with
    TABLE one of ``threshold_free``, ``at_threshold``, ``confusion``, ``per_type`` and
    VALUE empty for a value that does not apply.

    Parameters
    ----------
    directory : str or path
        Output folder, created if missing; ``report.html`` and ``per_image.csv`` in it are
        overwritten.
    evaluation : sksimplenet.inspection.Evaluation
        From :func:`sksimplenet.inspection.evaluate` or
        :meth:`~sksimplenet.inspection.Evaluation.from_predictions`.
    title : str, default="Anomaly detection report"
        The page's title and heading.
    n_worst : int, default=4
        How many false positives and false negatives to show at most, each.

    Returns
    -------
    pathlib.Path
        The path of ``report.html``.
    """
    if int(n_worst) != n_worst or n_worst < 0:
        raise ValueError(f"n_worst must be a non-negative integer, got {n_worst!r}")
    result = evaluation
    anomalous = result.labels == -1
    scores, threshold, names, types = result.scores, result.threshold, result.names, result.defect_types
    n = anomalous.size

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_per_image_csv(directory / PER_IMAGE_FILE, names, result.labels, scores, threshold, types)

    flagged = scores > threshold
    false_positives = np.flatnonzero(~anomalous & flagged)
    false_positives = false_positives[np.argsort(-scores[false_positives], kind="stable")][: int(n_worst)]
    false_negatives = np.flatnonzero(anomalous & ~flagged)
    false_negatives = false_negatives[np.argsort(scores[false_negatives], kind="stable")][: int(n_worst)]
    pictures = {}
    if result.maps is not None:
        from .plotting import centred_range

        # One colour scale for every overlay, centred on the threshold, so that panels compare.
        low = min(float(np.nanmin(amap)) for amap in result.maps)
        high = max(float(np.nanmax(amap)) for amap in result.maps)
        vmin, vmax = centred_range(low, high, threshold)
        for index in [*false_positives, *false_negatives]:
            if result.images[index] is None:  # scores and maps without their images
                continue
            mask = None if result.masks is None else result.masks[index]
            pictures[index] = _case_figure(
                result.images[index], result.maps[index], mask, threshold, result, vmin, vmax
            )

    curves = [_img(_roc_figure(anomalous, scores, result.at_threshold), "image ROC curve")]
    if result.pro_curve is not None:
        fpr, pro, _ = result.pro_curve
        curves.append(_img(_pro_figure(fpr, pro, result.max_fpr), "PRO curve"))

    n_anomalous = int(anomalous.sum())
    body = [
        f"<h1>{escape(title)}</h1>",
        f"<p>{n} images: {n - n_anomalous} normal, {n_anomalous} anomalous. An image is predicted "
        f"anomalous when its score is above the threshold {threshold:.6g}. "
        f'Scores and decisions per image: <a href="{PER_IMAGE_FILE}">{PER_IMAGE_FILE}</a>.</p>',
        _model_section(result.model),
        "<h2>Threshold-free metrics</h2>",
        _two_column_table("threshold_free", result.metrics, METRIC_LABELS),
        "<h2>At the threshold</h2>",
        _confusion_table(result.at_threshold),
        _two_column_table("at_threshold", result.at_threshold, THRESHOLD_LABELS),
        "<h2>Per defect type</h2>",
        '<p class="note">Recall of a defect type: the share of its images predicted anomalous; '
        "its image AUROC ranks its images against all normal images. For a type of normal images "
        "the share predicted anomalous is its false-positive rate.</p>",
        _type_table(result.per_type),
        "<h2>Curves</h2>",
        "\n".join(f"<figure>{curve}</figure>" for curve in curves),
        "<h2>Score histogram</h2>",
        f"<figure>{_img(_histogram_figure(anomalous, scores, threshold), 'score histogram')}</figure>",
    ]
    if result.maps is None:
        body.append('<p class="note">No anomaly maps were given: no overlays.</p>')
    else:
        body.append(
            '<p class="note">Each case: the image as the network saw it, and the anomaly map over it, '
            "coloured on one scale for every case (the colour bar; the threshold, marked black, at its "
            "middle), the region scoring above the threshold outlined in white"
            + (", the ground-truth defect dashed in green" if result.masks is not None else "")
            + ".</p>"
        )
    sections = (
        ("false_positive", "Worst false positives (normal images scoring highest above the threshold)"),
        (
            "false_negative",
            "Worst false negatives (anomalous images scoring lowest at or below the threshold)",
        ),
    )
    for (kind, heading), cases in zip(sections, (false_positives, false_negatives)):
        body.append(_cases_section(kind, heading, cases, names, types, scores, pictures))
    page = (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(part for part in body if part)
        + "\n</body>\n</html>\n"
    )
    path = directory / REPORT_FILE
    path.write_text(page, encoding="utf-8")
    return path
