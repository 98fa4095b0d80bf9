"""Test-set predictions and classification metrics (numpy only, one definition for all callers)."""

from __future__ import annotations

import keras
import numpy as np

from emotion_recognition.labels import EMOTIONS, NUM_CLASSES
from emotion_recognition.preprocessing import to_model_batch


def predict_probabilities(model: keras.Model, images: np.ndarray, flip_tta: bool = False, batch_size: int = 256) -> np.ndarray:
    """(N, 7) probabilities for (N, 48, 48) uint8 faces; with ``flip_tta`` the average over the
    face and its mirror image."""
    batch = to_model_batch(images)
    probabilities = model.predict(batch, batch_size=batch_size, verbose=0)
    if flip_tta:
        probabilities = (probabilities + model.predict(batch[:, :, ::-1], batch_size=batch_size, verbose=0)) / 2
    return probabilities


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    """Rows: true class, columns: predicted class, in EMOTIONS order."""
    matrix = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix


def classification_metrics(labels: np.ndarray, predictions: np.ndarray) -> dict:
    """Accuracy, macro-F1 and per-class precision/recall/F1/support."""
    matrix = confusion_matrix(labels, predictions)
    true_positive = np.diag(matrix).astype(float)
    predicted = matrix.sum(axis=0)
    actual = matrix.sum(axis=1)
    precision = np.divide(true_positive, predicted, out=np.zeros(NUM_CLASSES), where=predicted > 0)
    recall = np.divide(true_positive, actual, out=np.zeros(NUM_CLASSES), where=actual > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros(NUM_CLASSES), where=denominator > 0)
    return {
        "accuracy": float(true_positive.sum() / max(1, len(labels))),
        "macro_f1": float(f1.mean()),
        "per_class": {
            name: {
                "precision": round(float(precision[i]), 4),
                "recall": round(float(recall[i]), 4),
                "f1": round(float(f1[i]), 4),
                "support": int(actual[i]),
            }
            for i, name in enumerate(EMOTIONS)
        },
    }
