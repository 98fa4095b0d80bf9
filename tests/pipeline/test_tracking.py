"""Where MLflow logs: the project's SQLite store at the repo root (also from DVC's experiment
workspaces), or MLFLOW_TRACKING_URI when set."""

from pathlib import Path

import mlflow
import pytest

from emotion_recognition.pipeline.tracking import (
    EXPERIMENT_NAME,
    configure_mlflow,
    repo_root,
    tracking_uri,
)

pytestmark = pytest.mark.usefixtures("isolated")


@pytest.fixture
def root(tmp_path) -> Path:
    root = tmp_path / "project"
    (root / "stages").mkdir(parents=True)
    (root / "dvc.yaml").write_text("stages: {}\n")
    return root


@pytest.fixture
def exp_workspace(root) -> Path:
    """A DVC temporary experiment workspace: a full copy of the project, dvc.yaml included."""
    workspace = root / ".dvc" / "tmp" / "exps" / "run" / "tmpab12cd"
    (workspace / "stages").mkdir(parents=True)
    (workspace / "dvc.yaml").write_text("stages: {}\n")
    return workspace


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def test_repo_root_is_the_nearest_folder_with_dvc_yaml(root):
    assert repo_root(root / "stages") == root.resolve()
    assert repo_root(root) == root.resolve()


def test_repo_root_skips_dvc_experiment_workspaces(root, exp_workspace):
    assert repo_root(exp_workspace) == root.resolve()
    assert repo_root(exp_workspace / "stages") == root.resolve()


def test_repo_root_defaults_to_the_working_directory(root, monkeypatch):
    monkeypatch.chdir(root / "stages")
    assert repo_root() == root.resolve()


def test_default_store_is_sqlite_at_the_repo_root(root, exp_workspace, no_env):
    expected = f"sqlite:///{root.resolve() / 'mlflow.db'}"
    assert tracking_uri(root / "stages") == expected
    assert tracking_uri(exp_workspace) == expected


def test_mlflow_tracking_uri_overrides_the_default(root, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert tracking_uri(root) == "http://mlflow.example:5000"


def test_configure_default_store_puts_artifacts_in_mlartifacts_at_the_root(root, exp_workspace, no_env,
                                                                          mlflow_template, monkeypatch):
    import shutil

    shutil.copy(mlflow_template, root / "mlflow.db")
    monkeypatch.chdir(exp_workspace)  # as under `dvc exp run --temp`
    uri = configure_mlflow()
    assert uri == f"sqlite:///{root.resolve() / 'mlflow.db'}"
    assert mlflow.get_tracking_uri() == uri
    experiment = mlflow.get_experiment_by_name(EXPERIMENT_NAME)
    assert experiment.artifact_location == (root.resolve() / "mlartifacts").as_uri()
    with mlflow.start_run() as run:
        mlflow.log_text("hello", "note.txt")
    assert run.info.experiment_id == experiment.experiment_id
    assert list((root / "mlartifacts").rglob("note.txt"))
    assert not (exp_workspace / "mlflow.db").exists() and not (exp_workspace / "mlruns").exists()
    # a second call reuses the experiment
    configure_mlflow()
    assert mlflow.get_experiment_by_name(EXPERIMENT_NAME).experiment_id == experiment.experiment_id


def test_configure_uses_the_override_and_leaves_the_default_store_alone(root, mlflow_store, monkeypatch):
    monkeypatch.chdir(root)
    uri = configure_mlflow()
    assert uri == mlflow_store == mlflow.get_tracking_uri()
    assert mlflow.get_experiment_by_name(EXPERIMENT_NAME) is not None
    assert not (root / "mlflow.db").exists()
