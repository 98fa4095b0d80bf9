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
BOOKKEEPING = {f"{PACKAGE}/pipeline/{name}.py" for name in ("__init__", "params", "stage_io", "tracking")}
STAGES = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]


def module_file(module: str, root: Path = REPO_ROOT) -> str | None:
    """``emotion_recognition.x`` -> ``emotion_recognition/x.py`` (or ``x/__init__.py``), None outside the package."""
    if module != PACKAGE and not module.startswith(PACKAGE + "."):
        return None
    path = module.replace(".", "/")
    return f"{path}.py" if (root / f"{path}.py").is_file() else f"{path}/__init__.py"


def package_imports(source: Path, root: Path = REPO_ROOT) -> set[str]:
    """Files of the package that ``source`` imports, in any form: ``from emotion_recognition.x
    import y``, ``import emotion_recognition.x as z``, ``from emotion_recognition import x``,
    relative ``from .x import y`` (inside the package), at module level or inside functions."""
    try:
        here = source.resolve().relative_to(root.resolve()).parent.parts  # the package a relative import starts from
    except ValueError:
        here = ()
    modules = []
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = ".".join(here[: len(here) - node.level + 1] if node.level else ())
            module = ".".join(part for part in (base, node.module or "") if part)
            modules.append(module)
            modules += [f"{module}.{alias.name}" for alias in node.names]  # submodules imported by name
        elif isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names]
    files = {module_file(module, root) for module in modules}
    return {file for file in files if file and (root / file).is_file()}


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


def test_package_imports_reads_every_import_form(tmp_path):
    script = tmp_path / "stage.py"
    script.write_text("import os\nfrom emotion_recognition.labels import EMOTIONS\n"
                      "import emotion_recognition.pipeline.model as m\nfrom numpy import zeros\n"
                      "from emotion_recognition import tta\n"
                      "def late():\n    from emotion_recognition.pipeline.augment import augment_image\n")
    assert package_imports(script) == {f"{PACKAGE}/{name}.py" for name in (
        "labels", "pipeline/model", "tta", "pipeline/augment", "__init__")}


def test_package_imports_resolves_relative_imports_inside_the_package(tmp_path):
    package = tmp_path / PACKAGE
    package.mkdir()
    for name in ("__init__", "labels", "preprocessing"):
        (package / f"{name}.py").write_text("")
    module = package / "data.py"
    module.write_text("from .labels import EMOTIONS\nfrom . import preprocessing\n")
    assert package_imports(module, root=tmp_path) == {f"{PACKAGE}/{name}.py" for name in ("__init__", "labels", "preprocessing")}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_deps_cover_the_code_it_runs(stage):
    script = REPO_ROOT / "stages" / f"{stage}.py"
    deps = set(STAGES[stage]["deps"])
    assert f"stages/{stage}.py" in deps
    missing = sorted(imported_closure(script) - deps)
    assert not missing, f"dvc.yaml stage {stage!r}: add {missing} to its deps"


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_deps_name_no_module_it_does_not_run(stage):
    """A module in a stage's deps that the stage never imports re-runs it for nothing: e.g. the
    2-hour train stage after a change to serving-side test-time augmentation."""
    script = REPO_ROOT / "stages" / f"{stage}.py"
    modules = {dep for dep in STAGES[stage]["deps"] if dep.startswith(f"{PACKAGE}/")}
    extra = sorted(modules - imported_closure(script))
    assert not extra, f"dvc.yaml stage {stage!r}: {extra} in its deps, but the stage does not import them"
