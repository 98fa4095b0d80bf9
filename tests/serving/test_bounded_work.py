"""Model calls go in chunks: any number of faces, with any test-time views, in bounded memory."""

from __future__ import annotations

import numpy as np

from emotion_recognition.inference import EmotionRecognizer
from emotion_recognition.model import load_model
from emotion_recognition.tta import PRESETS
from fixtures_serving import tiny_model_file  # noqa: F401 (fixture)


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
