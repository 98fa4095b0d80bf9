"""The champion rule on a real MLflow SQLite store: every evaluated model becomes a version;
`champion` moves only to a version that beats the current champion on the same test images, and
in an empty store only to one that beats the bundled default model (else that model is registered
and becomes the champion)."""

import numpy as np
import pytest
from mlflow import MlflowClient

from emotion_recognition.model_files import sha256_file, load_model, CHAMPION_ALIAS, REGISTERED_MODEL_NAME
from emotion_recognition.pipeline.evaluation import classification_metrics, predict_probabilities
from emotion_recognition.labels import EMOTIONS
from emotion_recognition.pipeline.registry import current_champion, register_and_promote, digest_of_test_set as digest_of
from emotion_recognition.runtime import convert, probe_faces
from emotion_recognition.pipeline.tracking import configure_mlflow
from emotion_recognition.tta import TestTimeAugmentation

HAPPY, SAD, ANGRY, FEAR = (EMOTIONS.index(e) for e in ("happy", "sad", "angry", "fear"))


def make_test_set(majority: int, majority_count: int, seed: int):
    """Random faces: ``majority_count`` of class ``majority`` and one of every other class."""
    labels = np.array([majority] * majority_count + [c for c in range(7) if c != majority])
    images = np.random.default_rng(seed).integers(0, 256, (len(labels), 48, 48)).astype(np.uint8)
    return images, labels


@pytest.fixture
def registry(mlflow_store, make_constant_model, log_keras_model, tmp_path):
    """Registers an always-predicts-``label`` model the way the evaluate stage does. ``baseline``:
    the class a stand-in for the bundled default model always predicts (saved as a real .keras
    file), or None for an installation without a bundled model."""
    configure_mlflow()
    client = MlflowClient()

    def register(label: int, images, labels, tta: TestTimeAugmentation = TestTimeAugmentation(),
                 baseline: int | None = None):
        model = make_constant_model(label)
        run_id, model_uri = log_keras_model(model)
        accuracy = classification_metrics(labels, predict_probabilities(model, images, tta).argmax(axis=1))["accuracy"]
        baseline_file = None
        if baseline is not None:
            baseline_file = tmp_path / f"bundled_{baseline}.keras"
            make_constant_model(baseline).save(baseline_file)
            faces = probe_faces(16)  # its OpenVINO INT8 copy beside it, as the bundle step makes one
            convert(load_model(baseline_file), tmp_path / "openvino", sha256_file(baseline_file), faces, "probes", faces)
        decision = register_and_promote(model_uri, run_id, accuracy, images, labels, tta, baseline=baseline_file)
        versions = client.search_model_versions(f"name='{REGISTERED_MODEL_NAME}'")
        newest = max(versions, key=lambda v: int(v.version))
        return newest, accuracy, decision

    register.client = client
    return register


def champion_version(client) -> str:
    return str(client.get_model_version_by_alias(REGISTERED_MODEL_NAME, CHAMPION_ALIAS).version)


def test_first_version_becomes_champion_with_its_test_set_recorded(registry):
    """Without a bundled model to compare with (an installation that lacks the file)."""
    images, labels = make_test_set(HAPPY, 9, seed=0)
    version, accuracy, decision = registry(ANGRY, images, labels)
    assert accuracy == pytest.approx(1 / 15)
    assert str(version.version) == "1" and champion_version(registry.client) == "1"
    assert "no champion and no bundled model to compare with" in decision
    tags = registry.client.get_model_version(REGISTERED_MODEL_NAME, "1").tags
    assert tags["test_accuracy"] == f"{1 / 15:.4f}"
    assert tags["test_set_sha256"] == digest_of(images, labels)
    assert registry.client.get_run(tags["run_id"]).info.run_id == version.run_id


def test_champion_moves_only_to_a_strictly_better_model(registry):
    images, labels = make_test_set(HAPPY, 9, seed=0)
    client = registry.client
    registry(ANGRY, images, labels)                       # v1: 1/15, first -> champion
    _, better, decision = registry(HAPPY, images, labels)  # v2: 9/15
    assert better == pytest.approx(9 / 15)
    assert champion_version(client) == "2" and "beats champion v1" in decision
    _, worse, decision = registry(SAD, images, labels)     # v3: 1/15
    assert champion_version(client) == "2" and "champion stays v2" in decision
    _, tie, decision = registry(HAPPY, images, labels)     # v4: 9/15, only as good
    assert tie == better
    assert champion_version(client) == "2" and "champion stays v2" in decision
    assert len(client.search_model_versions(f"name='{REGISTERED_MODEL_NAME}'")) == 4


