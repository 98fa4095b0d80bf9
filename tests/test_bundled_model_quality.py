"""The bundled default model on real faces: an accuracy floor on a fixed FER2013 PublicTest subset.

Every service test uses a tiny synthetic model, so without this a broken bundled file, a changed
label order or preprocessing would pass the suite. Subset: 1,000 PublicTest images drawn once
with numpy's default_rng(0) from the sorted names in ../shared/data/fer2013.zip (skipped with a
reason where that file is absent), classified with the mirror (`EMOTION_TTA=flip`, the service's
and CLI's default).

The bundled INT8 OpenVINO copy (default_model/openvino/, what the library and service run by
default) is held to the same floor on the same subset (the evaluate stage measured it on the full
PublicTest: 66.20% with the mirror against Keras's 66.43%, metrics/evaluate.json).

Measured 2026-12-07 on this subset for the model of MLflow run af7069ac: 64.20%, INT8 63.70%
(`python -m pytest tests/test_bundled_model_quality.py -s` prints them). Subset and model are fixed,
so the figure is the same on every run; the floor of 62% is for bundling another model: two full runs
of one recipe, equal on all of PublicTest (66.48% / 66.43% with the mirror), scored 65.6% and 64.2% on
this 1,000-face subset, while a real regression (a wrong label order or preprocessing falls to chance,
about 25%) fails it.
"""

import json
import zipfile

import numpy as np
import pytest

from emotion_recognition import runtime
from emotion_recognition.pipeline.data import decode_gray
from emotion_recognition.model_files import sha256_file, load_model, BUNDLED_MODEL
from emotion_recognition.inference import EmotionRecognizer
from emotion_recognition.labels import EMOTION_INDEX
from emotion_recognition.pipeline.registry import accuracy_of
from emotion_recognition.tta import from_preset

SUBSET_SIZE, SEED = 1000, 0
FLOOR = 0.62  # measured 0.6420 on this subset (see above)


def publictest_subset(zip_path) -> tuple[np.ndarray, np.ndarray]:
    with zipfile.ZipFile(zip_path) as archive:
        names = sorted(n for n in archive.namelist() if n.startswith("test/") and n.endswith(".jpg"))
        chosen = [names[i] for i in sorted(np.random.default_rng(SEED).choice(len(names), SUBSET_SIZE, replace=False))]
        images = np.stack([decode_gray(archive.read(name), name) for name in chosen])
    return images, np.array([EMOTION_INDEX[name.split("/")[1]] for name in chosen])


def test_the_bundled_model_keeps_its_accuracy_on_real_faces(shared_fer2013):
    if not BUNDLED_MODEL.is_file():
        pytest.skip(f"no bundled model at {BUNDLED_MODEL}")
    images, labels = publictest_subset(shared_fer2013)
    assert len(set(labels)) == 7  # every class is in the subset
    accuracy = accuracy_of(load_model(BUNDLED_MODEL), images, labels, from_preset("flip"))
    print(f"bundled model, {SUBSET_SIZE} PublicTest faces (seed {SEED}), face + mirror: {accuracy:.4f}")
    assert accuracy >= FLOOR, f"bundled model: {accuracy:.4f} on the PublicTest subset, below the floor {FLOOR}"


def test_the_bundled_int8_copy_keeps_the_accuracy_on_real_faces(shared_fer2013):
    if not list((BUNDLED_MODEL.parent / "openvino").glob("*.xml")):
        pytest.skip(f"no bundled OpenVINO copy beside {BUNDLED_MODEL}")
    images, labels = publictest_subset(shared_fer2013)
    recognizer = EmotionRecognizer.from_file(BUNDLED_MODEL, tta=from_preset("flip"), runtime="openvino")
    assert recognizer.classifier.runtime == "openvino"
    record = json.loads(runtime.openvino_copy(BUNDLED_MODEL).with_suffix(".json").read_text())
    assert record["precision"] == "int8" and record["keras_sha256"] == sha256_file(BUNDLED_MODEL)
    accuracy = float((recognizer.classify_faces(images).argmax(1) == labels).mean())
    print(f"bundled INT8 OpenVINO copy, {SUBSET_SIZE} PublicTest faces (seed {SEED}), face + mirror: {accuracy:.4f}")
    assert accuracy >= FLOOR, f"bundled INT8 copy: {accuracy:.4f} on the PublicTest subset, below the floor {FLOOR}"
