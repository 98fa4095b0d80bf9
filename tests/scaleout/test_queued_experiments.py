"""Two queued experiments run side by side (`dvc queue start --jobs 2`), each in its own DVC
workspace, each its own MLflow run in the project's default SQLite store (mlflow.db)."""

import json
import time

import pytest

pytestmark = pytest.mark.scaleout


def wait_for_queue(project, timeout: float = 900) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = project.run("dvc", "queue", "status").stdout
        if "Queued" not in status and "Running" not in status:
            return status
        time.sleep(3)
    raise AssertionError(f"queue still busy after {timeout}s:\n{status}")


def test_two_queued_experiments_run_in_parallel_into_one_sqlite_store(scaleout_project):
    from mlflow import MlflowClient

    project = scaleout_project("queue", None)  # no MLFLOW_TRACKING_URI: the default store
    project.run("dvc", "repro")
    project.run("git", "add", "-A")
    project.run("git", "commit", "-q", "-m", "baseline")
    baseline_lock = (project.root / "dvc.lock").read_text()
    for seed in (2, 3):
        # the dataset is untracked (not in git, not on the remote): copied into each workspace
        project.run("dvc", "exp", "run", "--queue", "-S", f"train.seed={seed}", "--name", f"seed{seed}",
                    "--copy-paths", "data/fer2013.zip")
    try:
        project.run("dvc", "queue", "start", "--jobs", "2")
        status = wait_for_queue(project)
    finally:
        project.run("dvc", "queue", "stop", timeout=120)
    assert status.count("Success") == 2, status
    assert "Failed" not in status, status + project.run("dvc", "queue", "logs", "seed2").stdout[-3000:]

    # the workspace is untouched; each experiment has its own outputs and metrics
    assert (project.root / "dvc.lock").read_text() == baseline_lock
    shown = json.loads(project.run("dvc", "exp", "show", "--json").stdout)
    experiments = {}
    for commit in shown:
        for exp in commit.get("experiments") or []:
            for rev in exp["revs"]:
                data = rev["data"]
                experiments[rev["name"]] = data
    assert {"seed2", "seed3"} <= set(experiments), list(experiments)
    seeds = {name: experiments[name]["params"]["params.yaml"]["data"]["train"]["seed"] for name in ("seed2", "seed3")}
    assert seeds == {"seed2": 2, "seed3": 3}

    # one MLflow run per experiment (plus the baseline), all in the checkout's mlflow.db
    uri = f"sqlite:///{project.root / 'mlflow.db'}"
    assert not list((project.root / ".dvc").rglob("mlflow.db")), "an experiment logged inside its temp workspace"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.get_experiment_by_name("fer-emotion")
    runs = client.search_runs([experiment.experiment_id])
    train_runs = [r for r in runs if r.data.tags.get("stage") == "train"]
    assert len(train_runs) == 3, [(r.info.run_id, r.data.params.get("train.seed")) for r in runs]
    assert sorted(r.data.params["train.seed"] for r in train_runs) == ["1", "2", "3"]
    assert all(r.info.status == "FINISHED" and "test_accuracy" in r.data.metrics for r in train_runs)
    versions = client.search_model_versions("name='fer-emotion'")
    assert len({v.run_id for v in versions if v.run_id in {r.info.run_id for r in train_runs}}) >= 2
