"""EmotionRecognizer (batched classification, per-frame results), drawing and model files."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from emotion_recognition.drawing import draw_results, label_text
from emotion_recognition.inference import EmotionRecognizer, FaceResult, build_results
from emotion_recognition.labels import EMOTIONS
from testkit import face_canvas, iou
from fixtures_serving import FER_ZIP, HAPPY_P, media, require_shared, tiny_model_file  # noqa: F401


@pytest.fixture(scope="module")
def recognizer(tiny_model_file):  # noqa: F811
    return EmotionRecognizer.from_file(tiny_model_file)


def rgb(name: str) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(media(name))), cv2.COLOR_BGR2RGB)


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
    assert face.emotion == "happy" and list(face.probabilities) == list(EMOTIONS)
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
            assert np.allclose(list(a.probabilities.values()), list(b.probabilities.values()), atol=1e-5)
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


def test_draw_results(recognizer):
    image = rgb("angry_girl.jpg")
    results = recognizer.analyze(image)
    drawn = draw_results(image, results)
    assert drawn.shape == image.shape and not np.array_equal(drawn, image)
    assert np.array_equal(image, rgb("angry_girl.jpg"))  # the input is not modified
    box = results[0].box
    assert not np.array_equal(drawn[box.y, box.x : box.x + box.w], image[box.y, box.x : box.x + box.w])  # top edge
    spanish = draw_results(image, results, language="es")
    assert not np.array_equal(drawn, spanish)
    assert label_text(results[0], "es").startswith("felicidad ")
    assert label_text(results[0]).startswith("happy ")
    with pytest.raises(ValueError, match="unknown language 'fr'"):
        draw_results(image, results, language="fr")
    with_fps = draw_results(image, [], fps=12.5)
    assert not np.array_equal(with_fps, image)
    assert np.array_equal(draw_results(image, []), image)


def test_model_files(tmp_path, monkeypatch, tiny_model_file):  # noqa: F811
    from emotion_recognition import model_files

    monkeypatch.setattr(model_files, "BUNDLED_MODEL", tmp_path / "default_model" / "model.keras")
    with pytest.raises(model_files.ModelNotFoundError, match="no bundled default model"):
        model_files.resolve_model_file(None)
    with pytest.raises(model_files.ModelNotFoundError, match="no model file"):
        model_files.resolve_model_file(tmp_path / "missing.keras")
    (tmp_path / "weights.h5").write_bytes(b"x")
    with pytest.raises(model_files.ModelNotFoundError, match="not a Keras 3 model file"):
        model_files.resolve_model_file(tmp_path / "weights.h5")
    assert model_files.resolve_model_file(tiny_model_file).origin == "file"
    (tmp_path / "default_model").mkdir()
    (tmp_path / "default_model" / "model.keras").write_bytes(tiny_model_file.read_bytes())
    assert model_files.resolve_model_file(None).origin == "bundled"
