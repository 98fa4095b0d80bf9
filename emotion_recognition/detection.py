"""Face detection and cropping, offline, from what pip installs (no model download at run time).

The chain, each step a small function that can be tested on its own::

    image (RGB/gray) --to_grayscale--> gray (once per image)
    gray --detector.detect--> raw boxes (x, y, w, h, confidence, landmarks) in original pixels;
                              the CNN detectors run on the image shrunk so that the smallest face
                              to find (``min_face_size``) becomes their ``CNN_MIN_FACE``
    raw box --frame_box--> square around the (shifted) centre, grown by the detector's margin,
                           clipped to the image (FER2013 framing, calibrated per detector)
    gray, box --crop_face--> 48x48 uint8 face for the model

``crop_face`` is the one crop function: the service, the CLI, the tests and the benchmarks all
call it (through ``locate_faces``), so a face is framed the same way everywhere.

Detectors (``DetectionConfig.detector``; docs/detection.md has the measurements):

- ``yuface``: YuNet-s (libfacedetection) compiled into the ``yuface`` wheel from PyPI; no model
  file needed. Wheels exist for CPython 3.11 on Linux x86_64 and Windows only.
- ``yunet``: the same network from an ONNX file the user downloads once (``DetectionConfig.yunet_model``
  / ``EMOTION_YUNET_MODEL``; its sha256 is checked), run by OpenVINO, or by OpenCV's
  ``cv2.FaceDetectorYN`` where OpenVINO is not installed. Much faster than ``yuface``
  (bench/README.md) but needs the file.
- ``haar``: OpenCV's Haar cascade (bundled with opencv-python 4.x): the fallback.
- ``auto`` (default): ``yunet`` if a model file is configured, else ``yuface`` if importable, else
  ``haar`` with a warning. ``resolve_detector`` says which one runs.

The CNN detectors return five landmarks per face (right eye, left eye, nose tip, right and left
mouth corners - the subject's right/left, YuNet's order) in image pixels; Haar returns none.

Confidence. OpenCV's Haar cascades do not give a probability. ``detectMultiScale3`` with
``outputRejectLevels=True`` returns, for each grouped detection, the ``levelWeight``: the summed
weak-classifier score at the cascade's last stage (how far past the last threshold the window
got). On 400 FER2013 faces the weights of true faces had percentiles 1%/10%/50%/90%/99% of
about 1.0/3.2/6.3/9.5/11.8. We map it to 0-1 with a logistic curve,
``confidence = 1 / (1 + exp(-(weight - 2) / 1.5))`` (weight 1 -> 0.34, 3 -> 0.66, 6 -> 0.93,
10 -> 0.995). It ranks detections and lets callers drop weak ones
(``DetectionConfig.min_confidence``); it is not a calibrated probability. YuNet's score is
already 0-1.

Framing. FER2013 faces are tightly cropped, and each detector frames a face its own way (Haar's
box is square and close to a FER crop; YuNet's is taller than wide, from brow to chin).
``FRAMING`` holds, per detector, the margin and vertical shift chosen by the end-to-end emotion
accuracy they give on bench/detection_benchmark.py (see bench/README.md).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Protocol

import cv2
import numpy as np

from emotion_recognition.preprocessing import FACE_SIZE, resize_face, to_grayscale

logger = logging.getLogger(__name__)

Landmarks = tuple[tuple[float, float], ...]  # 5 (x, y) points in image pixels
LANDMARK_NAMES = ("right_eye", "left_eye", "nose_tip", "right_mouth_corner", "left_mouth_corner")

# The model-zoo file the ``yunet`` detector is calibrated and checked against.
YUNET_MODEL_NAME = "face_detection_yunet_2023mar.onnx"
YUNET_MODEL_URL = (
    "https://github.com/opencv/opencv_zoo/raw/main/models/face_detection_yunet/face_detection_yunet_2023mar.onnx"
)
YUNET_MODEL_SHA256 = "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4"
# Face side (px, in the image the network sees) from which YuNet on a shrunk image still finds
# the faces it finds at full size: the detector runs on the image shrunk by CNN_MIN_FACE /
# min_face_size (never enlarged). From bench/detection_benchmark.py --min-face-sweep.
CNN_MIN_FACE = 64


@dataclass(frozen=True)
class Box:
    """A face box in the original image's pixels, the detector's confidence (0-1) and, when the
    detector gives them, five landmarks (``LANDMARK_NAMES`` order)."""

    x: int
    y: int
    w: int
    h: int
    confidence: float = 1.0
    landmarks: Landmarks | None = None


def landmarks_to_list(landmarks: Landmarks | None) -> list[list[float]] | None:
    """The JSON form: [[x, y] x 5] rounded to 0.1 pixel, or None."""
    if landmarks is None:
        return None
    return [[round(float(x), 1), round(float(y), 1)] for x, y in landmarks]


def landmarks_from_list(points) -> Landmarks | None:
    if points is None:
        return None
    if len(points) != len(LANDMARK_NAMES) or any(len(p) != 2 for p in points):
        raise ValueError(f"landmarks must be {len(LANDMARK_NAMES)} [x, y] pairs, got {points!r}")
    return tuple((float(x), float(y)) for x, y in points)


@dataclass(frozen=True)
class Framing:
    """How a detector's raw box becomes a FER2013-like crop: a square of side max(w, h) x
    (1 + 2 x margin) around the box centre moved down by ``shift_y`` x max(w, h)."""

    margin: float
    shift_y: float = 0.0


# Chosen on bench/detection_benchmark.py by end-to-end emotion accuracy (bench/README.md).
FRAMING: dict[str, Framing] = {
    "haar": Framing(margin=0.02, shift_y=0.0),
    "yunet": Framing(margin=-0.05, shift_y=-0.05),
    "yuface": Framing(margin=-0.05, shift_y=0.05),
}

# Score threshold of the CNN detectors, chosen on the same benchmark: the lowest keeping
# precision >= 97% at IoU 0.3 (0.3 drops it to about 96%).
SCORE_THRESHOLD: dict[str, float] = {"yunet": 0.4, "yuface": 0.4}


def _default_yunet_model() -> str:
    return os.environ.get("EMOTION_YUNET_MODEL", "")


@dataclass(frozen=True)
class DetectionConfig:
    """Everything that decides which faces are found and how they are framed.

    ``None`` for margin / shift_y / score_threshold means the running detector's calibrated
    value (``FRAMING``, ``SCORE_THRESHOLD``). ``min_face_size`` also sets the resolution the CNN
    detectors run at (``detect_scale``): a larger value is faster and drops smaller faces.
    """

    detector: str = "auto"
    scale_factor: float = 1.1  # Haar: image pyramid step of the cascade
    min_neighbors: int = 5  # Haar: overlapping raw detections needed to keep a face
    min_face_size: int = 24  # smallest face side to find, px of the original image (bench/README.md)
    max_face_size: int = 0  # 0: no limit
    margin: float | None = None  # fraction of the square side added on every edge
    shift_y: float | None = None  # move the crop centre down by this fraction of the side
    min_confidence: float = 0.0  # drop detections below this confidence
    max_faces: int = 50  # keep at most this many faces (highest confidence first)
    score_threshold: float | None = None  # yunet/yuface: keep detections scoring at least this
    yunet_model: str = field(default_factory=_default_yunet_model)  # path of the YuNet ONNX file
    threads: int = 0  # yunet on OpenVINO: inference threads (0: OpenVINO's default, every core)

    def __post_init__(self) -> None:
        if self.detector not in detector_choices():
            raise ValueError(f"unknown face detector {self.detector!r}: expected one of {detector_choices()}")
        if self.scale_factor <= 1.0:
            raise ValueError(f"scale_factor must be > 1.0, got {self.scale_factor}")
        if self.min_neighbors < 0:
            raise ValueError(f"min_neighbors must be >= 0, got {self.min_neighbors}")
        if self.min_face_size < 1:
            raise ValueError(f"min_face_size must be >= 1 pixel, got {self.min_face_size}")
        if self.margin is not None and self.margin < -0.25:
            raise ValueError(f"margin must be >= -0.25, got {self.margin}")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ValueError(f"min_confidence must be in [0, 1], got {self.min_confidence}")
        if self.score_threshold is not None and not 0.0 <= self.score_threshold <= 1.0:
            raise ValueError(f"score_threshold must be in [0, 1], got {self.score_threshold}")
        if self.max_faces < 1:
            raise ValueError(f"max_faces must be >= 1, got {self.max_faces}")
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0 (0: every core), got {self.threads}")

    def framing(self, detector: str) -> Framing:
        base = FRAMING.get(detector, Framing(margin=0.0))
        return Framing(base.margin if self.margin is None else self.margin,
                       base.shift_y if self.shift_y is None else self.shift_y)

    def detect_scale(self) -> float:
        """The factor the CNN detectors shrink the image by: a face of ``min_face_size`` px
        becomes ``CNN_MIN_FACE`` px; never above 1 (enlarging finds no more and costs more)."""
        return min(1.0, CNN_MIN_FACE / self.min_face_size)

    def score(self, detector: str) -> float:
        return SCORE_THRESHOLD.get(detector, 0.5) if self.score_threshold is None else self.score_threshold


class FaceDetector(Protocol):
    """A face detector: raw (unframed) boxes for a single-channel uint8 image."""

    def detect(self, gray: np.ndarray, config: DetectionConfig) -> list[Box]: ...


class DetectorUnavailable(RuntimeError):
    """The detector cannot run here (package not installed, model file missing or wrong)."""


def level_weight_to_confidence(weight: float) -> float:
    """Map a Haar cascade levelWeight to 0-1 (see the module docstring)."""
    return float(1.0 / (1.0 + math.exp(-(float(weight) - 2.0) / 1.5)))


def _check_gray(gray: np.ndarray) -> None:
    if gray.ndim != 2 or gray.dtype != np.uint8:
        raise ValueError(f"detect expects a 2-D uint8 image, got {gray.dtype} {gray.shape}")


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
                raise DetectorUnavailable(
                    "this OpenCV build has no bundled Haar cascades (cv2.data is missing): "
                    "install opencv-python-headless 4.x (OpenCV 5 removed them)"
                )
            path = data.haarcascades + self.cascade_file
            cascade = cv2.CascadeClassifier(path)
            if cascade.empty():
                raise DetectorUnavailable(f"could not load the Haar cascade {path}")
            self._local.cascade = cascade
        return cascade

    def detect(self, gray: np.ndarray, config: DetectionConfig) -> list[Box]:
        _check_gray(gray)
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


def _yunet_rows_to_boxes(rows: np.ndarray, scale: float, config: DetectionConfig) -> list[Box]:
    """(N, 15) rows [x, y, w, h, 10 landmark coordinates, score] in the scaled image -> Boxes in
    the original image, without the faces outside the configured size range."""
    boxes = []
    for row in np.asarray(rows, dtype=np.float64).reshape(-1, 15):
        x, y, w, h = row[:4] / scale
        side = max(w, h)
        if side < config.min_face_size or (config.max_face_size and side > config.max_face_size):
            continue
        points = tuple((float(px / scale), float(py / scale)) for px, py in row[4:14].reshape(5, 2))
        boxes.append(Box(int(round(x)), int(round(y)), int(round(w)), int(round(h)),
                         float(min(max(row[14], 0.0), 1.0)), points))
    return boxes


def _scaled_bgr(gray: np.ndarray, scale: float) -> np.ndarray:
    """The 3-channel image the CNN detectors take (they were trained on colour; gray works)."""
    if scale < 1.0:
        size = (max(1, int(round(gray.shape[1] * scale))), max(1, int(round(gray.shape[0] * scale))))
        gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)


_CHECKED_YUNET: set[tuple[str, int, int]] = set()  # (path, size, mtime) of files whose sha256 matched


def check_yunet_model(path: str | Path) -> Path:
    """The YuNet file, after checking it is the calibrated 2023mar release (sha256). A file checked
    before and unchanged since (size and mtime) is not read again: ``auto`` asks on every frame."""
    if not str(path):
        raise DetectorUnavailable(
            f"the yunet detector needs the model file {YUNET_MODEL_NAME}: download it from "
            f"{YUNET_MODEL_URL} and set EMOTION_YUNET_MODEL (or DetectionConfig.yunet_model) to its path"
        )
    path = Path(path).expanduser()
    if not path.is_file():
        raise DetectorUnavailable(f"YuNet model file {path} does not exist (download: {YUNET_MODEL_URL})")
    stat = path.stat()
    if (str(path), stat.st_size, stat.st_mtime_ns) not in _CHECKED_YUNET:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != YUNET_MODEL_SHA256:
            raise DetectorUnavailable(
                f"YuNet model file {path} has sha256 {digest}, expected {YUNET_MODEL_SHA256} "
                f"({YUNET_MODEL_NAME} from {YUNET_MODEL_URL})"
            )
        _CHECKED_YUNET.add((str(path), stat.st_size, stat.st_mtime_ns))
    return path


class YuNetOpenCVDetector:
    """YuNet through ``cv2.FaceDetectorYN`` with the user's ONNX file (``check_yunet_model``)."""

    def __init__(self) -> None:
        self._local = threading.local()  # FaceDetectorYN keeps per-call state: one per thread

    def _model(self, config: DetectionConfig, size: tuple[int, int]):
        path = str(check_yunet_model(config.yunet_model))
        models = getattr(self._local, "models", None)
        if models is None:
            models = self._local.models = {}
        model = models.get(path)
        if model is None:
            # score threshold 0 here: the configured threshold is applied per call
            model = models[path] = cv2.FaceDetectorYN.create(str(path), "", size, 0.0, 0.3, 5000)
        model.setInputSize(size)
        return model

    def detect(self, gray: np.ndarray, config: DetectionConfig) -> list[Box]:
        _check_gray(gray)
        scale = config.detect_scale()
        image = _scaled_bgr(gray, scale)
        model = self._model(config, (image.shape[1], image.shape[0]))
        model.setScoreThreshold(config.score("yunet"))
        _, rows = model.detect(image)
        return [] if rows is None else _yunet_rows_to_boxes(rows, scale, config)


