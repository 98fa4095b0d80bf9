"""The classifier runtimes: the OpenVINO copy equals Keras on real faces, is cached by the Keras
file's sha256, is refused when it fails its check, and Keras is the fallback."""

from __future__ import annotations

import json
import logging
import shutil
import sys

import numpy as np
import pytest

from emotion_recognition import runtime
from emotion_recognition.model_files import sha256_file, bundled_model_path
from emotion_recognition.inference import EmotionRecognizer
from emotion_recognition.tta import from_preset
from testkit import make_tiny_model, read_zip_faces


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EMOTION_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "openvino"


def test_openvino_equals_keras_on_real_faces(shared_fer2013, cache, tmp_path):
    """The bundled model's file alone (as a user's own model: no INT8 copy beside it), on 300
    PublicTest faces with their mirrors (the service's views): the fp32 copy the library makes
    gives probabilities within runtime.TOLERANCE (1e-4) of Keras's, the same top emotion for all."""
    if bundled_model_path() is None:
        pytest.skip("this checkout has no bundled default model")
    path = tmp_path / "model.keras"
    shutil.copyfile(bundled_model_path(), path)
    faces = np.stack([face for _, _, face in read_zip_faces(shared_fer2013, "test", limit=300)])
    openvino, keras = (EmotionRecognizer.from_file(path, tta=from_preset("flip"), runtime=name)
                       for name in ("openvino", "keras"))
    assert json.loads((cache / f"{sha256_file(path)}.json").read_text())["precision"] == "fp32"
    assert (openvino.classifier.runtime, keras.classifier.runtime) == ("openvino", "keras")
    ours, reference = openvino.classify_faces(faces), keras.classify_faces(faces)
    assert np.abs(ours - reference).max() <= runtime.TOLERANCE
    assert (ours.argmax(1) == reference.argmax(1)).all()


def test_cache_hit_and_miss_by_sha256(tmp_path, cache, monkeypatch):
    path = make_tiny_model(tmp_path / "model.keras")
    first = runtime.load_classifier(path)
    sha = sha256_file(path)
    assert first.runtime == "openvino" and sorted(p.name for p in cache.iterdir()) == [f"{sha}{s}" for s in (".bin", ".json", ".xml")]
    record = json.loads((cache / f"{sha}.json").read_text())
    assert record["keras_sha256"] == sha and record["max_abs_difference"] <= runtime.TOLERANCE

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again although the copy is cached")

    monkeypatch.setattr(runtime, "convert", no_conversion)
    faces = runtime.probe_faces(8).astype(np.float32)[..., None]
    assert np.array_equal(runtime.load_classifier(path).predict(faces), first.predict(faces))  # hit
    make_tiny_model(path, seed=1)  # new weights, new sha256: a miss
    monkeypatch.undo()
    monkeypatch.setenv("EMOTION_CACHE_DIR", str(cache.parent))
    assert runtime.load_classifier(path).runtime == "openvino"
    assert (cache / f"{sha256_file(path)}.xml").is_file() and sha256_file(path) != sha


def test_a_copy_beside_the_model_is_used_first(tmp_path, cache, monkeypatch):
    """What serving.import_model stores: ``openvino/<sha>.xml`` beside model.keras."""
    path = make_tiny_model(tmp_path / "model.keras")
    from emotion_recognition.model_files import load_model

    runtime.convert(load_model(path), tmp_path / "openvino", sha256_file(path), runtime.probe_faces(), "probes")
    assert runtime.openvino_copy(path) == tmp_path / "openvino" / f"{sha256_file(path)}.xml"
    assert not cache.exists()


def test_a_copy_failing_its_check_is_neither_written_nor_used(tmp_path, cache, monkeypatch, caplog):
    path = make_tiny_model(tmp_path / "model.keras")
    monkeypatch.setattr(runtime, "TOLERANCE", -1.0)  # no difference passes
    with caplog.at_level(logging.WARNING, "emotion_recognition.runtime"):
        classifier = runtime.load_classifier(path)
    assert classifier.runtime == "keras"
    assert [r.getMessage() for r in caplog.records if "differs from Keras" in r.getMessage()]
    assert not cache.exists() or not list(cache.iterdir())


