"""Test-time augmentation views: what each view looks like, how they are averaged, bad settings."""

import numpy as np
import pytest

from emotion_recognition.inference import EmotionRecognizer
from emotion_recognition.tta import PRESETS, TestTimeAugmentation, from_preset, shifted, zoom


def dot_face(y: int, x: int) -> np.ndarray:
    face = np.zeros((1, 48, 48), np.uint8)
    face[0, y, x] = 255
    return face


def test_views_order_face_zooms_shifts_then_mirrors():
    tta = TestTimeAugmentation(flip=True, zoom_crops=(44, 40), shift=2)
    faces = np.random.default_rng(0).integers(0, 256, (3, 48, 48)).astype(np.uint8)
    views = tta.views(faces)
    assert views.shape == (14, 3, 48, 48) and tta.view_count == 14 and views.dtype == np.uint8
    np.testing.assert_array_equal(views[0], faces)
    np.testing.assert_array_equal(views[1], zoom(faces, 44))
    np.testing.assert_array_equal(views[3], shifted(faces, 2, 0))
    np.testing.assert_array_equal(views[7:], views[:7, :, :, ::-1])  # second half mirrors the first, in order
    assert tta.describe() == "14 views (flip, zoom 44px, zoom 40px, shift 2px x4)"
    assert TestTimeAugmentation().describe() == "1 view (no TTA)" and TestTimeAugmentation().view_count == 1


def test_shift_moves_the_face_and_replicates_the_edge():
    moved = shifted(dot_face(10, 20), 3, -2)
    assert np.argwhere(moved[0] == 255).tolist() == [[13, 18]]
    edge = np.zeros((1, 48, 48), np.uint8)
    edge[0, :, 0] = 100  # left column
    right = shifted(edge, 0, 4)
    assert (right[0, :, :5] == 100).all() and (right[0, :, 5:] == 0).all()


def test_zoom_keeps_the_centre_and_drops_the_border():
    face = np.full((1, 48, 48), 200, np.uint8)
    face[0, :2, :] = face[0, -2:, :] = face[0, :, :2] = face[0, :, -2:] = 0  # a 2-pixel black frame
    zoomed = zoom(face, 44)
    assert zoomed.shape == (1, 48, 48) and (zoomed == 200).all()
    dot = zoom(dot_face(12, 12), 24)  # 4x zoom around the centre: (12, 12) lands near (0, 0)
    y, x = np.unravel_index(dot[0].argmax(), (48, 48))
    assert y <= 2 and x <= 2
    assert zoom(np.zeros((0, 48, 48), np.uint8), 40).shape == (0, 48, 48)


def test_predict_averages_every_view_in_one_call():
    calls = []

    def brightness_model(views: np.ndarray) -> np.ndarray:
        """Class 0 probability = mean brightness of the left half (a real, view-dependent function)."""
        calls.append(views.shape)
        left = views[:, :, :24].mean(axis=(1, 2)) / 255
        return np.stack([left, 1 - left, *np.zeros((5, len(views)))], axis=1)

    faces = np.zeros((2, 48, 48), np.uint8)
    faces[:, :, :24] = 255  # bright left half
    single = TestTimeAugmentation().predict(brightness_model, faces)
    flipped = TestTimeAugmentation(flip=True).predict(brightness_model, faces)
    assert calls == [(2, 48, 48), (4, 48, 48)]
    np.testing.assert_allclose(single[:, 0], 1.0)
    np.testing.assert_allclose(flipped[:, :2], 0.5)  # the mirror is dark on the left: average 0.5
    per_view = TestTimeAugmentation(flip=True).predict_views(brightness_model, faces)
    assert per_view.shape == (2, 2, 7)
    np.testing.assert_allclose(per_view[:, :, 0], [[1, 1], [0, 0]])


def test_recognizer_applies_its_tta():
    """A left/right-asymmetric face classified with and without the mirror view."""
    import keras

    inputs = keras.Input((48, 48, 1))
    left = keras.layers.Lambda(lambda x: keras.ops.mean(x[:, :, :24], axis=(1, 2, 3)) / 255)(inputs)
    logits = keras.layers.Lambda(lambda v: keras.ops.stack([v * 8, (1 - v) * 8] + [v * 0 - 9] * 5, axis=1))(left)
    model = keras.Model(inputs, keras.layers.Softmax()(logits))
    faces = np.zeros((1, 48, 48), np.uint8)
    faces[:, :, :24] = 255
    plain = EmotionRecognizer(model).classify_faces(faces)
    mirrored = EmotionRecognizer(model, tta=from_preset("flip")).classify_faces(faces)
    assert plain[0, 0] > 0.99 and mirrored[0, 0] == pytest.approx(mirrored[0, 1], abs=1e-5)
    crops = EmotionRecognizer(model, tta=from_preset("crops")).classify_faces(faces)
    assert crops.shape == (1, 7) and crops.sum() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("kwargs, message", [
    ({"zoom_crops": (48,)}, "zoom crop 48 px: expected 24-47"),
    ({"zoom_crops": (10,)}, "zoom crop 10 px: expected 24-47"),
    ({"shift": 9}, "shift 9 px: expected 0-8"),
])
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TestTimeAugmentation(**kwargs)


def test_presets():
    assert from_preset(" Flip ") == TestTimeAugmentation(flip=True)
    assert PRESETS["crops"].view_count == 16 and PRESETS["none"].view_count == 1
    with pytest.raises(ValueError, match="unknown test-time augmentation 'ten-crop': expected one of none, flip, crops"):
        from_preset("ten-crop")


def test_known_values_of_the_crops_views():
    """Class 0 = brightness of the left half: which view sees how much of a bright left half."""
    def brightness_model(views: np.ndarray) -> np.ndarray:
        left = views[:, :, :24].astype(float).mean(axis=(1, 2)) / 255
        return np.stack([left, 1 - left, *np.zeros((5, len(views)))], axis=1)

    faces = np.zeros((1, 48, 48), np.uint8)
    faces[:, :, :24] = 255
    per_view = from_preset("crops").predict_views(brightness_model, faces)[:, 0, 0]
    assert per_view.shape == (16,)
    np.testing.assert_allclose(per_view[:4], 1.0, atol=0.03)  # face and zooms 44/42/40: the left half stays bright
    np.testing.assert_allclose(per_view[4:8], [1, 1, 1, 21 / 24])  # down, up, right, left by 3 px: left loses 3 columns
    # mirrors: the left half of view 8 + i is the right half of view i, dark but for the 3 columns
    # that the right shift (view 6) moved across the middle
    np.testing.assert_allclose(per_view[8:], [0, 0, 0, 0, 0, 0, 3 / 24, 0], atol=0.03)


def test_int_faces_and_no_faces():
    faces = np.random.default_rng(1).integers(0, 256, (2, 48, 48))  # int64, as a JSON list of lists decodes
    assert from_preset("crops").views(faces).shape == (16, 2, 48, 48)
    empty = from_preset("crops").predict_views(lambda views: np.zeros((len(views), 7)), np.zeros((0, 48, 48), np.uint8))
    assert empty.shape == (16, 0, 7)


def test_the_evaluate_stage_default_is_the_crops_preset():
    """params.yaml and PRESETS spell the 16 views out separately; README calls them the same."""
    from pathlib import Path

    from emotion_recognition.pipeline.params import load_params

    assert load_params(Path(__file__).resolve().parents[1] / "params.yaml").evaluate.tta() == PRESETS["crops"]