class YuNetOpenVINODetector:
    """YuNet's network through OpenVINO (the classifier's engine), then FaceDetectorYN's decoding
    and NMS (``decode_yunet``): 5.2 against OpenCV's 11.9 ms at 640x480, the same faces within
    1 px (bench/yunet_runtimes.py). One dynamic-shape compiled model per file and thread count
    (compiling per frame size took ~170 ms each), one infer request per Python thread."""

    def __init__(self) -> None:
        import openvino

        self._core, self._compiled, self._lock = openvino.Core(), {}, threading.Lock()
        self._local = threading.local()

    def _request(self, path: str, threads: int):
        requests, key = self._local.__dict__.setdefault("requests", {}), (path, threads)
        if key not in requests:
            with self._lock:
                if key not in self._compiled:
                    model = self._core.read_model(check_yunet_model(path))
                    model.reshape([1, 3, -1, -1])  # any frame size (padded to multiples of 32)
                    options = {"INFERENCE_NUM_THREADS": threads} if threads else {}
                    self._compiled[key] = self._core.compile_model(model, "CPU", options)
            requests[key] = self._compiled[key].create_infer_request()
        return requests[key]

    def detect(self, gray: np.ndarray, config: DetectionConfig) -> list[Box]:
        _check_gray(gray)
        scale = config.detect_scale()
        image = _scaled_bgr(gray, scale)
        height, width = image.shape[:2]
        # FaceDetectorYN's input: BGR float32 0-255, NCHW, zero-padded to multiples of 32
        padded = cv2.copyMakeBorder(image, 0, -height % 32, 0, -width % 32, cv2.BORDER_CONSTANT)
        request = self._request(config.yunet_model, config.threads)
        request.infer({0: cv2.dnn.blobFromImage(padded)})
        outputs = {name: request.get_output_tensor(i).data for i, name in enumerate(YUNET_OUTPUTS)}
        return _yunet_rows_to_boxes(decode_yunet(outputs, padded.shape[1], config.score("yunet")), scale, config)


