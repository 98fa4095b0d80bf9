"""Stage `train` on tiny data: the model file, the DVC metrics/plots and the MLflow run
(params, per-epoch metrics, the model with its signature and input example)."""

import csv
import json
import re

import keras
import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from testkit import stage_args
from emotion_recognition.pipeline.data import load_split
from emotion_recognition.model_files import sha256_file, load_model

EPOCHS = 2


@pytest.fixture(scope="module")
def trained(tmp_path_factory, fer, isolate, make_project, set_params, load_stage, mlflow_template):
    """fetch -> split -> augment -> train in one project, run once for this module's tests."""
    import shutil

    project = make_project(tmp_path_factory.mktemp("train-stage"))
    set_params(project, train={"epochs": EPOCHS, "batch_size": 16})
    fer.write_zip(project / "inputs" / "fer2013.zip")
    with isolate(project):
        shutil.copy(mlflow_template, project / "mlflow.db")
        for stage in ("fetch", "split", "augment", "train"):
            load_stage(stage).main(*stage_args(stage))
        run = json.loads((project / "data/model/run.json").read_text())
        client = MlflowClient()
        yield project, run, client.get_run(run["run_id"]), client


def test_model_file_takes_raw_faces_and_returns_probabilities(trained):
    project, _, _, _ = trained
    model = load_model(project / "data/model/model.keras")
    assert all(layer.dtype_policy.name == "float32" for layer in model.layers)
    val = load_split(project / "data/split/val.npz")
    probabilities = model.predict(val.images[..., np.newaxis].astype(np.float32), verbose=0)
    assert probabilities.shape == (len(val), 7)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert (project / "data/train/checkpoint.keras").is_file()


def test_metrics_and_plots_for_dvc(trained):
    project, _, _, _ = trained
    metrics = json.loads((project / "metrics/train.json").read_text())
    assert set(metrics) == {"best_epoch", "epochs_run", "val_accuracy", "val_loss", "train_seconds",
                            "images_per_second", "parameters"}
    assert metrics["epochs_run"] == EPOCHS and 1 <= metrics["best_epoch"] <= EPOCHS
    with open(project / "plots/train_history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == list(range(1, EPOCHS + 1))
    assert {"accuracy", "loss", "val_accuracy", "val_loss", "images_per_second", "learning_rate"} <= set(rows[0])
    # the cosine decay falls over the run (the planned run ends at 0: the last epoch ends there)
    rates = [float(r["learning_rate"]) for r in rows]
    assert rates[0] > rates[-1] == 0.0
    assert float(rows[metrics["best_epoch"] - 1]["val_accuracy"]) == metrics["val_accuracy"]
    assert (project / "plots/train_curves.png").read_bytes()[:4] == b"\x89PNG"


def test_run_logs_params_and_tags(trained):
    _, _, run, _ = trained
    params = run.data.params
    assert params["train.epochs"] == str(EPOCHS)
    assert params["model.widths"] == "[8, 16]"
    assert params["train.precision"] == "float32"
    assert params["train.precision_used"] == "float32"
    assert params["data.source"] == "inputs/fer2013.zip"
    assert int(params["train.images"]) > 0 and int(params["val.images"]) == 7
    assert run.data.tags["stage"] == "train" and "git_commit" in run.data.tags
    assert run.data.tags["cpu"]  # throughput differs 8x between CPUs: runs say where they ran
    assert run.info.status == "FINISHED"
    # named after the model, not MLflow's random name (which repeats because the seed is fixed)
    assert re.fullmatch(rf"vgg8-e{EPOCHS}-\d{{8}}-\d{{4}}", run.info.run_name)


def test_run_logs_every_epoch(trained):
    _, run_json, run, client = trained
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"):
        history = client.get_metric_history(run_json["run_id"], key)
        assert [m.step for m in history] == list(range(1, EPOCHS + 1)), key
    assert "best_val_accuracy" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run_json["run_id"], "plots")}
    assert artifacts == {"plots/train_history.csv", "plots/train_curves.png"}


def test_run_logs_the_model_with_signature_and_input_example(trained):
    project, run_json, _, _ = trained
    info = mlflow.models.get_model_info(run_json["model_uri"])
    assert info.run_id == run_json["run_id"]
    inputs = info.signature.inputs.to_dict()[0]
    outputs = info.signature.outputs.to_dict()[0]
    assert inputs["tensor-spec"]["dtype"] == "float32"
    assert list(inputs["tensor-spec"]["shape"]) == [-1, 48, 48, 1]
    assert list(outputs["tensor-spec"]["shape"]) == [-1, 7]
    assert info.saved_input_example_info is not None
    logged = mlflow.tensorflow.load_model(run_json["model_uri"])
    faces = load_split(project / "data/split/val.npz").images[:3, ..., np.newaxis].astype(np.float32)
    saved = load_model(project / "data/model/model.keras")
    np.testing.assert_allclose(logged.predict(faces, verbose=0), saved.predict(faces, verbose=0), rtol=1e-5)


def retrain(project, client, isolate, set_params, load_stage, **train):
    """Run the train stage again in ``project`` with these train params (restored afterwards);
    returns the new MLflow run. Tests that need every epoch pass early_stopping_patience=0: the
    project's test params stop after one epoch without progress, and whether one comes depends
    on floating-point noise."""
    params_file = project / "params.yaml"
    original = params_file.read_text()
    set_params(project, train=train)
    try:
        with isolate(project):
            load_stage("train").main(*stage_args("train"))
            run_json = json.loads((project / "data/model/run.json").read_text())
            return client.get_run(run_json["run_id"])
    finally:
        params_file.write_text(original)


def test_training_can_start_from_a_trained_model(trained, isolate, set_params, load_stage):
    """train.initial_model: the run starts from that file's weights (here with a learning rate
    too small to move them) and records which file it was."""
    project, first_run, _, client = trained
    first = project / "data/first_model.keras"
    (project / "data/model/model.keras").rename(first)
    start = load_model(first)
    run = retrain(project, client, isolate, set_params, load_stage, epochs=1, batch_size=16,
                  initial_model="data/first_model.keras", learning_rate=1e-9, warmup_epochs=0.0)
    params = run.data.params
    assert run.info.run_id != first_run["run_id"]
    assert params["train.initial_model"] == "data/first_model.keras"
    assert re.fullmatch(r"[0-9a-f]{64}", params["train.initial_model_sha256"])
    continued = load_model(project / "data/model/model.keras")
    for before, after in zip(start.weights, continued.weights):
        if "kernel" in before.path:  # batch-norm statistics are recalibrated; kernels barely move
            np.testing.assert_allclose(after.numpy(), before.numpy(), atol=1e-5)


def refused_run(project, isolate, set_params, load_stage, capsys, **train) -> str:
    """Run the train stage as DVC does with these train params (restored afterwards); it must stop
    with exit code 2 and a message, not a traceback. Returns what it printed to stderr."""
    from emotion_recognition.pipeline.stage_io import run_stage

    original = (project / "params.yaml").read_text()
    set_params(project, train=train)
    try:
        with isolate(project), pytest.raises(SystemExit) as stopped:
            run_stage(load_stage("train").main, stage_args("train"))
    finally:
        (project / "params.yaml").write_text(original)
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert "Traceback" not in error
    return error


def test_initial_model_that_does_not_fit_the_architecture_is_refused(trained, isolate, set_params, load_stage,
                                                                      capsys):
    project, _, _, _ = trained
    # the bundled model is far wider than [8, 16]
    error = refused_run(project, isolate, set_params, load_stage, capsys, initial_model="default")
    assert "train.initial_model" in error and "model.*" in error

