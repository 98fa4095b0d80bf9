"""MLflow set-up shared by the stages and the service.

Default store: ``mlflow.db`` (SQLite, needed by the model registry) and ``mlartifacts/`` at the
repository root. The root is found from the working directory, skipping DVC's temporary
experiment workspaces (``.dvc/tmp/exps/...``) so ``dvc exp run`` logs to the same store.
``MLFLOW_TRACKING_URI`` overrides it for a team's tracking server.
"""

from __future__ import annotations

import os
from pathlib import Path

from emotion_recognition.pipeline.stage_io import StageInputError

EXPERIMENT_NAME = "fer-emotion"
# MLflow's defaults retry a dead server for about 4 minutes per call; these, at most about 35 s
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "10", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
                 "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}


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
    """Point MLflow at the project's store and experiment; returns the tracking URI. The first
    call to the store: an unusable one stops a stage here, with one line naming it."""
    import mlflow
    from mlflow.exceptions import MlflowException

    for name, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)
    overridden = bool(os.environ.get("MLFLOW_TRACKING_URI"))  # read before set_tracking_uri sets it
    uri = tracking_uri(root)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        if mlflow.get_experiment_by_name(EXPERIMENT_NAME) is None:
            location = None if overridden else artifact_location(root)
            mlflow.create_experiment(EXPERIMENT_NAME, artifact_location=location)
        mlflow.set_experiment(EXPERIMENT_NAME)
    except MlflowException as error:
        raise StageInputError(f"MLflow tracking store {uri} is not usable: {str(error).splitlines()[0][:300]}. "
                              "Start it or set MLFLOW_TRACKING_URI") from None
    return uri