# The 2023mar file's outputs, in order: per stride, class and objectness scores, box and landmarks.
YUNET_STRIDES = (8, 16, 32)
YUNET_OUTPUTS = [f"{kind}_{stride}" for kind in ("cls", "obj", "bbox", "kps") for stride in YUNET_STRIDES]


def decode_yunet(outputs: dict[str, np.ndarray], width: int, score_threshold: float,
                 nms_threshold: float = 0.3) -> np.ndarray:
    """YuNet's outputs for a ``width``-pixel-wide input -> (N, 15) rows [x, y, w, h, 10 landmark
    coordinates, score], as OpenCV's FaceDetectorYN decodes them (face_detect.cpp), then its NMS."""
    rows = []
    for stride in YUNET_STRIDES:
        cols = width // stride
        cls, obj = (np.clip(outputs[f"{kind}_{stride}"].reshape(-1), 0, 1) for kind in ("cls", "obj"))
        score = np.sqrt(cls * obj)
        keep = np.flatnonzero(score >= score_threshold)
        box, points = outputs[f"bbox_{stride}"].reshape(-1, 4)[keep], outputs[f"kps_{stride}"].reshape(-1, 5, 2)[keep]
        cell = np.stack([keep % cols, keep // cols], axis=1).astype(np.float32)  # (column, row)
        size = np.exp(box[:, 2:]) * stride
        corner = (cell + box[:, :2]) * stride - size / 2
        points = (points + cell[:, None, :]) * stride
        rows.append(np.column_stack([corner, size, points.reshape(-1, 10), score[keep]]))
    rows = np.concatenate(rows)
    keep = cv2.dnn.NMSBoxes(rows[:, :4].tolist(), rows[:, 14].tolist(), score_threshold, nms_threshold, top_k=5000)
    return rows[np.asarray(keep, dtype=int).reshape(-1)]


def _yunet_detector() -> FaceDetector:
    """OpenVINO's YuNet where openvino is installed (a base dependency), else OpenCV's."""
    try:
        return YuNetOpenVINODetector()
    except ImportError:
        return YuNetOpenCVDetector()


def import_yuface():
    """The ``yuface`` module, or DetectorUnavailable (not installed / no wheel for this platform)."""
    # yuface runs on its own OpenMP runtime, whose idle threads spin by default: on cores shared
    # with TensorFlow or other processes a 640x480 frame went from ~45 ms to ~190 ms median
    # (bench/README.md). Passive waiting (read when the runtime loads) unless the user chose.
    # Its thread count stays OpenMP's default: 1 vs 2 threads measured the same (bench/README.md),
    # and OMP_NUM_THREADS is process-wide (TensorFlow reads it too).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import yuface
    except ImportError as error:
        raise DetectorUnavailable(
            f"the yuface package is not installed ({error}); it has wheels for CPython 3.11 on "
            "Linux x86_64 and Windows: pip install yuface==2023.5.1"
        ) from None
    return yuface


class YuFaceDetector:
    """YuNet-s compiled into the ``yuface`` wheel (libfacedetection): no model file needed."""

    def __init__(self) -> None:
        self._detect = import_yuface().c_detect  # raw rows; yuface.detect only adds a size warning

    def detect(self, gray: np.ndarray, config: DetectionConfig) -> list[Box]:
        _check_gray(gray)
        scale = config.detect_scale()
        rows = np.asarray(self._detect(_scaled_bgr(gray, scale)), dtype=np.float64)
        if rows.size == 0:
            return []
        # yuface rows: [score 0-100, x, y, w, h, 10 landmark coordinates, ...] (integers)
        rows = rows.reshape(rows.shape[0], -1)
        rows = rows[rows[:, 0] >= 100.0 * config.score("yuface")]
        reordered = np.concatenate([rows[:, 1:15], rows[:, :1] / 100.0], axis=1)
        return _yunet_rows_to_boxes(reordered, scale, config)


_DETECTORS: dict[str, Callable[[], FaceDetector]] = {
    "haar": lambda: HaarCascadeDetector("haarcascade_frontalface_default.xml"),
    "yunet": _yunet_detector,
    "yuface": YuFaceDetector,
}
_INSTANCES: dict[str, FaceDetector] = {}
_LOCK = threading.Lock()
_UNAVAILABLE: set[str] = set()  # detectors ``auto`` found unusable


def detector_choices() -> list[str]:
    """Every name ``DetectionConfig.detector`` accepts."""
    return ["auto", *_DETECTORS]


def get_detector(name: str) -> FaceDetector:
    with _LOCK:
        if name not in _DETECTORS:
            raise ValueError(f"unknown face detector {name!r}: expected one of {sorted(_DETECTORS)}")
        if name not in _INSTANCES:
            _INSTANCES[name] = _DETECTORS[name]()
        return _INSTANCES[name]


def resolve_detector(config: DetectionConfig) -> str:
    """The detector that runs for ``config``: the configured name, or what ``auto`` picks (yunet
    with a configured model file, else yuface, else haar with a warning, logged once)."""
    if config.detector != "auto":
        return config.detector
    if config.yunet_model:
        check_yunet_model(config.yunet_model)  # a configured but wrong file is an error, not a fallback
        return "yunet"
    if "yuface" in _UNAVAILABLE:
        return "haar"
    try:
        get_detector("yuface")
        return "yuface"
    except DetectorUnavailable as error:
        _UNAVAILABLE.add("yuface")  # decided once per process: no import attempt per frame
        logger.warning("face detector: yuface is unavailable, falling back to the Haar cascade "
                       "(lower recall, see docs/detection.md): %s", error)
        return "haar"


def prepare_detector(config: DetectionConfig) -> str:
    """Resolve and load the detector now (at startup), so a missing package or model file is one
    clear DetectorUnavailable error before the first image, not a failure inside a request."""
    name = resolve_detector(config)
    get_detector(name)
    if name == "yunet":
        check_yunet_model(config.yunet_model)
    return name


def describe_detector(config: DetectionConfig) -> dict:
    """What /model_info and the logs report about detection (loads the detector: see
    ``prepare_detector``)."""
    name = prepare_detector(config)
    framing = config.framing(name)
    info = {"detector": name, "configured": config.detector, "margin": framing.margin, "shift_y": framing.shift_y}
    if name in ("yunet", "yuface"):
        info.update(score_threshold=config.score(name), input_scale=config.detect_scale())
    if name == "yunet":
        info["model_file"] = str(config.yunet_model)
        info["runtime"] = "openvino" if isinstance(get_detector(name), YuNetOpenVINODetector) else "opencv"
    return info


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


def shift_box(box: Box, fraction_y: float) -> Box:
    """Move the box down by ``fraction_y`` x its height (up when negative)."""
    return replace(box, y=box.y + int(round(box.h * fraction_y)))


def frame_box(box: Box, framing: Framing, width: int, height: int) -> Box:
    """Detector box -> the FER2013-framed face box inside the image."""
    return clip_box(expand_box(shift_box(square_box(box), framing.shift_y), framing.margin), width, height)


def detect_faces(image: np.ndarray, config: DetectionConfig | None = None) -> list[Box]:
    """Framed face boxes (square, padded, clipped) in ``image``, highest confidence first."""
    return _detect_gray(to_grayscale(image), config or DetectionConfig())


def _detect_gray(gray: np.ndarray, config: DetectionConfig) -> list[Box]:
    height, width = gray.shape
    name = resolve_detector(config)
    framing = config.framing(name)
    raw = get_detector(name).detect(gray, config)
    boxes = [frame_box(b, framing, width, height) for b in raw if b.confidence >= config.min_confidence]
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
    return _crop_clipped(gray, clip_box(box, gray.shape[1], gray.shape[0]))


def _crop_clipped(gray: np.ndarray, clipped: Box) -> np.ndarray:
    """``crop_face`` for a box already inside the 2-D ``gray`` (what ``frame_box`` returns)."""
    height, width = gray.shape
    if clipped.w <= 0 or clipped.h <= 0:
        raise ValueError(f"box {clipped} is outside the {width}x{height} image")
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
    return np.ascontiguousarray(resize_face(crop), dtype=np.uint8)


def locate_faces(
    image: np.ndarray, config: DetectionConfig | None = None
) -> tuple[list[Box], np.ndarray]:
    """Detect and crop: (boxes, faces (N, 48, 48) uint8) for one image, converted to gray once;
    the detector may see a shrunk copy, the crops come from the full-resolution image."""
    gray = to_grayscale(image)
    boxes = _detect_gray(gray, config or DetectionConfig())
    faces = np.stack([_crop_clipped(gray, b) for b in boxes]) if boxes else np.zeros((0, FACE_SIZE, FACE_SIZE), np.uint8)
    return boxes, faces
