"""dvc.lock records the run that made the bundled model, and that record is still true.

- every stage's params in dvc.lock equal params.yaml's, and its command and deps are dvc.yaml's;
- every code dep in dvc.lock (a file git tracks) has the md5 DVC recorded for it;
- the bundled model (emotion_recognition/default_model/model.keras, with the run.json bundled
  beside it) is byte for byte the train stage's output ``data/model`` in dvc.lock.

So a params or code change that would retrain cannot land without a new ``dvc repro`` and
``python -m emotion_recognition.pipeline.bundle``. A change that cannot alter any output (a comment, a
docstring) goes in COSMETIC, keyed by the exact md5 of the accepted file, with its reason; with
the data in place, ``dvc commit <stage>`` records it in dvc.lock instead.
No data and no training are needed: this reads dvc.lock, params.yaml and the files in git.
"""

from __future__ import annotations

import copy
import hashlib
import json
import subprocess
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLED = REPO_ROOT / "emotion_recognition" / "default_model"
# path -> (md5 of the file as accepted, why its change cannot alter a stage's outputs)
COSMETIC: dict[str, tuple[str, str]] = {}


def md5_file(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()  # DVC 3 hashes a file's raw bytes


def dir_md5(files: dict[str, str]) -> str:
    """DVC 3's hash of a directory from its files' md5s (relpath -> md5): the md5 of the sorted
    JSON manifest, with '.dir' appended (dvc_data.hashfile.tree.Tree.as_bytes)."""
    manifest = sorted(({"md5": md5, "relpath": relpath} for relpath, md5 in files.items()), key=lambda e: e["relpath"])
    return hashlib.md5(json.dumps(manifest, sort_keys=True).encode("utf-8")).hexdigest() + ".dir"


def resolve(value: str, params: dict) -> str:
    """dvc.yaml's ``${group.key}`` templating, for the one form dvc.yaml uses."""
    if value.startswith("${") and value.endswith("}"):
        node = params
        for key in value[2:-1].split("."):
            node = node[key]
        return str(node)
    return value


def git_files(root: Path) -> set[str]:
    listed = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True, check=True).stdout
    return set(listed.splitlines())


def lock_mismatches(lock: dict, pipeline: dict, params: dict, root: Path, tracked: set[str],
                    cosmetic: dict[str, tuple[str, str]] = COSMETIC) -> list[str]:
    """What in ``lock`` (dvc.lock) no longer describes ``pipeline`` (dvc.yaml), ``params``
    (params.yaml) and the git-tracked files under ``root``; [] when it all holds."""
    problems = []
    for name, stage in pipeline["stages"].items():
        locked = lock["stages"].get(name)
        if locked is None:
            problems.append(f"{name}: not in dvc.lock")
            continue
        if locked["cmd"] != stage["cmd"]:
            problems.append(f"{name}: cmd {locked['cmd']!r} in dvc.lock, {stage['cmd']!r} in dvc.yaml")
        locked_params = locked.get("params", {}).get("params.yaml", {})
        for group in stage.get("params", []):
            if locked_params.get(group) != params.get(group):
                problems.append(f"{name}: params.yaml's {group!r} differs from the run's in dvc.lock")
        wanted = {resolve(dep, params) for dep in stage.get("deps", [])}
        recorded = {dep["path"]: dep for dep in locked.get("deps", [])}
        if set(recorded) != wanted:
            problems.append(f"{name}: deps {sorted(set(recorded) ^ wanted)} differ between dvc.yaml and dvc.lock")
        for path, dep in sorted(recorded.items()):
            if path not in tracked:
                continue  # data (fetched or made by a stage): DVC's own business
            actual = md5_file(root / path)
            accepted = cosmetic.get(path)
            if actual != dep["md5"] and not (accepted and accepted[0] == actual):
                problems.append(f"{name}: {path} changed since the run in dvc.lock (md5 {actual}, recorded {dep['md5']})")
    return problems


def load(root: Path) -> tuple[dict, dict, dict]:
    return tuple(yaml.safe_load((root / name).read_text()) for name in ("dvc.lock", "dvc.yaml", "params.yaml"))


def test_dvc_lock_matches_params_and_code():
    lock, pipeline, params = load(REPO_ROOT)
    problems = lock_mismatches(lock, pipeline, params, REPO_ROOT, git_files(REPO_ROOT))
    assert not problems, ("dvc.lock no longer records what `dvc repro` would make: run it (then "
                          "`python -m emotion_recognition.pipeline.bundle`) and commit dvc.lock, or name a cosmetic "
                          "change in COSMETIC:\n" + "\n".join(problems))


def test_cosmetic_exemptions_name_a_reason_and_a_present_file():
    for path, (md5, reason) in COSMETIC.items():
        assert (REPO_ROOT / path).is_file() and len(md5) == 32 and reason.strip(), path


def test_bundled_model_is_the_train_stage_output():
    lock, _, _ = load(REPO_ROOT)
    (model_out,) = [out for out in lock["stages"]["train"]["outs"] if out["path"] == "data/model"]
    bundled = {name: md5_file(BUNDLED / name) for name in ("model.keras", "run.json")}
    assert dir_md5(bundled) == model_out["md5"], (
        "the bundled model is not the train stage's data/model in dvc.lock: run "
        "`python -m emotion_recognition.pipeline.bundle` after `dvc repro`")


@pytest.fixture
def recorded():
    return load(REPO_ROOT)


def test_a_params_change_without_a_rerun_is_caught(recorded):
    lock, pipeline, params = recorded
    changed = copy.deepcopy(params)
    changed["train"]["epochs"] += 1
    problems = lock_mismatches(lock, pipeline, changed, REPO_ROOT, git_files(REPO_ROOT))
    assert problems == ["train: params.yaml's 'train' differs from the run's in dvc.lock"]


def test_a_code_change_without_a_rerun_is_caught(recorded, tmp_path):
    lock, pipeline, params = recorded
    edited = "emotion_recognition/pipeline/training.py"
    (tmp_path / edited).parent.mkdir(parents=True)
    (tmp_path / edited).write_bytes((REPO_ROOT / edited).read_bytes() + b"\n# one more line\n")
    for path in git_files(REPO_ROOT):  # the rest as committed
        if path != edited and (REPO_ROOT / path).is_file() and any(
                path == dep["path"] for stage in lock["stages"].values() for dep in stage.get("deps", [])):
            (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / path).write_bytes((REPO_ROOT / path).read_bytes())
    problems = lock_mismatches(lock, pipeline, params, tmp_path, git_files(REPO_ROOT))
    assert len(problems) == 1 and problems[0].startswith(f"train: {edited} changed since the run")
    accepted = {edited: (md5_file(tmp_path / edited), "a comment only")}
    assert lock_mismatches(lock, pipeline, params, tmp_path, git_files(REPO_ROOT), accepted) == []


def test_a_different_bundled_model_is_caught():
    files = {"model.keras": "0" * 32, "run.json": "1" * 32}
    other = dict(files, **{"model.keras": "2" * 32})
    assert dir_md5(files) != dir_md5(other)
    # the manifest form DVC 3 hashes: sorted by relpath, keys sorted
    assert dir_md5(files) == hashlib.md5(
        b'[{"md5": "00000000000000000000000000000000", "relpath": "model.keras"}, '
        b'{"md5": "11111111111111111111111111111111", "relpath": "run.json"}]').hexdigest() + ".dir"
