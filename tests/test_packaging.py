"""The install fits the job: ``pip install .`` is inference only, the extras add the pipeline, the
service and Ray, every pin is the locked version, and serving/requirements.txt is base + [serve].

``python tests/test_packaging.py`` rewrites serving/requirements.txt from pyproject.toml."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO_ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
SERVING_REQUIREMENTS = REPO_ROOT / "serving" / "requirements.txt"
NOT_IN_THE_BASE = {"mlflow", "mlflow-skinny", "dvc", "bentoml", "psycopg", "uv", "ray", "matplotlib", "pytest"}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def serving_requirements() -> str:
    lines = dict.fromkeys([*PROJECT["dependencies"], *PROJECT["optional-dependencies"]["serve"]])
    return ("# Generated from pyproject.toml (dependencies + [serve]) by `python tests/test_packaging.py`:\n"
            "# edit pyproject.toml, then run that. `bentoml build` installs these into the Bento.\n"
            + "".join(f"{line}\n" for line in lines))


def closure(requirements: list[str]) -> set[str]:
    """The installed distributions these requirements pull in (markers evaluated, extras followed)."""
    seen: set[str] = set()
    todo = [(Requirement(r), "") for r in requirements]
    while todo:
        requirement, extra = todo.pop()
        if requirement.marker and not requirement.marker.evaluate({"extra": extra}):
            continue
        name = canonical(requirement.name)
        for wanted in [""] * (name not in seen) + sorted(requirement.extras):
            todo += [(Requirement(r), wanted) for r in metadata.requires(name) or []]
        seen.add(name)
    return seen


def test_serving_requirements_are_derived_from_pyproject():
    assert SERVING_REQUIREMENTS.read_text() == serving_requirements(), (
        "serving/requirements.txt differs from pyproject.toml's dependencies + [serve]: "
        "run `python tests/test_packaging.py`")


def test_every_pin_is_the_locked_version():
    lock = {canonical(r.name): str(r.specifier) for r in
            map(Requirement, (REPO_ROOT / "requirements.lock").read_text().splitlines())}
    groups = [PROJECT["dependencies"], *PROJECT["optional-dependencies"].values()]
    for requirement in (Requirement(r) for group in groups for r in group):
        if canonical(requirement.name) != canonical(PROJECT["name"]):
            assert str(requirement.specifier) == lock[canonical(requirement.name)], requirement


def test_the_base_install_has_nothing_of_the_pipeline_or_the_server():
    base = closure(PROJECT["dependencies"])
    assert {"tensorflow-cpu", "openvino", "pandas", "opencv-python-headless"} <= base
    assert not base & NOT_IN_THE_BASE, base & NOT_IN_THE_BASE
    extras = [r for group in PROJECT["optional-dependencies"].values() for r in group
              if canonical(Requirement(r).name) != canonical(PROJECT["name"])]
    assert NOT_IN_THE_BASE <= closure(extras)


def link_distributions(names: set[str], site_packages: Path) -> None:
    """Symlink the installed files of ``names`` into ``site_packages``: a venv holding exactly
    those distributions, made in seconds and offline."""
    for name in names:
        for top in {Path(str(f)).parts[0] for f in metadata.distribution(name).files or []}:
            source = Path(metadata.distribution(name).locate_file(top))
            if top not in ("..", "__pycache__") and source.exists() and not (site_packages / top).exists():
                (site_packages / top).symlink_to(source)


@pytest.mark.slow
def test_a_fresh_venv_with_the_base_install_runs_emotion_batch(tmp_path):
    """A venv with only the base dependencies (linked from this environment: offline), the project
    installed into it by pip; `emotion batch` on two images runs, and MLflow is not importable."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site_packages = next(venv.glob("lib/python*/site-packages"))
    link_distributions(closure(PROJECT["dependencies"]) | {"setuptools"}, site_packages)
    source = tmp_path / "src"  # a copy: building in the checkout would leave build/ and *.egg-info there
    shutil.copytree(REPO_ROOT / "emotion_recognition", source / "emotion_recognition",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, source / name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PIP_CONSTRAINT", "PIP_FIND_LINKS")}
    pip = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python")]
    for command in ([*pip, "install", "--quiet", "--no-deps", "--no-index", "--no-build-isolation", str(source)],
                    [*pip, "check"]):
        result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path)
        assert result.returncode == 0, f"{command}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    import numpy as np
    from PIL import Image

    for i in range(2):
        Image.fromarray(np.full((120, 160, 3), 60 * i, np.uint8)).save(tmp_path / f"{i}.png")
    result = subprocess.run([str(venv / "bin" / "emotion"), "batch", "0.png", "1.png", "-o", "out.csv", "--quiet",
                             "--workers", "1"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 file(s), 0 face(s), 0 error(s)" in result.stdout
    assert (tmp_path / "out.files.csv").read_text().count(",ok,") == 2
    missing = subprocess.run([str(venv / "bin" / "python"), "-c", "import mlflow"], capture_output=True, env=env)
    assert missing.returncode != 0


if __name__ == "__main__":
    SERVING_REQUIREMENTS.write_text(serving_requirements())
