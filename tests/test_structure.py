"""The package's shape: imports go one way, and the command line only parses and calls."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "sksimplenet"


def _imports(module: Path) -> set[str]:
    """The package's modules that ``module`` imports anywhere (top level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
    return found - {"__init__"}


def _graph() -> dict[str, set[str]]:
    modules = {path.stem: path for path in PACKAGE.glob("*.py") if path.stem != "__init__"}
    return {name: _imports(path) & set(modules) for name, path in modules.items()}


def test_no_module_imports_one_that_imports_it_back():
    graph = _graph()
    done, stack = set(), []

    def visit(name):
        if name in stack:
            raise AssertionError("import cycle: " + " -> ".join([*stack[stack.index(name) :], name]))
        if name in done:
            return
        stack.append(name)
        for imported in sorted(graph[name]):
            visit(imported)
        stack.pop()
        done.add(name)

    for name in sorted(graph):
        visit(name)


def test_the_estimator_knows_nothing_of_files_reports_or_the_command_line():
    graph = _graph()
    assert graph["detector"].isdisjoint({"persistence", "inspection", "report", "cli", "plotting"})
    assert "sklearn" not in (PACKAGE / "training.py").read_text()  # torch code never imports sklearn


def test_the_command_line_calls_no_metric_report_or_plotting_function_itself():
    used = _graph()["cli"]
    assert used.isdisjoint({"metrics", "report", "plotting"}), used
    assert len((PACKAGE / "cli.py").read_text().splitlines()) <= 560
