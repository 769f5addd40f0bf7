import base64
import csv
import io
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from PIL import Image

from sksimplenet.datasets import make_synthetic
from sksimplenet.inspection import Evaluation
from sksimplenet.inspection import evaluate as evaluate_detector
from sksimplenet.metrics import evaluate, per_type_metrics, threshold_metrics
from sksimplenet.report import PER_IMAGE_FILE, REPORT_FILE, write_report

pytest.importorskip("matplotlib")

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

# Six normal images, then six defective ones alternating scratch / blob. At the threshold
# 0.5 the normal images 3 (0.8) and 4 (0.9) are false positives; the defective images 7
# (0.45), 9 (0.2) and 11 (0.5: at the threshold, so predicted normal) are false negatives.
THRESHOLD = 0.5
SCORES = np.array([0.1, 0.2, 0.3, 0.8, 0.9, 0.4, 0.95, 0.45, 0.7, 0.2, 0.6, 0.5])
TYPES = ["good"] * 6 + ["scratch", "blob"] * 3


class _Page(HTMLParser):
    """Checks that non-void tags nest and close; gathers tags, addresses and metric cells."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.errors, self.tags, self.urls = [], [], [], []
        self.cells, self.figures, self.doctype = [], [], None

    def handle_decl(self, decl):
        self.doctype = decl

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        self.urls += [attrs[key] for key in ("src", "href") if key in attrs]
        if "data-key" in attrs:
            self.cells.append(attrs)
        if tag == "figure" and "data-case" in attrs:
            self.figures.append(attrs)
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_endtag(self, tag):
        if tag in VOID:
            self.errors.append(f"end tag of the void element {tag}")
        elif not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
        else:
            self.stack.pop()


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    assert page.errors == [] and page.stack == [], (page.errors, page.stack)
    assert page.doctype is not None and page.doctype.lower() == "doctype html"
    assert [page.tags.count(tag) for tag in ("html", "head", "body", "title")] == [1, 1, 1, 1]
    return page


def _table(page: _Page, table: str, row: str | None = None) -> dict:
    """``data-key`` to value of one table's cells: int, float, or None for an empty value."""
    values = {}
    for cell in page.cells:
        if cell["data-table"] == table and cell.get("data-row") == row:
            text = cell["data-value"]
            values[cell["data-key"]] = (
                None if text == "" else (int(text) if text.lstrip("-").isdigit() else float(text))
            )
    return values


def _check_references(page: _Page, directory: Path) -> None:
    """Every src / href is an embedded PNG or a file of ``directory`` that the report wrote."""
    written = {path.name for path in directory.iterdir()}
    assert written == {REPORT_FILE, PER_IMAGE_FILE}
    for url in page.urls:
        if url.startswith("data:"):
            header, payload = url.split(",", 1)
            assert header == "data:image/png;base64"
            with Image.open(io.BytesIO(base64.b64decode(payload, validate=True))) as image:
                assert image.format == "PNG"
            continue
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc, url
        target = (directory / parts.path).resolve()
        assert target.parent == directory.resolve() and target.name in written, url
    text = (directory / REPORT_FILE).read_text(encoding="utf-8")
    # No address anywhere else either (":" is not a base64 character, so none hides in a PNG).
    assert "://" not in text and "url(" not in text and "@import" not in text
    assert "script" not in page.tags and "link" not in page.tags and "iframe" not in page.tags


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """The twelve images as PNG files, with labels, masks and noisy maps that follow the masks."""
    images, labels, masks = make_synthetic(6, 6, defects=("scratch", "blob"), size=32, random_state=1)
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for index, (image, kind) in enumerate(zip(images, TYPES)):
        path = folder / f"{kind}_{index:02d}.png"
        Image.fromarray(image).save(path)
        paths.append(str(path))
    maps = masks + np.random.default_rng(0).normal(0, 0.3, size=masks.shape)
    return paths, labels, list(masks), maps


