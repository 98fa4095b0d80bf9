"""The model registry rule: every evaluated model becomes a version; `champion` moves only
to a version that beats the current champion on the same test images.

With no champion yet (a fresh store) the yardstick is the bundled default model, measured on
the same images with the same views: a new model beats it, or the bundled model is registered
as a version of its own and becomes the champion. So a short smoke run in a fresh store never
becomes the model `serving.import_model` serves.

Promotion is a compare-and-set under ``promotion_lock``. Models are read only as their
``.keras`` file in Keras' safe mode: ``mlflow.tensorflow.load_model`` unpickles files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import keras
import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, RESOURCE_DOES_NOT_EXIST, ErrorCode

from emotion_recognition.pipeline.evaluation import classification_metrics, predict_probabilities
from emotion_recognition.model_files import (BUNDLED_MODEL, CHAMPION_ALIAS, REGISTERED_MODEL_NAME, ModelNotFoundError,
                                             ModelSource, load_model, sha256_file)
from emotion_recognition.pipeline.stage_io import StageInputError
from emotion_recognition.pipeline.tracking import configure_mlflow, tracking_uri
from emotion_recognition.tta import TestTimeAugmentation

log = logging.getLogger(__name__)
BUNDLED_EVALUATION = "evaluation.json"  # beside the bundled model: its recorded PublicTest accuracy
# A promotion holds the lock for seconds to minutes (it re-measures the champion); an older lock
# was left by a killed process and is broken.
LOCK_STALE_SECONDS, LOCK_WAIT_SECONDS = 1800, 2400


def registered_model(client: MlflowClient, name: str):
    """The registered model ``name``, or None if the store has none; other errors propagate."""
    try:
        return client.get_registered_model(name)
    except MlflowException as error:
        if error.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            return None
        raise


def load_registered_model(name: str, version: str) -> keras.Model:
    with tempfile.TemporaryDirectory(prefix="fer-registry-") as tmp:
        path = model_file(name, version, tmp)
        try:
            return load_model(path)  # safe mode: a Lambda layer's bytecode is refused
        except (OSError, ValueError, TypeError) as error:
            raise StageInputError(f"{name} v{version}: no safely loadable model.keras ({error})") from None


def digest_of_test_set(images: np.ndarray, labels: np.ndarray) -> str:
    return hashlib.sha256(images.tobytes() + labels.astype(np.int64).tobytes()).hexdigest()


def current_champion(client: MlflowClient, name: str = REGISTERED_MODEL_NAME):
    """The version the alias points at; None only when the store has no such registered model or
    it has no alias ``champion``. Any other error (store unreachable, permissions, a corrupt
    database) propagates: treating an outage as "no champion" would promote without comparison."""
    registered = registered_model(client, name)
    if registered is None or CHAMPION_ALIAS not in registered.aliases:
        return None
    return client.get_model_version(name, registered.aliases[CHAMPION_ALIAS])


def accuracy_of(model: keras.Model, images: np.ndarray, labels: np.ndarray, tta: TestTimeAugmentation) -> float:
    return classification_metrics(labels, predict_probabilities(model, images, tta).argmax(axis=1))["accuracy"]


def recorded_accuracy(record: dict, digest: str, tta: TestTimeAugmentation) -> float | None:
    """The accuracy a model's evaluation recorded (a version's tags, or the bundled model's
    evaluation.json), if it was measured on these very test images with these views; else None.
    Measuring again would give the same figure at the cost of every view over the test set."""
    if record.get("test_set_sha256") == digest and record.get("test_views") == tta.describe():
        exact = record.get("test_accuracy_exact")
        return float(exact) if exact is not None else None
    return None


def champion_accuracy(client: MlflowClient, images: np.ndarray, labels: np.ndarray, tta: TestTimeAugmentation,
                      name: str = REGISTERED_MODEL_NAME) -> tuple[object, float] | None:
    """(version, accuracy) of the current champion on these test images with these views (as its
    tags recorded it, else re-measured), or None."""
    champion = current_champion(client, name)
    if champion is None:
        return None
    known = recorded_accuracy(champion.tags, digest_of_test_set(images, labels), tta)
    if known is not None:
        return champion, known
    return champion, accuracy_of(load_registered_model(name, champion.version), images, labels, tta)


def bundled_accuracy(path: Path, images: np.ndarray, labels: np.ndarray, tta: TestTimeAugmentation) -> float:
    """The bundled model's accuracy on these images with these views: from the evaluation.json
    bundled beside it when that was measured for this very file, else measured now."""

    record_file = Path(path).parent / BUNDLED_EVALUATION
    record = json.loads(record_file.read_text()) if record_file.is_file() else {}
    if record.get("model_sha256") == sha256_file(path):
        known = recorded_accuracy(record, digest_of_test_set(images, labels), tta)
        if known is not None:
            log.info("the bundled model's accuracy %.4f is its recorded one (%s): not measured again", known, record_file)
            return known
    return accuracy_of(load_model(path), images, labels, tta)


def evaluation_record(model_path: Path, accuracy: float, images: np.ndarray, labels: np.ndarray,
                      tta: TestTimeAugmentation) -> dict:
    """What ``bundled_accuracy`` reads back (bundle writes it beside the bundled model)."""

    return {"model_sha256": sha256_file(model_path), "test_set_sha256": digest_of_test_set(images, labels),
            "test_views": tta.describe(), "test_accuracy_exact": repr(float(accuracy))}


def _release(client: MlflowClient, lock: str, holder: str) -> None:
    """Delete ``lock`` if ``holder`` holds it (a lock broken as stale has another holder)."""
    held = registered_model(client, lock)
    if held is not None and held.tags.get("holder") == holder:
        try:
            client.delete_registered_model(lock)
        except MlflowException as error:  # another waiter broke the same stale lock first
            if error.error_code != ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
                raise


@contextmanager
def promotion_lock(client: MlflowClient, name: str = REGISTERED_MODEL_NAME, stale_after: float = LOCK_STALE_SECONDS,
                   wait: float = LOCK_WAIT_SECONDS) -> Iterator[None]:
    """MLflow has no compare-and-set on aliases, but creating a registered model is atomic in every
    store (a second creator gets RESOURCE_ALREADY_EXISTS): the lock is ``<name>-promotion-lock``."""
    lock, token = f"{name}-promotion-lock", f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
    deadline = time.monotonic() + wait
    while True:
        try:
            client.create_registered_model(lock, tags={"holder": token})
            break
        except MlflowException as error:  # taken, or released just before the store re-read it
            if error.error_code not in (ErrorCode.Name(RESOURCE_ALREADY_EXISTS), ErrorCode.Name(RESOURCE_DOES_NOT_EXIST)):
                raise
        held = registered_model(client, lock)
        age = time.time() - held.creation_timestamp / 1000 if held else 0
        if age > stale_after:
            log.warning("breaking the promotion lock %s of %s, %.0f s old", lock, held.tags.get("holder"), age)
            _release(client, lock, held.tags.get("holder"))
        elif held and time.monotonic() > deadline:
            raise StageInputError(f"the registry's promotion lock {lock} is held by {held.tags.get('holder')} "
                                  f"({age:.0f} s); delete that registered model if its process is gone")
        time.sleep(random.uniform(0.2, 1.0))  # jitter: waiters do not retry in lockstep
    try:
        yield
    finally:
        _release(client, lock, token)


def tag_version(client: MlflowClient, name: str, version: str, accuracy: float, digest: str, run_id: str,
                tta: TestTimeAugmentation) -> None:
    client.set_model_version_tag(name, version, "test_accuracy", f"{accuracy:.4f}")
    client.set_model_version_tag(name, version, "test_accuracy_exact", repr(float(accuracy)))  # compared, not shown
    client.set_model_version_tag(name, version, "test_views", tta.describe())
    client.set_model_version_tag(name, version, "test_set_sha256", digest)
    client.set_model_version_tag(name, version, "run_id", run_id)


def register_baseline(model: keras.Model, path: Path, accuracy: float, digest: str, name: str,
                      tta: TestTimeAugmentation) -> str:
    """Log ``model`` (the bundled default) in an MLflow run of its own and register it; returns its version."""
    from mlflow.models import infer_signature


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
    tag_version(client, name, version.version, accuracy, digest, run.info.run_id, tta)
    client.set_model_version_tag(name, version.version, "source", "bundled default model")
    return str(version.version)


def register_and_promote(model_uri: str, run_id: str, accuracy: float, images: np.ndarray, labels: np.ndarray,
                         tta: TestTimeAugmentation, name: str = REGISTERED_MODEL_NAME,
                         baseline: Path | None = BUNDLED_MODEL) -> str:
    """Register ``model_uri`` as a new version; make it champion if it beats the champion, or, with no
    champion yet, the ``baseline`` model file (the bundled default) on the same images and views.
    Returns the decision as a sentence, also logged."""
    client = MlflowClient()
    with promotion_lock(client, name):  # the champion is read, compared and moved by one run at a time
        previous = champion_accuracy(client, images, labels, tta, name)
        digest = digest_of_test_set(images, labels)
        baseline_accuracy = None
        if previous is None and baseline is not None and Path(baseline).is_file():
            baseline_accuracy = bundled_accuracy(Path(baseline), images, labels, tta)
        version = mlflow.register_model(model_uri, name)
        tag_version(client, name, version.version, accuracy, digest, run_id, tta)
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
            bundled = register_baseline(load_model(baseline), Path(baseline), baseline_accuracy, digest, name, tta)
            client.set_registered_model_alias(name, CHAMPION_ALIAS, bundled)
            decision = (f"{new}; no champion yet, and it does not beat the bundled default model "
                        f"({baseline_accuracy:.4f} on the same test set): the bundled model is registered as "
                        f"v{bundled} and is @{CHAMPION_ALIAS}")
    log.info(decision)
    return decision


def model_file(name: str, version: str, dest: str | Path) -> Path:
    """Download only the registered version's ``model.keras`` into ``dest`` (never MLflow's
    loader: it unpickles; callers load the file in Keras' safe mode)."""
    try:
        return Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{version}/data/model.keras", dst_path=str(dest)))
    except (MlflowException, OSError) as error:
        raise StageInputError(f"{name} v{version}: no model.keras to download ({str(error).splitlines()[0][:300]})") from None


def export_champion(dest_dir: str | Path, alias: str = CHAMPION_ALIAS) -> ModelSource:
    """Download the registry's ``REGISTERED_MODEL_NAME@alias`` model file into ``dest_dir``, with its
    registry metadata and its run's OpenVINO copy if logged (for ``python -m serving.import_model``)."""
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