def test_champion_is_re_measured_on_the_new_test_set(registry):
    """Not compared with the accuracy it had on an older test set."""
    client = registry.client
    old_images, old_labels = make_test_set(HAPPY, 9, seed=0)
    registry(HAPPY, old_images, old_labels)  # v1, 9/15 = 0.6 on the old test set
    new_images, new_labels = make_test_set(SAD, 3, seed=1)
    _, accuracy, decision = registry(SAD, new_images, new_labels)  # v2, 3/9 on the new one
    assert accuracy < 0.6  # worse than v1's recorded figure ...
    assert champion_version(client) == "2"  # ... but v1 scores 1/9 on these same images
    assert "v1 (0.1111)" in decision and "same test set" in decision


def test_champion_rule_with_flip_tta(registry):
    images, labels = make_test_set(FEAR, 4, seed=2)
    registry(ANGRY, images, labels, tta=TestTimeAugmentation(flip=True))
    _, _, decision = registry(FEAR, images, labels, tta=TestTimeAugmentation(flip=True))
    assert champion_version(registry.client) == "2" and "(0.1000)" in decision


def test_no_champion_before_the_first_registration(mlflow_store):
    configure_mlflow()
    assert current_champion(MlflowClient()) is None


def test_test_set_digest_depends_on_images_and_labels():
    images, labels = make_test_set(HAPPY, 3, seed=0)
    digest = digest_of(images, labels)
    assert digest == digest_of(images.copy(), labels.copy())
    assert digest != digest_of(images, np.roll(labels, 1))
    changed = images.copy()
    changed[0, 0, 0] ^= 1
    assert digest != digest_of(changed, labels)


def test_the_champion_is_re_measured_with_the_same_views(mlflow_store, make_constant_model, log_keras_model):
    """A model whose predictions change with the mirror view, registered with the face alone: the
    champion's figure in the decision is its accuracy with the flip, re-measured, not the 1.0 its
    tags recorded for one view."""
    import keras

    configure_mlflow()
    keras.utils.set_random_seed(5)
    inputs = keras.Input((48, 48, 1))
    model = keras.Model(inputs, keras.layers.Dense(7, activation="softmax")(keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))))
    images = np.random.default_rng(4).integers(0, 256, (40, 48, 48)).astype(np.uint8)
    labels = predict_probabilities(model, images).argmax(axis=1)  # the face alone: accuracy 1.0
    flip = TestTimeAugmentation(flip=True)
    with_flip = classification_metrics(labels, predict_probabilities(model, images, flip).argmax(axis=1))["accuracy"]
    assert with_flip < 1.0  # precondition: the mirror view changes some predictions
    run_id, model_uri = log_keras_model(model)
    register_and_promote(model_uri, run_id, 1.0, images, labels, TestTimeAugmentation(), baseline=None)
    run_id, model_uri = log_keras_model(make_constant_model(HAPPY))
    decision = register_and_promote(model_uri, run_id, 0.0, images, labels, flip)
    assert f"v1 ({with_flip:.4f}" in decision and "1.0000" not in decision


def test_a_champion_measured_on_the_same_faces_and_views_is_not_measured_again(registry):
    """Its recorded accuracy is the yardstick (a deliberately different figure planted in its tag
    shows which one the decision used); a test set that differs by one pixel is measured."""
    images, labels = make_test_set(HAPPY, 9, seed=0)
    registry(HAPPY, images, labels)  # v1: 9/15
    registry.client.set_model_version_tag(REGISTERED_MODEL_NAME, "1", "test_accuracy_exact", "0.5")
    _, _, decision = registry(SAD, images, labels)
    assert "champion stays v1 (0.5000 on the same test set)" in decision
    changed = images.copy()
    changed[0, 0, 0] ^= 1
    _, _, decision = registry(SAD, changed, labels)
    assert "champion stays v1 (0.6000 on the same test set)" in decision


