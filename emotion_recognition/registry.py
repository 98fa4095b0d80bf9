"""The model registry rule: every evaluated model becomes a version; `champion` moves only
to a version that beats the current champion on the same test images.

With no champion yet (a fresh store) the yardstick is the bundled default model, measured on
the same images with the same views: a new model beats it, or the bundled model is registered
as a version of its own and becomes the champion. So a short smoke run in a fresh store never
becomes the model `serving.import_model` serves.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import keras
import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

from emotion_recognition.evaluation import classification_metrics, predict_probabilities
from emotion_recognition.model import load_model
from emotion_recognition.model_files import BUNDLED_MODEL
from emotion_recognition.tracking import CHAMPION_ALIAS, REGISTERED_MODEL_NAME
from emotion_recognition.tta import TestTimeAugmentation

log = logging.getLogger(__name__)


def digest_of_test_set(images: np.ndarray, labels: np.ndarray) -> str:
    return hashlib.sha256(images.tobytes() + labels.astype(np.int64).tobytes()).hexdigest()


def current_champion(client: MlflowClient, name: str = REGISTERED_MODEL_NAME):
    """The version the alias points at; None only when the store has no such registered model or
    it has no alias ``champion``. Any other error (store unreachable, permissions, a corrupt
    database) propagates: treating an outage as "no champion" would promote without comparison."""
    try:
        registered = client.get_registered_model(name)
    except MlflowException as error:
        if error.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            return None
        raise
    if CHAMPION_ALIAS not in registered.aliases:
        return None
    return client.get_model_version(name, registered.aliases[CHAMPION_ALIAS])


def accuracy_of(model: keras.Model, images: np.ndarray, labels: np.ndarray, tta: TestTimeAugmentation) -> float:
    return classification_metrics(labels, predict_probabilities(model, images, tta).argmax(axis=1))["accuracy"]


def champion_accuracy(client: MlflowClient, images: np.ndarray, labels: np.ndarray, tta: TestTimeAugmentation,
                      name: str = REGISTERED_MODEL_NAME) -> tuple[object, float] | None:
    """(version, accuracy) of the current champion re-measured on these test images, or None."""
    champion = current_champion(client, name)
    if champion is None:
        return None
    model = mlflow.tensorflow.load_model(f"models:/{name}@{CHAMPION_ALIAS}")
    return champion, accuracy_of(model, images, labels, tta)


def tag_version(client: MlflowClient, name: str, version: str, accuracy: float, digest: str, run_id: str) -> None:
    client.set_model_version_tag(name, version, "test_accuracy", f"{accuracy:.4f}")
    client.set_model_version_tag(name, version, "test_set_sha256", digest)
    client.set_model_version_tag(name, version, "run_id", run_id)


def register_baseline(model: keras.Model, path: Path, accuracy: float, digest: str, name: str) -> str:
    """Log ``model`` (the bundled default) in an MLflow run of its own and register it; returns its version."""
    from mlflow.models import infer_signature

    from emotion_recognition.data import sha256_file

    example = np.zeros((1, *model.input_shape[1:]), np.float32)
    with mlflow.start_run(run_name="bundled-default-model") as run:
        mlflow.set_tags({"stage": "evaluate", "source": "bundled default model"})
        mlflow.log_params({"model_file": str(path), "model_sha256": sha256_file(path)})
        mlflow.log_metric("test_accuracy", accuracy)
        info = mlflow.tensorflow.log_model(model, name="model", signature=infer_signature(example, model.predict(example, verbose=0)))
        copy = path.parent / "openvino" / sha256_file(path)  # its INT8 copy (bundle step), as evaluate logs one
        for suffix in (".bin", ".json", ".xml") if Path(f"{copy}.xml").is_file() else ():
            mlflow.log_artifact(f"{copy}{suffix}", "openvino")
    version = mlflow.register_model(info.model_uri, name)
    client = MlflowClient()
    tag_version(client, name, version.version, accuracy, digest, run.info.run_id)
    client.set_model_version_tag(name, version.version, "source", "bundled default model")
    return str(version.version)


def register_and_promote(model_uri: str, run_id: str, accuracy: float, images: np.ndarray, labels: np.ndarray,
                         tta: TestTimeAugmentation, name: str = REGISTERED_MODEL_NAME,
                         baseline: Path | None = BUNDLED_MODEL) -> str:
    """Register ``model_uri`` as a new version; make it champion if it beats the champion, or, with no
    champion yet, the ``baseline`` model file (the bundled default) on the same images and views.
    Returns the decision as a sentence, also logged."""
    client = MlflowClient()
    previous = champion_accuracy(client, images, labels, tta, name)
    digest = digest_of_test_set(images, labels)
    baseline_model = baseline_accuracy = None
    if previous is None and baseline is not None and Path(baseline).is_file():
        baseline_model = load_model(baseline)
        baseline_accuracy = accuracy_of(baseline_model, images, labels, tta)
    version = mlflow.register_model(model_uri, name)
    tag_version(client, name, version.version, accuracy, digest, run_id)
    new = f"registered {name} v{version.version} (accuracy {accuracy:.4f})"
    if previous is not None:
        champion, champion_acc = previous
        if accuracy > champion_acc:
            client.set_registered_model_alias(name, CHAMPION_ALIAS, version.version)
            decision = (f"{new}; beats champion v{champion.version} ({champion_acc:.4f}) on the same test set, "
                        f"now @{CHAMPION_ALIAS}")
        else:
            decision = f"{new}; champion stays v{champion.version} ({champion_acc:.4f} on the same test set)"
    elif baseline_accuracy is None:
        client.set_registered_model_alias(name, CHAMPION_ALIAS, version.version)
        decision = f"{new}; no champion and no bundled model to compare with ({baseline}): now @{CHAMPION_ALIAS}"
    elif accuracy > baseline_accuracy:
        client.set_registered_model_alias(name, CHAMPION_ALIAS, version.version)
        decision = (f"{new}; no champion yet, and it beats the bundled default model ({baseline_accuracy:.4f}) "
                    f"on the same test set: now @{CHAMPION_ALIAS}")
    else:
        bundled = register_baseline(baseline_model, Path(baseline), baseline_accuracy, digest, name)
        client.set_registered_model_alias(name, CHAMPION_ALIAS, bundled)
        decision = (f"{new}; no champion yet, and it does not beat the bundled default model "
                    f"({baseline_accuracy:.4f} on the same test set): the bundled model is registered as "
                    f"v{bundled} and is @{CHAMPION_ALIAS}")
    log.info(decision)
    return decision
