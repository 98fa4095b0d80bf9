"""Face detection and cropping, offline, from what OpenCV 4.x installs.

The chain, each step a small function that can be tested on its own::

    image (RGB/gray) --to_grayscale--> gray
    gray --detector.detect--> raw boxes (x, y, w, h, confidence) in original pixels
    raw box --square_box--> square around the same centre (side = max(w, h))
            --expand_box--> grown by ``margin`` x side on every side (FER2013 framing)
            --clip_box----> inside the image
    gray, box --crop_face--> 48x48 uint8 face for the model

``crop_face`` is the one crop function: the service, the CLI, the tests and the benchmarks all
call it (through ``locate_faces``), so a face is framed the same way everywhere.

Detectors are pluggable: anything with ``detect(gray, config) -> list[Box]`` registered under a
name with ``register_detector``. ``DetectionConfig`` holds the detector name and every threshold.

Confidence. OpenCV's Haar cascades do not give a probability. ``detectMultiScale3`` with
``outputRejectLevels=True`` returns, for each grouped detection, the ``levelWeight``: the summed
weak-classifier score at the cascade's last stage (how far past the last threshold the window
got). On 400 FER2013 faces the weights of true faces had percentiles 1%/10%/50%/90%/99% of
about 1.0/3.2/6.3/9.5/11.8. We map it to 0-1 with a logistic curve,
``confidence = 1 / (1 + exp(-(weight - 2) / 1.5))`` (weight 1 -> 0.34, 3 -> 0.66, 6 -> 0.93,
10 -> 0.995). It ranks detections and lets callers drop weak ones
(``DetectionConfig.min_confidence``); it is not a calibrated probability.

Framing. FER2013 faces are tightly cropped. Haar's frontal-face box on a FER2013 face (upscaled
3x, pasted on a grey canvas) has a median side of 0.97 of the FER image, centred, so the
default margin is small (0.02 of the side on each edge).
"""

from __future__ import annotations

import math
import threading
from dataclasses import asdict, dataclass, replace
from typing import Callable, Protocol

import cv2
import numpy as np

from emotion_recognition.preprocessing import FACE_SIZE, resize_face, to_grayscale


@dataclass(frozen=True)
class Box:
    """A face box in the original image's pixels, with the detector's confidence (0-1)."""

    x: int
    y: int
    w: int
    h: int
    confidence: float = 1.0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class DetectionConfig:
    """Everything that decides which faces are found and how they are framed."""

    detector: str = "haar"
    scale_factor: float = 1.1  # image pyramid step of the cascade
    min_neighbors: int = 5  # overlapping raw detections needed to keep a face
    min_face_size: int = 24  # smallest face side in pixels (of the original image)
    max_face_size: int = 0  # 0: no limit
    margin: float = 0.02  # fraction of the square side added on every edge
    min_confidence: float = 0.0  # drop detections below this mapped confidence
    max_faces: int = 50  # keep at most this many faces (highest confidence first)

    def __post_init__(self) -> None:
        if self.scale_factor <= 1.0:
            raise ValueError(f"scale_factor must be > 1.0, got {self.scale_factor}")
        if self.min_neighbors < 0:
            raise ValueError(f"min_neighbors must be >= 0, got {self.min_neighbors}")
        if self.min_face_size < 1:
            raise ValueError(f"min_face_size must be >= 1 pixel, got {self.min_face_size}")
        if self.margin < 0:
            raise ValueError(f"margin must be >= 0, got {self.margin}")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ValueError(f"min_confidence must be in [0, 1], got {self.min_confidence}")
        if self.max_faces < 1:
            raise ValueError(f"max_faces must be >= 1, got {self.max_faces}")

    def with_options(self, **changes) -> "DetectionConfig":
        return replace(self, **changes)


class FaceDetector(Protocol):
    """A face detector: raw (unframed) boxes for a single-channel uint8 image."""

    def detect(self, gray: np.ndarray, config: DetectionConfig) -> list[Box]: ...


def level_weight_to_confidence(weight: float) -> float:
    """Map a Haar cascade levelWeight to 0-1 (see the module docstring)."""
    return float(1.0 / (1.0 + math.exp(-(float(weight) - 2.0) / 1.5)))


class HaarCascadeDetector:
    """OpenCV Haar cascade from the files opencv-python 4.x ships (``cv2.data.haarcascades``)."""

    def __init__(self, cascade_file: str):
        self.cascade_file = cascade_file
        self._local = threading.local()  # one CascadeClassifier per thread: safe under a thread pool

    def _cascade(self) -> cv2.CascadeClassifier:
        cascade = getattr(self._local, "cascade", None)
        if cascade is None:
            data = getattr(cv2, "data", None)
            if data is None:
                raise RuntimeError(
                    "this OpenCV build has no bundled Haar cascades (cv2.data is missing): "
                    "install opencv-python-headless 4.x (OpenCV 5 removed them)"
                )
            path = data.haarcascades + self.cascade_file
            cascade = cv2.CascadeClassifier(path)
            if cascade.empty():
                raise RuntimeError(f"could not load the Haar cascade {path}")
            self._local.cascade = cascade
        return cascade

    def detect(self, gray: np.ndarray, config: DetectionConfig) -> list[Box]:
        if gray.ndim != 2 or gray.dtype != np.uint8:
            raise ValueError(f"detect expects a 2-D uint8 image, got {gray.dtype} {gray.shape}")
        if min(gray.shape) < config.min_face_size:
            return []
        max_size = (config.max_face_size, config.max_face_size) if config.max_face_size else (0, 0)
        rects, _levels, weights = self._cascade().detectMultiScale3(
            gray,
            scaleFactor=config.scale_factor,
            minNeighbors=config.min_neighbors,
            minSize=(config.min_face_size, config.min_face_size),
            maxSize=max_size,
            outputRejectLevels=True,
        )
        weights = np.ravel(weights) if len(rects) else []
        return [
            Box(int(x), int(y), int(w), int(h), level_weight_to_confidence(weight))
            for (x, y, w, h), weight in zip(rects, weights)
        ]


