"""One small real run of the whole pipeline: `dvc repro` on a subset of ../shared FER2013
(20 train and 10 test images per class, one epoch of a tiny model), in a project copy in tmp."""

import json
import os
import subprocess
import sys
import time
import zipfile
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

STAGES = ("fetch", "split", "augment", "train", "evaluate")
TRAIN_PER_CLASS, TEST_PER_CLASS = 20, 10


def subset_zip(source: Path, target: Path) -> Path:
    """The first images (by name) of every train/<label>/ and test/<label>/ folder of ``source``."""
    chosen = defaultdict(list)
    with zipfile.ZipFile(source) as archive:
        for name in sorted(archive.namelist()):
            parts = name.split("/")
            if len(parts) == 3 and parts[2].endswith(".jpg"):
                limit = TRAIN_PER_CLASS if parts[0] == "train" else TEST_PER_CLASS
                if len(chosen[parts[0], parts[1]]) < limit:
                    chosen[parts[0], parts[1]].append(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(target, "w") as subset:
            for names in chosen.values():
                for name in names:
                    subset.writestr(name, archive.read(name))
    assert len(chosen) == 14
    return target


class Project:
    def __init__(self, root: Path):
        self.root = root
        bin_dir = Path(sys.executable).parent
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
        env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
        env["MLFLOW_TRACKING_URI"] = self.tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
        env["DVC_NO_ANALYTICS"] = "1"
        self.env = env

    def run(self, *command: str, timeout: int = 900) -> subprocess.CompletedProcess:
        result = subprocess.run(command, cwd=self.root, env=self.env, capture_output=True, text=True, timeout=timeout)
        assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        return result

    def ran(self, result: subprocess.CompletedProcess) -> set[str]:
        return {stage for stage in STAGES if f"Running stage '{stage}'" in result.stdout}

    def json(self, path: str) -> dict:
        return json.loads((self.root / path).read_text())


@pytest.fixture(scope="module")
def pipeline(shared_fer2013, tmp_path_factory, make_project, set_params, mlflow_template):
    import shutil

    project = Project(make_project(tmp_path_factory.mktemp("pipeline")))
    subset_zip(shared_fer2013, project.root / "inputs" / "fer2013.zip")
    set_params(project.root, split={"val_fraction": 0.1, "seed": 42, "drop_duplicates": True},
               train={"epochs": 1, "batch_size": 32, "precision": "float32"})
    shutil.copy(mlflow_template, project.root / "mlflow.db")
    project.run("git", "init", "-q")
    project.run("dvc", "init", "-q")
    started = time.perf_counter()
    project.first = project.run("dvc", "repro")
    project.first_seconds = time.perf_counter() - started
    return project


def test_first_repro_runs_every_stage_and_writes_the_metrics(pipeline):
    assert pipeline.ran(pipeline.first) == set(STAGES), pipeline.first.stdout
    manifest = pipeline.json("data/fer2013/manifest.json")
    assert manifest["totals"] == {"train": 7 * TRAIN_PER_CLASS, "test": 7 * TEST_PER_CLASS}
    assert manifest["skipped_bad_images"] == 0
    split = pipeline.json("metrics/split.json")
    assert split["sizes"]["test"] == 7 * TEST_PER_CLASS
    assert split["sizes"]["val"] == 7 * 2
    assert pipeline.json("metrics/augment.json")["images_after"] >= split["sizes"]["train"]
    assert pipeline.json("metrics/train.json")["epochs_run"] == 1
    evaluate = pipeline.json("metrics/evaluate.json")
    assert evaluate["images"] == 7 * TEST_PER_CLASS
    assert 0 <= evaluate["accuracy"] <= 1 and set(evaluate["per_class"]) == {
        "angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"}
    for plot in ("augment_preview.png", "train_history.csv", "train_curves.png", "confusion.csv",
                 "per_class.csv", "confusion_matrix.png"):
        assert (pipeline.root / "plots" / plot).is_file(), plot
    lock = yaml.safe_load((pipeline.root / "dvc.lock").read_text())
    assert set(lock["stages"]) == set(STAGES)


def test_the_model_is_registered_and_the_bundled_model_stays_champion(pipeline):
    """One epoch of a tiny model in a fresh store does not beat the bundled default model on the
    same real faces, so the bundled model is registered after it and is the champion."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=pipeline.tracking_uri, registry_uri=pipeline.tracking_uri)
    champion = client.get_model_version_by_alias("fer-emotion", "champion")
    run = pipeline.json("data/model/run.json")
    first = client.get_model_version("fer-emotion", "1")
    assert first.run_id == run["run_id"]
    assert str(champion.version) == "2" and champion.tags["source"] == "bundled default model"
    assert float(champion.tags["test_accuracy"]) > float(first.tags["test_accuracy"])
    metrics = client.get_run(run["run_id"]).data.metrics
    assert metrics["test_accuracy"] == pytest.approx(pipeline.json("metrics/evaluate.json")["accuracy"])
    assert "loss" in metrics and "best_val_accuracy" in metrics


def test_second_repro_does_nothing(pipeline):
    started = time.perf_counter()
    again = pipeline.run("dvc", "repro")
    seconds = time.perf_counter() - started
    assert pipeline.ran(again) == set(), again.stdout
    assert "Data and pipelines are up to date." in again.stdout
    assert "Data and pipelines are up to date." in pipeline.run("dvc", "status").stdout
    assert seconds < 60, f"a no-op dvc repro took {seconds:.1f} s"


def test_changing_a_train_param_reruns_only_train_and_evaluate(pipeline, set_params):
    # runs last: it changes the project
    set_params(pipeline.root, train={"epochs": 2})
    status = json.loads(pipeline.run("dvc", "status", "--json").stdout)
    assert set(status) == {"train"}, status  # evaluate follows once train's outputs change
    rerun = pipeline.run("dvc", "repro")
    assert pipeline.ran(rerun) == {"train", "evaluate"}, rerun.stdout
    assert pipeline.json("metrics/train.json")["epochs_run"] == 2

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=pipeline.tracking_uri, registry_uri=pipeline.tracking_uri)
    versions = {str(v.version): v for v in client.search_model_versions("name='fer-emotion'")}
    assert set(versions) == {"1", "2", "3"}  # v2: the bundled model, registered by the first run
    accuracy = {k: float(v.tags["test_accuracy"]) for k, v in versions.items()}
    champion = str(client.get_model_version_by_alias("fer-emotion", "champion").version)
    assert champion == ("3" if accuracy["3"] > accuracy["2"] else "2"), accuracy
