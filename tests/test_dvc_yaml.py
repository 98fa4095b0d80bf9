"""dvc.yaml declares, for every stage, the package modules whose code shapes that stage's outputs.

A module missing from a stage's ``deps`` means `dvc repro` keeps a stale model (or split, or
metrics) after that module changes, e.g. a new label order or preprocessing step.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "emotion_recognition"
# Bookkeeping that cannot change a stage's outputs: params validation (its values are DVC params
# already), atomic writes and JSON, MLflow settings. Not followed further either.
BOOKKEEPING = {f"{PACKAGE}/params.py", f"{PACKAGE}/stage_io.py", f"{PACKAGE}/tracking.py"}
STAGES = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]


def package_imports(source: Path) -> set[str]:
    """Files of the package that ``source`` imports (``from emotion_recognition.x import ...``)."""
    files = set()
    for node in ast.walk(ast.parse(source.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            if name.startswith(PACKAGE + "."):
                files.add(name.replace(".", "/") + ".py")
    return files


def imported_closure(script: Path) -> set[str]:
    """Package files ``script`` needs, directly or through other package files."""
    seen: set[str] = set()
    todo = list(package_imports(script))
    while todo:
        file = todo.pop()
        if file in seen or file in BOOKKEEPING:
            continue
        seen.add(file)
        todo.extend(package_imports(REPO_ROOT / file))
    return seen


def test_package_imports_reads_from_imports(tmp_path):
    script = tmp_path / "stage.py"
    script.write_text("import os\nfrom emotion_recognition.labels import EMOTIONS\n"
                      "import emotion_recognition.model\nfrom numpy import zeros\n")
    assert package_imports(script) == {f"{PACKAGE}/labels.py", f"{PACKAGE}/model.py"}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_deps_cover_the_code_it_runs(stage):
    script = REPO_ROOT / "stages" / f"{stage}.py"
    deps = set(STAGES[stage]["deps"])
    assert f"stages/{stage}.py" in deps
    missing = sorted(imported_closure(script) - deps)
    assert not missing, f"dvc.yaml stage {stage!r}: add {missing} to its deps"
