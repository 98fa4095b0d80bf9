"""The model registry rule: every evaluated model becomes a version; `champion` moves only
to a version that beats the current champion on the same test images."""

from __future__ import annotations

import hashlib

import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from emotion_recognition.evaluation import classification_metrics, predict_probabilities
from emotion_recognition.tracking import CHAMPION_ALIAS, REGISTERED_MODEL_NAME
from emotion_recognition.tta import TestTimeAugmentation


def digest_of_test_set(images: np.ndarray, labels: np.ndarray) -> str:
    return hashlib.sha256(images.tobytes() + labels.astype(np.int64).tobytes()).hexdigest()


def current_champion(client: MlflowClient, name: str = REGISTERED_MODEL_NAME):
    try:
        return client.get_model_version_by_alias(name, CHAMPION_ALIAS)
    except MlflowException:
        return None


def champion_accuracy(client: MlflowClient, images: np.ndarray, labels: np.ndarray, tta: TestTimeAugmentation,
                      name: str = REGISTERED_MODEL_NAME) -> tuple[object, float] | None:
    """(version, accuracy) of the current champion re-measured on these test images, or None."""
    champion = current_champion(client, name)
    if champion is None:
        return None
    model = mlflow.tensorflow.load_model(f"models:/{name}@{CHAMPION_ALIAS}")
    predictions = predict_probabilities(model, images, tta).argmax(axis=1)
    return champion, classification_metrics(labels, predictions)["accuracy"]


def register_and_promote(model_uri: str, run_id: str, accuracy: float, images: np.ndarray, labels: np.ndarray,
                         tta: TestTimeAugmentation, name: str = REGISTERED_MODEL_NAME) -> str:
    """Register ``model_uri`` as a new version; make it champion if it is better. Returns a sentence."""
    client = MlflowClient()
    previous = champion_accuracy(client, images, labels, tta, name)
    version = mlflow.register_model(model_uri, name)
    digest = digest_of_test_set(images, labels)
    client.set_model_version_tag(name, version.version, "test_accuracy", f"{accuracy:.4f}")
    client.set_model_version_tag(name, version.version, "test_set_sha256", digest)
    client.set_model_version_tag(name, version.version, "run_id", run_id)
    if previous is None:
        client.set_registered_model_alias(name, CHAMPION_ALIAS, version.version)
        return f"registered {name} v{version.version} (accuracy {accuracy:.4f}); first version, now @{CHAMPION_ALIAS}"
    champion, champion_acc = previous
    if accuracy > champion_acc:
        client.set_registered_model_alias(name, CHAMPION_ALIAS, version.version)
        return (f"registered {name} v{version.version} (accuracy {accuracy:.4f}); beats champion "
                f"v{champion.version} ({champion_acc:.4f}) on the same test set, now @{CHAMPION_ALIAS}")
    return (f"registered {name} v{version.version} (accuracy {accuracy:.4f}); champion stays "
            f"v{champion.version} ({champion_acc:.4f} on the same test set)")
