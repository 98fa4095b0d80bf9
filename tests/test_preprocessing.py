"""emotion_recognition.preprocessing: the one conversion from pixels to the model's input."""

import numpy as np
import pytest

from emotion_recognition.preprocessing import FACE_SIZE, resize_face, to_grayscale, to_model_batch


def test_to_grayscale_reads_rgb_in_rgb_order():
    red, blue = np.zeros((2, 2, 3), np.uint8), np.zeros((2, 2, 3), np.uint8)
    red[..., 0], blue[..., 2] = 255, 255
    # ITU-R 601 weights: red counts 0.299, blue 0.114; swapped channels would give the reverse
    assert to_grayscale(red)[0, 0] == 76 and to_grayscale(blue)[0, 0] == 29


@pytest.mark.parametrize("image, expected", [
    (np.full((3, 4), 200, np.uint8), 200),
    (np.full((3, 4, 1), 200, np.uint8), 200),
    (np.full((3, 4), 200 * 256 + 99, np.uint16), 200),  # 16-bit: the high byte
    (np.full((3, 4), 0.5, np.float32), 127),  # floats in [0, 1]
    (np.full((3, 4), 200.0, np.float64), 200),  # floats in [0, 255]
    (np.full((3, 4, 4), 200, np.uint8), 200),  # RGBA: alpha ignored
])
def test_to_grayscale_gives_2d_uint8(image, expected):
    gray = to_grayscale(image)
    assert gray.shape == (3, 4) and gray.dtype == np.uint8
    assert gray[0, 0] == expected


@pytest.mark.parametrize("image, message", [
    (np.zeros((3, 4), np.int32), "unsupported pixel type"),
    (np.zeros((3, 4, 2), np.uint8), "unsupported image shape"),
    (np.zeros((3,), np.uint8), "unsupported image shape"),
])
def test_to_grayscale_names_what_it_cannot_read(image, message):
    with pytest.raises(ValueError, match=message):
        to_grayscale(image)


@pytest.mark.parametrize("shape", [(10, 10), (48, 48), (200, 120)])
def test_resize_face_gives_the_model_size(shape):
    face = resize_face(np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8))
    assert face.shape == (FACE_SIZE, FACE_SIZE) and face.dtype == np.uint8


def test_to_model_batch_keeps_values_0_255_and_adds_the_channel():
    faces = np.stack([np.full((FACE_SIZE, FACE_SIZE), v, np.uint8) for v in (0, 255)])
    batch = to_model_batch(faces)
    assert batch.shape == (2, FACE_SIZE, FACE_SIZE, 1) and batch.dtype == np.float32
    assert batch.min() == 0.0 and batch.max() == 255.0  # scaling happens inside the saved model


def test_to_model_batch_refuses_a_wrong_face_size():
    with pytest.raises(ValueError, match="48x48 grayscale"):
        to_model_batch(np.zeros((2, 32, 32), np.uint8))
