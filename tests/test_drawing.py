"""Boxes and labels drawn on images: languages, track ids, the FPS line; the input is not modified."""

from __future__ import annotations

import numpy as np
import pytest

from emotion_recognition.drawing import draw_results, label_text
from testkit import face, one_hot, recognizer, rgb, tiny_model_file  # noqa: F401


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


def test_annotation_puts_the_track_id_before_the_label():
    from emotion_recognition.drawing import draw_results, label_text

    result = face(40, 40, probabilities=one_hot("happy"))
    assert label_text(result, "en", track_id=3) == "#3 happy 70%"
    assert label_text(result, "es") == "felicidad 70%"
    image = np.full((200, 200, 3), 60, np.uint8)
    with_id = draw_results(image, [result], track_ids=[3])
    assert not np.array_equal(with_id, draw_results(image, [result]))
    with pytest.raises(ValueError, match="1 track ids for 2 faces"):
        draw_results(image, [result, result], track_ids=[3])