_DETECTORS: dict[str, Callable[[], FaceDetector]] = {}
_INSTANCES: dict[str, FaceDetector] = {}
_LOCK = threading.Lock()


def register_detector(name: str, factory: Callable[[], FaceDetector]) -> None:
    """Make a detector available as ``DetectionConfig(detector=name)``."""
    with _LOCK:
        _DETECTORS[name] = factory
        _INSTANCES.pop(name, None)


def available_detectors() -> list[str]:
    return sorted(_DETECTORS)


def get_detector(name: str) -> FaceDetector:
    with _LOCK:
        if name not in _DETECTORS:
            raise ValueError(f"unknown face detector {name!r}: expected one of {sorted(_DETECTORS)}")
        if name not in _INSTANCES:
            _INSTANCES[name] = _DETECTORS[name]()
        return _INSTANCES[name]


register_detector("haar", lambda: HaarCascadeDetector("haarcascade_frontalface_default.xml"))
register_detector("haar_alt2", lambda: HaarCascadeDetector("haarcascade_frontalface_alt2.xml"))


def square_box(box: Box) -> Box:
    """The square with side max(w, h) around the box's centre."""
    side = max(box.w, box.h)
    cx2, cy2 = 2 * box.x + box.w, 2 * box.y + box.h  # twice the centre: stays in integers
    return replace(box, x=(cx2 - side) // 2, y=(cy2 - side) // 2, w=side, h=side)


def expand_box(box: Box, margin: float) -> Box:
    """Grow the box by ``margin`` x its size on every edge (may go outside the image)."""
    dx, dy = int(round(box.w * margin)), int(round(box.h * margin))
    return replace(box, x=box.x - dx, y=box.y - dy, w=box.w + 2 * dx, h=box.h + 2 * dy)


def clip_box(box: Box, width: int, height: int) -> Box:
    """The part of the box inside a ``width`` x ``height`` image (w/h 0 if it is all outside)."""
    x0, y0 = min(max(box.x, 0), width), min(max(box.y, 0), height)
    x1, y1 = min(max(box.x + box.w, 0), width), min(max(box.y + box.h, 0), height)
    return replace(box, x=x0, y=y0, w=x1 - x0, h=y1 - y0)


def frame_box(box: Box, config: DetectionConfig, width: int, height: int) -> Box:
    """Detector box -> the FER2013-framed face box inside the image."""
    return clip_box(expand_box(square_box(box), config.margin), width, height)


def detect_faces(image: np.ndarray, config: DetectionConfig | None = None) -> list[Box]:
    """Framed face boxes (square, padded, clipped) in ``image``, highest confidence first."""
    config = config or DetectionConfig()
    gray = to_grayscale(image)
    height, width = gray.shape
    raw = get_detector(config.detector).detect(gray, config)
    boxes = [frame_box(b, config, width, height) for b in raw if b.confidence >= config.min_confidence]
    boxes = [b for b in boxes if b.w > 0 and b.h > 0]
    boxes.sort(key=lambda b: (-b.confidence, b.y, b.x))
    return boxes[: config.max_faces]


def crop_face(gray_image: np.ndarray, box: Box) -> np.ndarray:
    """The one crop function: the face in ``box`` as a 48x48 uint8 grayscale image.

    ``box`` is in image pixels (as ``detect_faces`` returns it). Parts of the box outside the
    image are dropped; a crop that is not square because the box touched an image edge is
    padded back to a square by repeating the edge pixels on the side(s) that were cut, so the
    face is never stretched.
    """
    gray = to_grayscale(gray_image)
    height, width = gray.shape
    clipped = clip_box(box, width, height)
    if clipped.w <= 0 or clipped.h <= 0:
        raise ValueError(f"box {box} is outside the {width}x{height} image")
    crop = gray[clipped.y : clipped.y + clipped.h, clipped.x : clipped.x + clipped.w]
    if clipped.w != clipped.h:
        side = max(clipped.w, clipped.h)
        pad_x, pad_y = side - clipped.w, side - clipped.h
        left = pad_x if clipped.x == 0 and clipped.x + clipped.w < width else pad_x // 2
        top = pad_y if clipped.y == 0 and clipped.y + clipped.h < height else pad_y // 2
        if clipped.x + clipped.w == width and clipped.x > 0:
            left = 0
        if clipped.y + clipped.h == height and clipped.y > 0:
            top = 0
        crop = cv2.copyMakeBorder(crop, top, pad_y - top, left, pad_x - left, cv2.BORDER_REPLICATE)
    face = resize_face(crop)
    assert face.shape == (FACE_SIZE, FACE_SIZE)
    return np.ascontiguousarray(face, dtype=np.uint8)


def locate_faces(
    image: np.ndarray, config: DetectionConfig | None = None
) -> tuple[list[Box], np.ndarray]:
    """Detect and crop: (boxes, faces (N, 48, 48) uint8) for one image."""
    gray = to_grayscale(image)
    boxes = detect_faces(gray, config)
    faces = np.stack([crop_face(gray, b) for b in boxes]) if boxes else np.zeros((0, FACE_SIZE, FACE_SIZE), np.uint8)
    return boxes, faces