def report(directory, labels, scores=SCORES, *, title="Anomaly detection report", n_worst=4, **measured):
    """``write_report`` of ``Evaluation.from_predictions(labels, scores, THRESHOLD, **measured)``."""
    evaluation = Evaluation.from_predictions(labels, scores, THRESHOLD, **measured)
    return write_report(directory, evaluation, title=title, n_worst=n_worst)


def report_of(labelled, directory, **options):
    """The report of the labelled example, with maps and masks, two worst cases of each kind."""
    paths, labels, masks, maps = labelled
    settings = dict(images=paths, maps=maps, masks=masks, defect_types=TYPES, n_worst=2)
    return report(directory, labels, **{**settings, **options})


def test_report_is_valid_html_referencing_only_what_it_wrote(labelled, tmp_path):
    paths, labels, masks, maps = labelled
    out = tmp_path / "report"
    written = report_of(labelled, out, title="stripes & co")
    assert written == out / REPORT_FILE
    page = _parse(written)
    _check_references(page, out)
    assert PER_IMAGE_FILE in page.urls
    # ROC, PRO, histogram, two false positives and two false negatives.
    assert sum(url.startswith("data:image/png") for url in page.urls) == 7
    assert "<title>stripes &amp; co</title>" in written.read_text(encoding="utf-8")


def test_report_metrics_equal_the_computed_ones(labelled, tmp_path):
    paths, labels, masks, maps = labelled
    report_of(labelled, tmp_path)
    page = _parse(tmp_path / REPORT_FILE)
    assert _table(page, "threshold_free") == pytest.approx(evaluate(labels, SCORES, masks, maps))
    assert set(_table(page, "threshold_free")) == {
        "image_auroc",
        "image_f1_max",
        "pixel_auroc",
        "aupro",
        "pixel_f1_max",
    }
    at_threshold = threshold_metrics(labels, SCORES, THRESHOLD)
    assert _table(page, "at_threshold") == at_threshold
    assert (at_threshold["tn"], at_threshold["fp"], at_threshold["fn"], at_threshold["tp"]) == (4, 2, 3, 3)
    assert _table(page, "confusion") == {"tn": 4, "fp": 2, "fn": 3, "tp": 3}
    per_type = per_type_metrics(labels, SCORES, TYPES, THRESHOLD)
    for name in ("good", "scratch", "blob"):
        assert _table(page, "per_type", row=name) == per_type[name]
    # scratch: 0.95, 0.7, 0.6 all caught; blob: 0.45, 0.2, 0.5 all missed.
    assert _table(page, "per_type", row="scratch")["recall"] == 1.0
    assert _table(page, "per_type", row="blob")["recall"] == 0.0
    assert _table(page, "per_type", row="good")["false_positive_rate"] == pytest.approx(2 / 6)
    # The worst mistakes, worst first, at most n_worst of each.
    cases = [(figure["data-case"], int(figure["data-index"])) for figure in page.figures]
    assert cases == [
        ("false_positive", 4),
        ("false_positive", 3),
        ("false_negative", 9),
        ("false_negative", 7),
    ]


