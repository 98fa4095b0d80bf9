"""Emotions of every face in an image (or in many frames): detection + one batched model call.

``EmotionRecognizer`` is shared by the service, the CLI, the tests and the benchmarks::

    recognizer = EmotionRecognizer.from_file("model.keras")
    for face in recognizer.analyze(rgb_image):
        print(face.box, face.emotion, face.probabilities)

The service splits the same steps so that classification can be batched across requests:
``locate_faces`` (detect + crop, per image) -> ``stack_faces`` -> ``classify_faces`` (model calls
of at most ``model_batch`` views each) -> ``classify_located``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from emotion_recognition.detection import Box, DetectionConfig, landmarks_from_list, landmarks_to_list, locate_faces
from emotion_recognition.labels import EMOTIONS, NUM_CLASSES
from emotion_recognition.preprocessing import FACE_SIZE, to_model_batch
from emotion_recognition.runtime import DEFAULT_MODEL_BATCH, Classifier, Runtime, load_classifier
from emotion_recognition.tta import TestTimeAugmentation


@dataclass(frozen=True, eq=False)
class FaceResult:
    """``probabilities``: read-only (7,) float64 array, EMOTIONS order; by name: ``probability(name)``."""
    box: Box
    emotion: str
    probabilities: np.ndarray

    def __post_init__(self) -> None:
        p = None if isinstance(self.probabilities, dict) else np.array(self.probabilities, dtype=np.float64)  # a copy
        if p is None or p.shape != (NUM_CLASSES,):  # FaceResult.from_dict reads the JSON dict form
            raise ValueError(f"probabilities must be an array of {NUM_CLASSES} floats in EMOTIONS order, got "
                             f"{type(self.probabilities).__name__} of shape {np.shape(self.probabilities)}")
        p.flags.writeable = False
        object.__setattr__(self, "probabilities", p)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, FaceResult) and (self.box, self.emotion) == (other.box, other.emotion)
                and np.array_equal(self.probabilities, other.probabilities))

    @property
    def confidence(self) -> float:
        """The detector's confidence that this is a face (0-1)."""
        return self.box.confidence

    @property
    def score(self) -> float:
        """The model's probability of the top emotion."""
        return self.probability(self.emotion)

    def probability(self, name: str) -> float:
        return float(self.probabilities[EMOTIONS.index(name)])

    @property
    def probabilities_dict(self) -> dict[str, float]:  # EMOTIONS order; JSON's form (unrounded)
        return {name: float(p) for name, p in zip(EMOTIONS, self.probabilities)}

    def to_dict(self) -> dict[str, Any]:
        return {"box": {"x": self.box.x, "y": self.box.y, "w": self.box.w, "h": self.box.h},
                "confidence": round(self.box.confidence, 4), "landmarks": landmarks_to_list(self.box.landmarks),
                "emotion": self.emotion, "probabilities": {n: round(p, 6) for n, p in self.probabilities_dict.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FaceResult":
        box = data["box"]
        return cls(Box(int(box["x"]), int(box["y"]), int(box["w"]), int(box["h"]), float(data.get("confidence", 1.0)),
                       landmarks_from_list(data.get("landmarks"))),
                   data["emotion"], np.array([float(data["probabilities"][name]) for name in EMOTIONS]))


def build_results(boxes: Sequence[Box], probabilities: np.ndarray) -> list[FaceResult]:
    """Pair boxes with their (N, 7) probability rows."""
    probabilities = np.asarray(probabilities, dtype=np.float64).reshape(-1, NUM_CLASSES)
    if len(boxes) != len(probabilities):
        raise ValueError(f"{len(boxes)} boxes but {len(probabilities)} probability rows")
    return [FaceResult(box, EMOTIONS[int(np.argmax(row))], row) for box, row in zip(boxes, probabilities)]


def check_model_contract(model: Any) -> None:
    """Fail early, with a readable message, on a model that does not follow the contract."""
    input_shape, output_shape = tuple(model.input_shape), tuple(model.output_shape)
    if input_shape[1:] != (FACE_SIZE, FACE_SIZE, 1) or output_shape[1:] != (NUM_CLASSES,):
        raise ValueError(f"the model takes {input_shape} and returns {output_shape}; expected input "
                         f"(None, {FACE_SIZE}, {FACE_SIZE}, 1) and output (None, {NUM_CLASSES})")


class EmotionRecognizer:
    """A loaded model + a detection config + test-time views; the model sees at most
    ``model_batch`` views per call (all views of 3,589 faces with 16 views in one call crashed TF)."""

    def __init__(self, model: Any, detection: DetectionConfig | None = None, tta: TestTimeAugmentation | None = None,
                 model_batch: int = DEFAULT_MODEL_BATCH):
        """``model``: a Keras model (run by Keras) or a ``runtime.Classifier``."""
        check_model_contract(model)
        if model_batch < 1:
            raise ValueError(f"model_batch must be >= 1, got {model_batch}")
        self.classifier = model if isinstance(model, Classifier) else Classifier.from_keras(model)
        self.detection = detection or DetectionConfig()
        self.tta = tta or TestTimeAugmentation()
        self.model_batch = model_batch
        self._lock = threading.Lock()

    @classmethod
    def from_file(cls, path: str | Path, detection: DetectionConfig | None = None,
                  tta: TestTimeAugmentation | None = None, model_batch: int = DEFAULT_MODEL_BATCH,
                  runtime: Runtime = "openvino", threads: int = 0) -> "EmotionRecognizer":
        """``runtime``/``threads``: see ``emotion_recognition.runtime.load_classifier``."""
        return cls(load_classifier(path, runtime, threads), detection, tta, model_batch)

    def classify_faces(self, faces: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """(N, 48, 48) uint8 faces -> (N, 7) float32 probabilities in EMOTIONS order: every
        test-time view of every face (``self.tta``), averaged per face. Faces go through in chunks
        of at most ``model_batch`` views per model call, so memory stays bounded for any N."""
        faces = np.asarray(faces)
        if len(faces) == 0:
            return np.zeros((0, NUM_CLASSES), np.float32)
        to_model_batch(faces[:1])  # refuse a wrong face size before building views of it

        def predict(views: np.ndarray) -> np.ndarray:
            with self._lock:  # one model call at a time; one call already uses every core
                return self.classifier.predict(to_model_batch(views))

        chunk = max(1, self.model_batch // self.tta.view_count)
        parts = [self.tta.predict(predict, faces[start : start + chunk]) for start in range(0, len(faces), chunk)]
        return np.asarray(np.concatenate(parts), dtype=np.float32)

    def analyze(self, image: np.ndarray) -> list[FaceResult]:
        """Every face in an RGB (or gray) image with its emotion; [] when there is none."""
        return self.analyze_frames([image])[0]

    def analyze_frames(self, images: Sequence[np.ndarray]) -> list[list[FaceResult]]:
        """Per-image results; the faces of all images go through the model together (in chunks)."""
        located = [locate_faces(image, self.detection) for image in images]
        return classify_located(located, self.classify_faces(stack_faces(located)))


def stack_faces(located: Sequence[tuple[list[Box], np.ndarray]]) -> np.ndarray:
    """The (N, 48, 48) faces of many ``locate_faces`` answers in one array, in order."""
    return np.concatenate([faces for _, faces in located]) if located else np.zeros((0, FACE_SIZE, FACE_SIZE), np.uint8)


def classify_located(located: Sequence[tuple[list[Box], np.ndarray]], probabilities: np.ndarray) -> list[list[FaceResult]]:
    """Split the (N, 7) probabilities of ``stack_faces(located)`` back into per-image results."""
    results, start = [], 0
    for boxes, _ in located:
        results.append(build_results(boxes, probabilities[start : start + len(boxes)]))
        start += len(boxes)
    return results