def test_keras_fallback_without_openvino(tmp_path, cache, monkeypatch, caplog):
    path = make_tiny_model(tmp_path / "model.keras")
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    with caplog.at_level(logging.WARNING, "emotion_recognition.runtime"):
        classifier = runtime.load_classifier(path, "openvino")
    assert classifier.runtime == "keras"
    assert [r.getMessage() for r in caplog.records] == [
        "runtime openvino: the openvino package is not installed, using Keras (pip install openvino)"]


def test_unknown_runtime_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown runtime 'tensorrt': expected one of openvino, keras"):
        runtime.load_classifier(tmp_path / "model.keras", "tensorrt")  # type: ignore[arg-type]


def test_the_keras_runtime_is_one_traced_function_for_every_batch_size(tmp_path):
    """Not ``predict_on_batch`` (several ms more per call): the model's Python runs once, when traced."""
    from emotion_recognition.model_files import load_model

    model = load_model(make_tiny_model(tmp_path / "model.keras"))

    class Counting:  # the model's call, counted; no predict_on_batch to fall back on
        input_shape, output_shape, calls = model.input_shape, model.output_shape, 0

        def __call__(self, x, training):
            Counting.calls += 1
            return model(x, training=training)

    classifier = runtime.Classifier.from_keras(Counting())
    for size in (1, 6, 300):
        faces = runtime.probe_faces(size).astype(np.float32)[..., None]
        assert np.abs(classifier.predict(faces) - model.predict_on_batch(faces)).max() < 1e-5
    assert Counting.calls == 1 and classifier.runtime == "keras"


def test_convert_predicts_in_chunks(tmp_path, monkeypatch):
    """All 3,589 test faces in one call: ~1 GB of first-layer output; at most 256 faces per call."""
    from emotion_recognition.model_files import load_model

    sizes = {"keras": [], "openvino": []}

    def recording(name, make):
        def wrapped(*args):
            predict = make(*args)
            return lambda batch: sizes[name].append(len(batch)) or predict(batch)
        return wrapped

    monkeypatch.setattr(runtime, "_compile", recording("openvino", runtime._compile))
    from_keras = runtime.Classifier.from_keras
    keras_predict = recording("keras", lambda model: from_keras(model).predict)
    monkeypatch.setattr(runtime.Classifier, "from_keras", lambda model: runtime.Classifier(keras_predict(model), "keras", 0, 0))
    path = make_tiny_model(tmp_path / "model.keras")
    runtime.convert(load_model(path), tmp_path / "ov", sha256_file(path), runtime.probe_faces(600), "probes")
    assert sizes == {"keras": [256, 256, 88], "openvino": [256, 256, 88]}


def test_install_copy_rekeys_a_copy_of_the_same_weights_only(tmp_path):
    """MLflow saves the model it logs to a file with another sha256 than the run's copy was keyed by:
    the copy is found by its record's weights hash; a copy of other weights is never installed."""
    from emotion_recognition.model_files import load_model

    model = load_model(make_tiny_model(tmp_path / "model.keras"))
    made = runtime.convert(model, tmp_path / "run", "a" * 64, runtime.probe_faces(), "probes")
    other = load_model(make_tiny_model(tmp_path / "other.keras", seed=1))
    assert not runtime.install_copy(tmp_path / "run", other, "b" * 64, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()
    assert runtime.install_copy(tmp_path / "run", model, "b" * 64, tmp_path / "dest")
    assert sorted(p.name for p in (tmp_path / "dest").iterdir()) == [f"{'b' * 64}{s}" for s in (".bin", ".json", ".xml")]
    record = json.loads((tmp_path / "dest" / f"{'b' * 64}.json").read_text())
    assert record["keras_sha256"] == "b" * 64 and record["rekeyed_from"] == "a" * 64
    assert record["weights_sha256"] == runtime.weights_sha256(model) != runtime.weights_sha256(other)
    faces = runtime.probe_faces(8).astype(np.float32)[..., None]
    installed = runtime.Classifier.from_openvino(tmp_path / "dest" / f"{'b' * 64}.xml").predict(faces)
    assert np.array_equal(installed, runtime.Classifier.from_openvino(made).predict(faces))
