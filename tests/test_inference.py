"""EmotionRecognizer (batched classification in bounded chunks, per-frame results)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from emotion_recognition.inference import EmotionRecognizer, FaceResult, build_results
from emotion_recognition.labels import EMOTIONS
from emotion_recognition.model_files import load_model
from emotion_recognition.tta import PRESETS
from testkit import FER_ZIP, HAPPY_P, face_canvas, iou, recognizer, require_shared, rgb, tiny_model_file  # noqa: F401


def test_classify_faces_shape_order_and_values(recognizer):
    faces = np.random.default_rng(0).integers(0, 256, (5, 48, 48), dtype=np.uint8)
    probabilities = recognizer.classify_faces(faces)
    assert probabilities.shape == (5, 7) and probabilities.dtype == np.float32
    assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    assert (probabilities.argmax(axis=1) == EMOTIONS.index("happy")).all()
    assert np.allclose(probabilities[:, EMOTIONS.index("happy")], HAPPY_P, atol=0.06)
    # one face at a time gives the same numbers as the batch
    for i in range(5):
        assert np.allclose(recognizer.classify_faces(faces[i : i + 1])[0], probabilities[i], atol=1e-5)
    assert recognizer.classify_faces(np.zeros((0, 48, 48), np.uint8)).shape == (0, 7)


def test_analyze_photo(recognizer):
    results = recognizer.analyze(rgb("angry_girl.jpg"))
    assert len(results) == 1
    face = results[0]
    assert face.emotion == "happy" and list(face.probabilities_dict) == list(EMOTIONS)
    assert face.score == pytest.approx(HAPPY_P, abs=0.06) and 0 < face.confidence <= 1
    data = json.loads(json.dumps(face.to_dict()))
    assert set(data) == {"box", "confidence", "landmarks", "emotion", "probabilities"}
    # the default detector (yuface, or yunet with EMOTION_YUNET_MODEL) gives five landmarks; Haar none
    if face.box.landmarks is None:
        assert data["landmarks"] is None
    else:
        assert len(data["landmarks"]) == 5 and all(len(p) == 2 for p in data["landmarks"])
        assert all(p == [round(x, 1), round(y, 1)] for p, (x, y) in zip(data["landmarks"], face.box.landmarks))
    back = FaceResult.from_dict(data).box
    assert (back.x, back.y, back.w, back.h, back.confidence) == (face.box.x, face.box.y, face.box.w, face.box.h, round(face.confidence, 4))
    assert back.landmarks == (None if data["landmarks"] is None else tuple(map(tuple, data["landmarks"])))


def test_analyze_frames_batches_everything_into_one_model_call(recognizer):
    images = [rgb("messi5.jpg"), np.full((100, 100, 3), 90, np.uint8), rgb("fear.jpg"), rgb("angry_girl.jpg")]
    calls = []
    original = recognizer.classifier.predict

    def counting(batch):
        calls.append(len(batch))
        return original(batch)

    recognizer.classifier.predict = counting
    try:
        per_frame = recognizer.analyze_frames(images)
    finally:
        recognizer.classifier.predict = original
    assert calls == [3]
    assert [len(r) for r in per_frame] == [1, 0, 1, 1]
    for image, batched in zip(images, per_frame):
        single = recognizer.analyze(image)
        assert [r.box for r in single] == [r.box for r in batched]
        for a, b in zip(single, batched):
            assert np.allclose(list(a.probabilities_dict.values()), list(b.probabilities_dict.values()), atol=1e-5)
    assert recognizer.analyze_frames([]) == []


def test_three_pasted_faces(recognizer):
    require_shared(FER_ZIP)
    image, pasted = face_canvas(FER_ZIP, 3)
    results = recognizer.analyze(image)
    assert len(results) == 3
    for p in pasted:
        assert max(iou(p.box, r.box) for r in results) > 0.5


def test_build_results_checks_lengths():
    with pytest.raises(ValueError, match="2 boxes but 1"):
        build_results([None, None], np.zeros((1, 7)))


def test_model_outside_the_contract_is_refused():
    import keras

    inputs = keras.Input((48, 48, 1))
    outputs = keras.layers.Dense(5, activation="softmax")(keras.layers.Flatten()(inputs))
    with pytest.raises(ValueError, match=r"expected input \(None, 48, 48, 1\) and output \(None, 7\)"):
        EmotionRecognizer(keras.Model(inputs, outputs))


def test_large_batch_with_sixteen_views_goes_in_chunks(tiny_model_file):
    """All 16 views of PublicTest's 3,589 faces in one forward pass crashed TF (SIGSEGV); here
    1,200 faces (19,200 views, to keep the test short) go through in calls of at most 1,024 views."""
    model = load_model(tiny_model_file)
    recognizer = EmotionRecognizer(model, tta=PRESETS["crops"], model_batch=1024)
    assert recognizer.tta.view_count == 16
    calls: list[int] = []
    predict = recognizer.classifier.predict
    recognizer.classifier.predict = lambda batch: (calls.append(len(batch)), predict(batch))[1]
    faces = np.random.default_rng(0).integers(0, 256, (1200, 48, 48), dtype=np.uint8)
    probabilities = recognizer.classify_faces(faces)
    assert probabilities.shape == (1200, 7) and np.allclose(probabilities.sum(axis=1), 1, atol=1e-4)
    assert max(calls) <= 1024 and sum(calls) == 1200 * 16
    # chunking changes nothing: the same faces through a recognizer with a different chunk size
    small = EmotionRecognizer(model, tta=PRESETS["crops"], model_batch=16)
    assert np.abs(small.classify_faces(faces[:50]) - probabilities[:50]).max() < 1e-5