def test_report_per_image_csv_has_one_correct_row_per_image(labelled, tmp_path):
    paths, labels, masks, maps = labelled
    report(tmp_path, labels, images=paths, maps=maps, defect_types=TYPES)
    with open(tmp_path / PER_IMAGE_FILE, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(paths)
    assert [row["path"] for row in rows] == paths
    assert [row["defect_type"] for row in rows] == TYPES
    assert [int(row["label"]) for row in rows] == labels.tolist()
    assert [float(row["score"]) for row in rows] == SCORES.tolist()
    predicted = [-1 if score > THRESHOLD else 1 for score in SCORES]
    assert [int(row["predicted"]) for row in rows] == predicted
    wrong = {3, 4, 7, 9, 11}
    assert [row["correct"] for row in rows] == [str(i not in wrong) for i in range(len(paths))]


def test_report_without_maps_has_image_metrics_and_no_overlays(labelled, tmp_path):
    paths, labels, _, _ = labelled
    report(tmp_path, labels, images=paths)
    page = _parse(tmp_path / REPORT_FILE)
    _check_references(page, tmp_path)
    assert set(_table(page, "threshold_free")) == {"image_auroc", "image_f1_max"}
    # ROC and histogram only; the mistakes are listed without pictures; types from labels.
    assert sum(url.startswith("data:") for url in page.urls) == 2
    assert [int(figure["data-index"]) for figure in page.figures] == [4, 3, 9, 7, 11]
    assert set(page.tags) >= {"figcaption"}
    assert list(per_type_metrics(labels, SCORES, None, THRESHOLD)) == ["normal", "anomalous"]
    assert _table(page, "per_type", row="anomalous")["n_flagged"] == 3


def test_report_escapes_names(labelled, tmp_path):
    paths, labels, _, _ = labelled
    types = ["good"] * 6 + ["<script>alert(1)</script>", 'a "quoted" & type'] * 3
    report(tmp_path, labels, images=paths, defect_types=types)
    page = _parse(tmp_path / REPORT_FILE)
    _check_references(page, tmp_path)
    rows = {cell.get("data-row") for cell in page.cells if cell["data-table"] == "per_type"}
    assert rows == {"good", "<script>alert(1)</script>", 'a "quoted" & type'}


def test_report_checks_its_inputs(labelled, tmp_path):
    paths, labels, masks, maps = labelled
    with pytest.raises(ValueError, match="12 labels but 11 images"):
        report(tmp_path, labels, images=paths[:-1])
    with pytest.raises(ValueError, match="mask 0 has shape"):
        report(tmp_path, labels, images=paths, maps=maps, masks=[m[:-1] for m in masks])
    with pytest.raises(ValueError, match="masks were given without maps"):
        report(tmp_path, labels, images=paths, masks=masks)
    with pytest.raises(ValueError, match="single class"):
        report(tmp_path, np.ones(12), images=paths)
    assert not (tmp_path / REPORT_FILE).exists()


def test_report_of_a_fitted_detector(fitted, stripes, tmp_path):
    """One pass for maps and scores, masks on the maps' grid, and the model that made them."""
    images, labels, masks = stripes
    test_images, test_labels = images[20:], labels[20:]
    result = evaluate_detector(fitted, test_images, test_labels, masks=list(masks[20:]))
    written = result.to_html(tmp_path)
    page = _parse(written)
    _check_references(page, tmp_path)
    predicted = fitted.predict(test_images)
    assert _table(page, "at_threshold")["fp"] == int(((predicted == -1) & (test_labels == 1)).sum())
    assert _table(page, "at_threshold")["tp"] == int(((predicted == -1) & (test_labels == -1)).sum())
    maps, scores = fitted.anomaly_map(test_images, return_scores=True)
    assert _table(page, "threshold_free")["aupro"] == pytest.approx(
        evaluate(test_labels, scores, result.masks, list(maps))["aupro"]
    )
    html = written.read_text(encoding="utf-8")
    # The model section: backbone, changed parameters, how the threshold was set, files, version.
    for text in ("<h2>Model</h2>", "efficientnet_lite0", "held-out training images", "in-memory images"):
        assert text in html


def test_each_worst_case_shows_the_plain_image_beside_its_overlay_and_a_colour_bar(labelled, tmp_path):
    paths, labels, masks, maps = labelled
    page = _parse(report_of(labelled, tmp_path))
    cases = [url for url in page.urls if url.startswith("data:")][3:]  # after ROC, PRO, histogram
    assert len(cases) == 4
    for url in cases:
        with Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) as png:
            pixels = np.asarray(png.convert("RGB")).astype(int)
        height, width, _ = pixels.shape
        assert width > 1.8 * (height - 55)  # two square panels side by side, a colour bar below
        left, right = pixels[: height - 60, : width // 2 - 5], pixels[: height - 60, width // 2 + 5 :]
        # The plain image is the grey-toned stripes; its overlay is tinted by the colour map.
        assert np.abs(left[..., 0] - left[..., 2]).mean() < 20
        assert np.abs(right[..., 0] - right[..., 2]).mean() > 20