def test_the_bundled_models_recorded_accuracy_is_reused_only_for_that_very_file(mlflow_store, make_constant_model,
                                                                                log_keras_model, tmp_path):
    import json

    from emotion_recognition.pipeline.registry import BUNDLED_EVALUATION, evaluation_record

    configure_mlflow()
    images, labels = make_test_set(HAPPY, 9, seed=0)
    tta = TestTimeAugmentation()
    bundled = tmp_path / "model.keras"
    make_constant_model(HAPPY).save(bundled)  # 9/15 = 0.6000 when measured
    record = evaluation_record(bundled, 0.5, images, labels, tta)
    (tmp_path / BUNDLED_EVALUATION).write_text(json.dumps(record))
    run_id, model_uri = log_keras_model(make_constant_model(SAD))
    decision = register_and_promote(model_uri, run_id, 0.55, images, labels, tta, baseline=bundled)
    assert "beats the bundled default model (0.5000)" in decision  # the record, not a measurement
    (tmp_path / BUNDLED_EVALUATION).write_text(json.dumps({**record, "model_sha256": "0" * 64}))  # another file's
    client = MlflowClient()
    client.delete_registered_model_alias(REGISTERED_MODEL_NAME, CHAMPION_ALIAS)
    decision = register_and_promote(model_uri, run_id, 0.55, images, labels, tta, baseline=bundled)
    assert "does not beat the bundled default model (0.6000 on the same test set)" in decision


def test_in_an_empty_store_a_model_becomes_champion_only_if_it_beats_the_bundled_model(registry, caplog):
    images, labels = make_test_set(HAPPY, 9, seed=0)
    with caplog.at_level("INFO", logger="emotion_recognition.pipeline.registry"):
        version, _, decision = registry(HAPPY, images, labels, baseline=ANGRY)  # 9/15 against 1/15
    assert champion_version(registry.client) == str(version.version) == "1"
    assert "beats the bundled default model (0.0667) on the same test set" in decision
    assert decision in caplog.messages  # the stage's log says which way it went


def test_in_an_empty_store_a_worse_model_leaves_the_bundled_model_champion(registry):
    """A 4-minute smoke run in a fresh store must not become the model serving imports."""
    images, labels = make_test_set(HAPPY, 9, seed=0)
    client = registry.client
    _, _, decision = registry(SAD, images, labels, baseline=HAPPY)  # 1/15 against 9/15
    assert decision.startswith(f"registered {REGISTERED_MODEL_NAME} v1 (accuracy 0.0667)")
    assert "does not beat the bundled default model (0.6000 on the same test set)" in decision
    assert "registered as v2 and is @champion" in decision and champion_version(client) == "2"
    bundled = client.get_model_version(REGISTERED_MODEL_NAME, "2")
    assert bundled.tags["source"] == "bundled default model" and bundled.tags["test_accuracy"] == "0.6000"
    assert bundled.tags["test_set_sha256"] == digest_of(images, labels)
    assert [a.path.rsplit(".", 1)[1] for a in client.list_artifacts(bundled.run_id, "openvino")] == ["bin", "json", "xml"]
    # from now on the normal rule: the bundled model is the champion to beat, re-measured
    _, _, decision = registry(HAPPY, images, labels, baseline=ANGRY)  # a tie with it: not better
    assert champion_version(client) == "2" and "champion stays v2 (0.6000" in decision


def test_only_a_missing_model_counts_as_no_champion(monkeypatch, registry):
    """An unreachable tracking server is an error, not an empty registry: nothing is registered
    and nothing promoted without the comparison."""
    import socket

    from mlflow.exceptions import MlflowException

    with socket.socket() as probe:  # a port where nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    unreachable = MlflowClient(tracking_uri=f"http://127.0.0.1:{port}", registry_uri=f"http://127.0.0.1:{port}")
    with pytest.raises(MlflowException, match="API request"):
        current_champion(unreachable)
    assert current_champion(registry.client) is None  # an empty store: the model does not exist
    images, labels = make_test_set(HAPPY, 9, seed=0)
    registry(HAPPY, images, labels)
    registry.client.delete_registered_model_alias(REGISTERED_MODEL_NAME, CHAMPION_ALIAS)
    assert current_champion(registry.client) is None  # a model without the alias
