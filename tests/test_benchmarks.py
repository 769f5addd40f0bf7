"""Every benchmark script imports against today's package (they run outside the test suite)."""

import importlib
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
HELPERS = ("common", "timing")  # modules the scripts share, without a main()


@pytest.mark.parametrize("script", sorted(path.stem for path in BENCHMARKS.glob("*.py")))
def test_benchmark_script_imports(script, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    for name in ("common", "timing", "suite"):  # the scripts' own helper modules, fresh
        monkeypatch.delitem(sys.modules, name, raising=False)
    module = importlib.import_module(script)
    if script not in HELPERS:
        assert callable(getattr(module, "main", None)), f"benchmarks/{script}.py has no main()"
