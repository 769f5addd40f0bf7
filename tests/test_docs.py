"""Every Python snippet of the README and docs/ runs as written, unless it says why it cannot.

A snippet that needs what a test has not got (a data folder, a download, a GPU, a model file)
is preceded by ``<!-- not run: REASON -->``; a transcript (``>>>``) is shown, not run. The
others of one page run in order, in one namespace, in a temporary folder.
"""

import re
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^(?P<indent>[ \t]*)```python\n(?P<code>.*?)\n(?P=indent)```", re.S | re.M)


def snippets(page: Path) -> list[tuple[int, str, str | None]]:
    """(line, code, reason it is not run or None) of each Python snippet on the page."""
    text = page.read_text(encoding="utf-8")
    found = []
    for match in FENCE.finditer(text):
        line = text[: match.start("code")].count("\n") + 1
        code = textwrap.dedent(match.group("code"))
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]  # the line above the fence
        reason = re.search(r"<!-- not run: (.*?) -->", before)
        if code.lstrip().startswith(">>>"):
            reason = "a transcript"
        found.append((line, code, reason.group(1) if isinstance(reason, re.Match) else reason))
    return found


def test_every_page_with_snippets_is_found():
    counted = {page.name: len(snippets(page)) for page in PAGES}
    assert counted["README.md"] >= 1 and counted["honest-protocol.md"] >= 1 and counted["deployment.md"] >= 8


@pytest.mark.parametrize("page", [page for page in PAGES if snippets(page)], ids=lambda page: page.name)
def test_snippets_run_as_written(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__docs__"}
    ran = 0
    for line, code, reason in snippets(page):
        if reason is not None:
            assert reason.strip(), f"{page.name}:{line}: say why the snippet is not run"
            continue
        exec(compile(code, f"{page.name}:{line}", "exec"), namespace)
        ran += 1
    if page.name in ("README.md", "honest-protocol.md", "deployment.md"):
        assert ran >= 1  # the quickstart and the cross-validation examples run
