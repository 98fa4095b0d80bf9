"""MLflow set-up shared by the stages and the service.

Default store: ``mlflow.db`` (SQLite, needed by the model registry) and ``mlartifacts/`` at the
repository root. The root is found from the working directory, skipping DVC's temporary
experiment workspaces (``.dvc/tmp/exps/...``) so ``dvc exp run`` logs to the same store.
``MLFLOW_TRACKING_URI`` overrides it for a team's tracking server.
"""

from __future__ import annotations

import os
from pathlib import Path

REGISTERED_MODEL_NAME = "fer-emotion"
CHAMPION_ALIAS = "champion"
EXPERIMENT_NAME = "fer-emotion"


def repo_root(start: str | Path | None = None) -> Path:
    """The project root: the nearest folder holding dvc.yaml, outside DVC's experiment temp dirs."""
    path = Path(start or os.getcwd()).resolve()
    parts = path.parts
    if ".dvc" in parts:  # e.g. <root>/.dvc/tmp/exps/run/<id>/ -> <root>
        path = Path(*parts[: parts.index(".dvc")])
    for candidate in (path, *path.parents):
        if (candidate / "dvc.yaml").is_file():
            return candidate
    return path


def tracking_uri(root: str | Path | None = None) -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{repo_root(root) / 'mlflow.db'}"


def artifact_location(root: str | Path | None = None) -> str:
    return (repo_root(root) / "mlartifacts").as_uri()


def configure_mlflow(root: str | Path | None = None) -> str:
    """Point MLflow at the project's store and experiment; returns the tracking URI."""
    import mlflow

    overridden = bool(os.environ.get("MLFLOW_TRACKING_URI"))  # read before set_tracking_uri sets it
    uri = tracking_uri(root)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    if mlflow.get_experiment_by_name(EXPERIMENT_NAME) is None:
        location = None if overridden else artifact_location(root)
        mlflow.create_experiment(EXPERIMENT_NAME, artifact_location=location)
    mlflow.set_experiment(EXPERIMENT_NAME)
    return uri


def champion_uri() -> str:
    return f"models:/{REGISTERED_MODEL_NAME}@{CHAMPION_ALIAS}"
