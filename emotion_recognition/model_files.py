"""Where a trained model comes from: an explicit .keras file, the bundled default, or MLflow.

- ``bundled_model_path()``: ``emotion_recognition/default_model/model.keras`` shipped as package
  data (absent until a trained default model is bundled);
- ``resolve_model_file(path)``: the file to use for local inference (explicit path, else bundled);
- ``export_champion(dest)``: the MLflow registry's ``champion`` model's ``.keras`` file with its
  registry metadata and its run's OpenVINO copy, if logged (for ``python -m serving.import_model``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emotion_recognition.tracking import CHAMPION_ALIAS, REGISTERED_MODEL_NAME

BUNDLED_MODEL = Path(__file__).resolve().parent / "default_model" / "model.keras"


class ModelNotFoundError(RuntimeError):
    """No model to use; the message says how to get one."""


@dataclass
class ModelSource:
    path: Path
    origin: str  # "file", "bundled" or "mlflow"
    metadata: dict[str, Any] = field(default_factory=dict)


def bundled_model_path() -> Path | None:
    return BUNDLED_MODEL if BUNDLED_MODEL.is_file() else None


def resolve_model_file(path: str | Path | None = None) -> ModelSource:
    """An explicit ``.keras`` file if given, else the bundled default model."""
    if path is not None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise ModelNotFoundError(f"no model file at {path}")
        if path.suffix != ".keras":
            raise ModelNotFoundError(f"{path} is not a Keras 3 model file: expected a .keras file")
        return ModelSource(path.resolve(), "file")
    bundled = bundled_model_path()
    if bundled is None:
        raise ModelNotFoundError(
            "no model given and no bundled default model in this installation "
            f"({BUNDLED_MODEL} is missing): pass --model PATH/TO/model.keras "
            "(e.g. one exported by the training pipeline)"
        )
    return ModelSource(bundled, "bundled")


def model_file(name: str, version: str, dest: str | Path) -> Path:
    """Download only the registered version's ``model.keras`` into ``dest`` (never MLflow's
    loader: it unpickles; callers load the file in Keras' safe mode)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from emotion_recognition.stage_io import StageInputError

    try:
        return Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{version}/data/model.keras", dst_path=str(dest)))
    except (MlflowException, OSError) as error:
        raise StageInputError(f"{name} v{version}: no model.keras to download ({str(error).splitlines()[0][:300]})") from None


def export_champion(dest_dir: str | Path, alias: str = CHAMPION_ALIAS) -> ModelSource:
    """Download the registry's ``REGISTERED_MODEL_NAME@alias`` model file into ``dest_dir``."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from emotion_recognition.tracking import configure_mlflow, tracking_uri

    uri = tracking_uri()
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///") :])
        if not db.is_file():
            raise ModelNotFoundError(
                f"no MLflow store at {db}: train and register a model first (dvc repro), set "
                "MLFLOW_TRACKING_URI to your tracking server, or import a file with --model-file PATH"
            )
    configure_mlflow()
    client = MlflowClient()
    try:
        version = client.get_model_version_by_alias(REGISTERED_MODEL_NAME, alias)
    except MlflowException as error:
        raise ModelNotFoundError(
            f"MLflow at {uri} has no model '{REGISTERED_MODEL_NAME}' with alias '{alias}' "
            f"({error.message.splitlines()[0] if error.message else error}): run the training pipeline "
            "(dvc repro) so it registers one, or import a file with --model-file PATH"
        ) from None
    model_uri = f"models:/{REGISTERED_MODEL_NAME}@{alias}"
    # only the .keras file, never MLflow's loader (it unpickles); the caller loads it in safe mode
    path = model_file(REGISTERED_MODEL_NAME, version.version, dest_dir)
    try:  # the run's OpenVINO copy (stages/evaluate.py), made from the run's own file of the model
        mlflow.artifacts.download_artifacts(run_id=version.run_id, artifact_path="openvino", dst_path=str(path.parent))
    except (MlflowException, OSError):
        pass  # a run from before the copies were logged: serving.import_model converts one
    metadata = {
        "source": "mlflow",
        "mlflow_model_uri": model_uri,
        "mlflow_registered_model": REGISTERED_MODEL_NAME,
        "mlflow_alias": alias,
        "mlflow_version": str(version.version),
        "mlflow_run_id": version.run_id or "",
        "mlflow_tracking_uri": uri,
    }
    return ModelSource(path, "mlflow", metadata)
