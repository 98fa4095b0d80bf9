"""Test-set predictions and classification metrics (numpy only, one definition for all callers)."""

from __future__ import annotations

import csv
from pathlib import Path

import keras
import numpy as np

from emotion_recognition.labels import EMOTIONS, NUM_CLASSES
from emotion_recognition.preprocessing import to_model_batch
from emotion_recognition.pipeline.stage_io import save_figure
from emotion_recognition.tta import PRESETS, TestTimeAugmentation

NO_TTA = PRESETS["none"]


def predict_view_probabilities(model: keras.Model, images: np.ndarray, tta: TestTimeAugmentation = NO_TTA,
                               batch_size: int = 256, chunk: int = 1024) -> np.ndarray:
    """(V, N, 7) probabilities for (N, 48, 48) uint8 faces, one slice per view of ``tta``
    (view 0 is the faces as they are). Faces go through in chunks so that all views of a large
    test set never sit in memory at once."""
    images = np.asarray(images)
    to_model_batch(images[:1])  # a wrong face size fails here, with the message of the one check
    predict = lambda views: model.predict(to_model_batch(views), batch_size=batch_size, verbose=0)
    parts = [tta.predict_views(predict, images[start : start + chunk]) for start in range(0, len(images), chunk)]
    return np.concatenate(parts, axis=1) if parts else np.zeros((tta.view_count, 0, NUM_CLASSES), np.float32)


def predict_probabilities(model: keras.Model, images: np.ndarray, tta: TestTimeAugmentation = NO_TTA,
                          batch_size: int = 256) -> np.ndarray:
    """(N, 7) probabilities for (N, 48, 48) uint8 faces: the mean over the views of ``tta``."""
    return predict_view_probabilities(model, images, tta, batch_size).mean(axis=0)


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


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def accuracy_with_fewer_views(views: np.ndarray, labels: np.ndarray, tta: TestTimeAugmentation) -> dict[str, float]:
    """Accuracy of the face alone and of the face with its mirror, read off the (V, N, 7) view
    probabilities, so one evaluation reports what each level of test-time augmentation buys."""
    accuracy = lambda probabilities: classification_metrics(labels, probabilities.argmax(axis=1))["accuracy"]
    fewer = {"accuracy_single_view": accuracy(views[0])}
    if tta.flip:
        fewer["accuracy_flip"] = accuracy(views[[0, tta.view_count // 2]].mean(axis=0))  # view V/2 mirrors view 0
    return fewer


def plot_confusion(matrix: np.ndarray, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    normalised = matrix / np.maximum(1, matrix.sum(axis=1, keepdims=True))
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(EMOTIONS)), EMOTIONS, rotation=45, ha="right")
    ax.set_yticks(range(len(EMOTIONS)), EMOTIONS)
    ax.set_xlabel("predicted"), ax.set_ylabel("true"), ax.set_title(title)
    for i in range(len(EMOTIONS)):
        for j in range(len(EMOTIONS)):
            ax.text(j, i, f"{matrix[i, j]}\n{normalised[i, j]:.0%}", ha="center", va="center", fontsize=7,
                    color="white" if normalised[i, j] > 0.5 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    save_figure(fig, path)
