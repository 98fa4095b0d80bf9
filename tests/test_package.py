"""The shipped package's shape: no import cycles, thin stage scripts, no print in library modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from test_dvc_yaml import PACKAGE, REPO_ROOT, package_imports

MODULES = sorted((REPO_ROOT / PACKAGE).rglob("*.py"))  # the core and pipeline/
# Command-line entry points, which talk to the user on stdout/stderr: the `emotion` CLI, `python -m
# emotion_recognition.pipeline.bundle`, and the stage runner's one-line exit messages.
ENTRY_POINTS = {"cli.py", "bundle.py", "stage_io.py"}


def import_graph() -> dict[str, set[str]]:
    return {m.relative_to(REPO_ROOT).as_posix(): package_imports(m) - {f"{PACKAGE}/__init__.py"} for m in MODULES}


def test_the_package_has_no_import_cycles():
    graph, cycles = import_graph(), []

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            cycles.append(" -> ".join(path[path.index(node):] + [node]))
            return
        for following in sorted(graph.get(node, ())):
            visit(following, path + [node])

    for module in graph:
        visit(module, [])
    assert not cycles, "import cycles:\n" + "\n".join(sorted(set(cycles)))


def test_test_helpers_are_not_shipped():
    assert not (REPO_ROOT / PACKAGE / "testing.py").exists()
    assert (REPO_ROOT / "tests" / "testkit.py").is_file()


@pytest.mark.parametrize("script", sorted((REPO_ROOT / "stages").glob("*.py")), ids=lambda p: p.name)
def test_stage_scripts_are_thin(script):
    """A stage is a short main() over package functions, which tests and notebooks can call too."""
    lines = len(script.read_text().splitlines())
    assert lines <= 120, f"{script.name} has {lines} lines: move its logic into {PACKAGE}/"


@pytest.mark.parametrize("module", [m for m in MODULES if m.name not in ENTRY_POINTS], ids=lambda p: p.name)
def test_library_modules_log_rather_than_print(module):
    calls = [node.lineno for node in ast.walk(ast.parse(module.read_text()))
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print"]
    assert not calls, f"{module.name} calls print() on lines {calls}: use logging"


def test_the_inference_core_imports_nothing_from_the_pipeline():
    """The Bento and `pip install .` users run the core only (issue 43): no core module reaches pipeline/."""
    core = {name: deps for name, deps in import_graph().items() if "/pipeline/" not in name}
    reached = {name: sorted(d for d in deps if "/pipeline/" in d) for name, deps in core.items()}
    assert not any(reached.values()), {name: deps for name, deps in reached.items() if deps}
