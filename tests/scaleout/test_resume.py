"""`kill -9` in the middle of training, then `dvc repro`: training continues after the last
finished epoch, in the same MLflow run, and ends with the planned number of epochs."""

import csv
import json
import os
import signal
import subprocess
import time

import pytest

pytestmark = pytest.mark.scaleout
EPOCHS = 12


def test_dvc_repro_resumes_training_after_a_kill(scaleout_project, set_params):
    from mlflow import MlflowClient

    project = scaleout_project("resume", None)
    set_params(project.root, train={"epochs": EPOCHS, "early_stopping_patience": 0})
    project.run("dvc", "repro", "augment")  # fetch, split, augment
    state_path = project.root / "data/train_backup/state.json"
    started = time.perf_counter()
    first = subprocess.Popen(["dvc", "repro"], cwd=project.root, env=project.env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)
    killed_after = None
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and first.poll() is None:
            if state_path.is_file():
                try:
                    rows = json.loads(state_path.read_text())["rows"]
                except ValueError:  # being replaced
                    rows = []
                if len(rows) >= 3:
                    killed_after = len(rows)
                    os.killpg(first.pid, signal.SIGKILL)
                    break
            time.sleep(0.2)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
        output = first.communicate(timeout=60)[0]
    first_seconds = time.perf_counter() - started
    assert killed_after is not None and killed_after < EPOCHS, f"training was not killed mid-run:\n{output[-3000:]}"
    run_id = json.loads(state_path.read_text())["run_id"]

    started = time.perf_counter()
    again = project.run("dvc", "repro")
    second_seconds = time.perf_counter() - started
    assert "Running stage 'train'" in again.stdout
    resumed = [line for line in again.stdout.splitlines() if "resuming" in line]
    assert resumed, again.stdout[-3000:]
    resumed_epoch = int(resumed[0].split("after epoch ")[1].split()[0])
    assert killed_after - 1 <= resumed_epoch <= killed_after + 1, (killed_after, resumed[0])

    # the plan is kept: the run ends at the planned epoch, with one history row per epoch
    assert json.loads((project.root / "metrics/train.json").read_text())["epochs_run"] == EPOCHS
    with open(project.root / "plots/train_history.csv") as f:
        assert [int(row["epoch"]) for row in csv.DictReader(f)] == list(range(1, EPOCHS + 1))
    # one MLflow run, the one the killed process started, holds every epoch
    assert json.loads((project.root / "data/model/run.json").read_text())["run_id"] == run_id
    uri = f"sqlite:///{project.root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    train_runs = [r for r in client.search_runs([client.get_experiment_by_name("fer-emotion").experiment_id])
                  if r.data.tags.get("stage") == "train"]
    assert [r.info.run_id for r in train_runs] == [run_id]
    steps = sorted({m.step for m in client.get_metric_history(run_id, "val_accuracy")})
    assert steps == list(range(1, EPOCHS + 1)), steps
    assert not (project.root / "data/train_backup").exists(), "a finished run leaves no backup"
    print(f"killed after {killed_after} epochs ({first_seconds:.1f} s), resumed run {second_seconds:.1f} s")
