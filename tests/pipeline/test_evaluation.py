"""Test-set metrics and predictions (one definition for the evaluate stage and the registry)."""

import keras
import numpy as np
import pytest

from emotion_recognition.pipeline.evaluation import classification_metrics, confusion_matrix, predict_probabilities
from emotion_recognition.labels import EMOTIONS
from emotion_recognition.tta import TestTimeAugmentation

FLIP = TestTimeAugmentation(flip=True)


def test_confusion_matrix_rows_are_true_columns_predicted():
    matrix = confusion_matrix(np.array([0, 0, 1, 6]), np.array([0, 3, 1, 0]))
    assert matrix.shape == (7, 7) and matrix.sum() == 4
    assert matrix[0, 0] == 1 and matrix[0, 3] == 1 and matrix[1, 1] == 1 and matrix[6, 0] == 1


def test_classification_metrics_by_hand():
    labels = np.array([0, 0, 1, 1, 2, 3])
    predictions = np.array([0, 1, 1, 1, 2, 0])
    result = classification_metrics(labels, predictions)
    assert result["accuracy"] == pytest.approx(4 / 6)
    per_class = result["per_class"]
    assert list(per_class) == list(EMOTIONS)
    assert per_class["angry"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert per_class["disgust"] == {"precision": 0.6667, "recall": 1.0, "f1": 0.8, "support": 2}
    assert per_class["fear"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}
    assert per_class["happy"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert per_class["sad"]["support"] == 0
    assert result["macro_f1"] == pytest.approx((0.5 + 0.8 + 1.0) / 7)


def test_perfect_predictions():
    labels = np.arange(7).repeat(3)
    result = classification_metrics(labels, labels)
    assert result["accuracy"] == 1.0 and result["macro_f1"] == 1.0


def left_right_model() -> keras.Model:
    """Predicts 'angry' when the left half is brighter, 'disgust' when the right half is."""
    inputs = keras.Input((48, 48, 1))
    x = keras.layers.Flatten()(inputs)
    outputs = keras.layers.Dense(7, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    kernel = np.zeros((48 * 48, 7), np.float32)
    side = np.zeros((48, 48), np.float32)
    side[:, :24] = 1
    kernel[:, 0] = side.ravel() / 5000
    kernel[:, 1] = side[:, ::-1].ravel() / 5000
    model.layers[-1].set_weights([kernel, np.zeros(7, np.float32)])
    return model


def test_flip_tta_averages_the_face_and_its_mirror():
    model = left_right_model()
    faces = np.zeros((2, 48, 48), np.uint8)
    faces[0, :, :20] = 255  # bright left
    faces[1, :, 30:] = 200  # bright right
    plain = predict_probabilities(model, faces)
    assert plain.shape == (2, 7) and plain.argmax(axis=1).tolist() == [0, 1]
    np.testing.assert_allclose(plain.sum(axis=1), 1.0, rtol=1e-5)
    mirrored = predict_probabilities(model, faces[:, :, ::-1])
    tta = predict_probabilities(model, faces, tta=FLIP)
    np.testing.assert_allclose(tta, (plain + mirrored) / 2, rtol=1e-5)
    np.testing.assert_allclose(tta[:, 0], tta[:, 1], rtol=1e-5)  # symmetric after averaging


def test_predictions_of_a_model_that_always_says_happy(make_constant_model):
    faces = np.random.default_rng(0).integers(0, 256, (5, 48, 48)).astype(np.uint8)
    probabilities = predict_probabilities(make_constant_model(EMOTIONS.index("happy")), faces, tta=FLIP)
    assert probabilities.argmax(axis=1).tolist() == [EMOTIONS.index("happy")] * 5


def test_wrong_face_size_is_refused():
    with pytest.raises(ValueError, match="48x48 grayscale"):
        predict_probabilities(left_right_model(), np.zeros((1, 64, 64), np.uint8))
