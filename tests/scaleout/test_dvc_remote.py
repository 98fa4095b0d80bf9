"""Sharing the pipeline's outputs through a DVC remote: push, fresh clone, pull, nothing to rerun."""

import shutil
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.scaleout
REPO_ROOT = Path(__file__).resolve().parents[2]


def test_a_fresh_clone_pulls_the_outputs_and_has_nothing_to_reproduce(team_project, tmp_path):
    # the project's own remote setting (.dvc/config): a folder beside the checkout
    shutil.copy(REPO_ROOT / ".dvc" / "config", team_project.root / ".dvc" / "config")
    team_project.run("git", "add", ".dvc/config")
    team_project.run("git", "commit", "-q", "-m", "remote")
    remote = (team_project.root.parent / "fer-dvc-remote").resolve()
    started = time.perf_counter()
    team_project.run("dvc", "push")
    push_seconds = time.perf_counter() - started
    assert any(remote.rglob("*")), f"dvc push wrote nothing to {remote}"

    clone = team_project.root.parent / "clone"
    team_project.run("git", "clone", "-q", str(team_project.root), str(clone))
    # the dataset itself is not on the remote (FER2013's licence): each checkout brings its copy
    shutil.copy(team_project.root / "data" / "fer2013.zip", clone / "data" / "fer2013.zip")
    started = time.perf_counter()
    pulled = team_project.run("dvc", "pull", cwd=clone)
    pull_seconds = time.perf_counter() - started
    assert (clone / "data/model/model.keras").read_bytes() == (team_project.root / "data/model/model.keras").read_bytes()
    status = team_project.run("dvc", "status", cwd=clone)
    assert "Data and pipelines are up to date." in status.stdout, status.stdout
    repro = team_project.run("dvc", "repro", cwd=clone)
    assert team_project.ran(repro) == set(), repro.stdout
    assert "Data and pipelines are up to date." in repro.stdout, repro.stdout
    print(f"dvc push {push_seconds:.1f} s, dvc pull {pull_seconds:.1f} s\n{pulled.stdout[-300:]}")
