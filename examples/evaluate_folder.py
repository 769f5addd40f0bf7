"""Evaluate a detector on a labelled folder and write the HTML report, in five lines.

The folder holds normal training images directly in it, and ``good/`` plus one subfolder
per defect type to test on (masks, if any, in ``ground_truth/<type>/``); see
:func:`sksimplenet.datasets.load_folder`. Offline on the ``efficientnet_lite0`` backbone.

Usage::

    python examples/evaluate_folder.py DATA_FOLDER REPORT_FOLDER
"""

import sys

from sksimplenet import SimpleNetDetector, evaluate
from sksimplenet.datasets import load_folder

folder, report = sys.argv[1], sys.argv[2]
data = load_folder(folder)
detector = SimpleNetDetector("efficientnet_lite0", random_state=0).fit(data["train_paths"])
result = evaluate(detector, data["test_paths"], data["test_labels"], masks=data["test_masks"],
                  defect_types=data["test_categories"])  # fmt: skip
print(result.to_markdown())
print("report:", result.to_html(report))
