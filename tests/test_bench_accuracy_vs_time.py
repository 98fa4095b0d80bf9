"""bench/accuracy_vs_time.py on a real MLflow SQLite store holding runs logged the way train/evaluate do."""

import importlib.util
import sys

import mlflow
import pytest

from emotion_recognition.tracking import EXPERIMENT_NAME, configure_mlflow

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

spec = importlib.util.spec_from_file_location("accuracy_vs_time", REPO_ROOT / "bench" / "accuracy_vs_time.py")
report = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = report  # dataclasses look their module up there
spec.loader.exec_module(report)


def log_run(widths: str, epochs: int, seconds: list[float], val: list[float], test: float | None,
            status: str = "FINISHED", planned: int | None = None) -> str:
    with mlflow.start_run() as run:
        mlflow.log_params({"model.architecture": "vgg", "model.widths": widths, "model.convs_per_block": 2,
                           "train.epochs": epochs})
        for step, (s, v) in enumerate(zip(seconds, val), start=1):
            mlflow.log_metrics({"epoch_seconds": s, "val_accuracy": v}, step=step)
        if test is not None:
            mlflow.log_metric("test_accuracy", test)
        if planned is not None:  # the train stage logs it when a time budget planned the epochs
            mlflow.log_metric("planned_epochs", planned)
    if status != "FINISHED":
        mlflow.MlflowClient().set_terminated(run.info.run_id, status)
    return run.info.run_id


@pytest.fixture
def store(mlflow_store):
    configure_mlflow()
    return mlflow_store


def test_curves_accumulate_epoch_time_and_keep_only_finished_runs(store):
    small = log_run("[32, 64]", 3, [60, 60, 60], [0.5, 0.6, 0.55], test=0.61)
    log_run("[48, 96]", 2, [120, 120], [0.4, 0.7], test=None, status="FAILED")
    wide = log_run("[48, 96]", 4, [120, 120], [0.45, 0.65], test=None)

    curves = report.load_curves(store, EXPERIMENT_NAME)

    assert [c.run_id for c in curves] == [small, wide]
    assert curves[0].minutes.tolist() == [1.0, 2.0, 3.0]
    assert curves[0].label == "vgg [32, 64] x2"
    # best validation accuracy among epochs done by then, None before the first epoch ends
    assert curves[0].val_accuracy_at(0.5) is None
    assert curves[0].val_accuracy_at(2.0) == pytest.approx(0.6)
    assert curves[0].val_accuracy_at(10) == pytest.approx(0.6)
    assert curves[1].epochs_planned == 4 and curves[1].test_accuracy is None


def test_a_time_budgets_plan_is_the_epochs_planned(store):
    log_run("[32, 64]", 90, [60, 60], [0.5, 0.6], test=None, planned=2)
    assert report.load_curves(store, EXPERIMENT_NAME)[0].epochs_planned == 2


def test_runs_are_read_from_every_store_given(store, mlflow_template, tmp_path, monkeypatch, capsys):
    import shutil

    first = log_run("[32, 64]", 2, [60, 60], [0.5, 0.6], test=0.61)
    shutil.copy(mlflow_template, tmp_path / "other.db")  # a second store, already migrated
    other = f"sqlite:///{tmp_path / 'other.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", other)
    configure_mlflow()
    second = log_run("[48, 96]", 1, [90], [0.4], test=None)
    out = tmp_path / "plot.png"
    monkeypatch.setattr(sys, "argv", ["accuracy_vs_time.py", "--store", store, "--store", other, "--out", str(out)])
    report.main()
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith(f"| {first[:8]}")
            or line.startswith(f"| {second[:8]}")]
    assert len(rows) == 2 and out.is_file()


def test_table_has_one_row_per_run_with_checkpoints_and_test_accuracy(store, tmp_path):
    log_run("[32, 64]", 3, [60, 60, 60], [0.5, 0.6, 0.55], test=0.61)
    curves = report.load_curves(store, EXPERIMENT_NAME)

    table = report.markdown_table(curves, [1.5, 60]).splitlines()

    assert table[0] == ("| run | model | epochs run / planned | train min | val @ 1.5 min | val @ 60 min"
                        " | best val | PublicTest |")
    assert table[2].endswith("| vgg [32, 64] x2 | 3 / 3 | 3 | 50.0% | 60.0% | 60.0% | 61.0% |")
    report.save_plot(curves, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").stat().st_size > 1000
    assert [p.name for p in tmp_path.iterdir() if "plot" in p.name] == ["plot.png"]  # no temporary file left


def test_an_empty_store_has_no_curves(store):
    assert report.load_curves(store, EXPERIMENT_NAME) == []
    assert report.load_curves(store, "no-such-experiment") == []


@pytest.mark.parametrize("params, label", [
    ({"model.architecture": "vgg", "model.widths": "[32, 64]", "model.convs_per_block": "2"}, "vgg [32, 64] x2"),
    ({"model.architecture": "resnet", "model.widths": "[32, 64]", "model.convs_per_block": "3"}, "resnet [32, 64] x3"),
    ({"model.architecture": "mobilenetv2", "model.input_size": "96"}, "mobilenetv2 96px"),
])
def test_runs_are_labelled_by_architecture_and_shape(params, label):
    assert report.describe(params) == label
