"""Face detection and the one crop function: box geometry, real photos, pasted FER2013 faces."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from dataclasses import replace

import logging
import sys

from emotion_recognition import detection
from emotion_recognition.detection import (
    FRAMING,
    YUNET_MODEL_NAME,
    Box,
    DetectionConfig,
    DetectorUnavailable,
    Framing,
    describe_detector,
    frame_box,
    resolve_detector,
    shift_box,
    clip_box,
    crop_face,
    detect_faces,
    expand_box,
    get_detector,
    level_weight_to_confidence,
    locate_faces,
    square_box,
)
from emotion_recognition.preprocessing import resize_face, to_grayscale
from testkit import FER_ZIP, SHARED, face_canvas, iou, media, require_shared, rgb

YUNET_FILE = SHARED / "models" / YUNET_MODEL_NAME


# ---------------------------------------------------------------- geometry


def test_square_box_keeps_centre_and_takes_longer_side():
    assert square_box(Box(10, 20, 40, 20, 0.5)) == Box(10, 10, 40, 40, 0.5)
    assert square_box(Box(0, 0, 30, 30)) == Box(0, 0, 30, 30)


def test_expand_box_adds_margin_on_every_edge():
    assert expand_box(Box(100, 100, 50, 50), 0.1) == Box(95, 95, 60, 60)
    assert expand_box(Box(0, 0, 50, 50), 0.2) == Box(-10, -10, 70, 70)
    assert expand_box(Box(5, 5, 10, 10), 0.0) == Box(5, 5, 10, 10)


def test_clip_box_stays_inside_the_image():
    assert clip_box(Box(-10, -5, 50, 50), 100, 80) == Box(0, 0, 40, 45)
    assert clip_box(Box(90, 70, 50, 50), 100, 80) == Box(90, 70, 10, 10)
    assert clip_box(Box(200, 200, 10, 10), 100, 80).w == 0


def test_crop_face_is_48x48_uint8_of_the_box():
    gray = np.random.default_rng(0).integers(0, 256, (200, 300), dtype=np.uint8)
    face = crop_face(gray, Box(50, 40, 96, 96))
    assert face.shape == (48, 48) and face.dtype == np.uint8
    assert np.array_equal(face, resize_face(gray[40:136, 50:146]))
    # colour input gives the same crop as its grayscale
    colour = np.repeat(gray[:, :, None], 3, axis=2)
    assert np.array_equal(crop_face(colour, Box(50, 40, 96, 96)), face)


def test_crop_face_pads_on_the_cut_side_instead_of_stretching():
    gray = np.zeros((100, 100), np.uint8)
    gray[:, :30] = 255  # white stripe at the left edge
    # a box cut by the left edge (clip gives 30x60): padded on the left by repeating the edge
    face = crop_face(gray, Box(0, 20, 30, 60))
    assert face.shape == (48, 48)
    assert face[:, :20].min() == 255  # left part white (stripe + padding), not a stretched stripe
    # cut by the right edge: content at the left, padding at the right
    gray2 = np.zeros((100, 100), np.uint8)
    gray2[:, 70:] = 200
    face2 = crop_face(gray2, Box(70, 20, 30, 60))
    assert face2[:, -5:].min() == 200 and face2.shape == (48, 48)


def test_crop_face_outside_image_raises():
    with pytest.raises(ValueError, match="outside"):
        crop_face(np.zeros((50, 50), np.uint8), Box(60, 60, 10, 10))


def test_confidence_mapping_is_monotonic_in_0_1():
    weights = [-5, 0, 1, 2, 3, 6, 10, 20]
    values = [level_weight_to_confidence(w) for w in weights]
    assert all(0 < v < 1 or v == 1.0 for v in values)
    assert values == sorted(values)
    assert level_weight_to_confidence(2.0) == pytest.approx(0.5)


def test_config_validation_and_unknown_detector():
    with pytest.raises(ValueError, match="scale_factor"):
        DetectionConfig(scale_factor=1.0)
    with pytest.raises(ValueError, match="margin"):
        DetectionConfig(margin=-0.3)
    with pytest.raises(ValueError, match="unknown face detector 'nope'"):
        detect_faces(np.zeros((100, 100), np.uint8), DetectionConfig(detector="nope"))
    assert detection.detector_choices() == ["auto", "haar", "yunet", "yuface"]


def test_detected_boxes_are_framed_filtered_and_sorted(monkeypatch):
    class Fixed:
        def detect(self, gray, config):
            return [Box(10, 20, 30, 20, 0.9), Box(0, 0, 5, 5, 0.1)]

    monkeypatch.setitem(detection._DETECTORS, "fixed-test", Fixed)
    boxes = detect_faces(np.zeros((100, 100, 3), np.uint8), DetectionConfig(detector="fixed-test", margin=0.1, min_confidence=0.5))
    # square 30x30 around the centre (25, 30) -> (10, 15, 30, 30); +3 px margin each side
    assert boxes == [Box(7, 12, 36, 36, 0.9)]  # margin given: the detector's own framing is not used
    assert isinstance(get_detector("fixed-test"), Fixed)


# ---------------------------------------------------------------- real images


def test_no_face_in_a_plain_image():
    assert detect_faces(np.full((240, 320, 3), 127, np.uint8)) == []
    boxes, faces = locate_faces(np.full((240, 320), 127, np.uint8))
    assert boxes == [] and faces.shape == (0, 48, 48)


@pytest.mark.parametrize(
    "name, expected",
    [
        # boxes measured once with the default config, checked by eye on the annotated images
        ("angry_girl.jpg", Box(107, 33, 66, 66)),
        ("fear.jpg", Box(62, 30, 106, 106)),
        ("messi5.jpg", Box(226, 93, 39, 39)),  # small, partly turned face
    ],
)
def test_one_face_in_each_media_photo(name, expected):
    image = rgb(name)
    config = DetectionConfig(detector="haar", min_face_size=24)
    boxes = detect_faces(image, config)
    assert len(boxes) == 1
    box = boxes[0]
    assert iou(box, expected) > 0.7
    assert box.w == box.h and 0 < box.confidence <= 1
    assert box.x >= 0 and box.y >= 0 and box.x + box.w <= image.shape[1] and box.y + box.h <= image.shape[0]
    boxes2, faces = locate_faces(image, config)
    assert boxes2 == boxes and faces.shape == (1, 48, 48) and faces.dtype == np.uint8


def test_min_face_size_filters_small_faces():
    assert detect_faces(rgb("messi5.jpg"), DetectionConfig(min_face_size=60)) == []


def test_megamind_video_has_a_face_in_most_frames():
    capture = cv2.VideoCapture(str(media("Megamind.avi")))
    checked = found = 0
    index = 0
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        if index % 15 == 0:
            checked += 1
            found += bool(detect_faces(bgr[:, :, ::-1]))
        index += 1
    assert checked == 18 and found >= 16


@pytest.mark.parametrize(
    "n_faces, size, face_px, seed",
    [(3, (640, 480), 120, 0), (6, (960, 640), 110, 1), (8, (1000, 700), 110, 2)],
)
def test_pasted_fer_faces_are_all_found_where_they_were_pasted(n_faces, size, face_px, seed):
    require_shared(FER_ZIP)
    image, pasted = face_canvas(FER_ZIP, n_faces, size=size, face_px=face_px, seed=seed)
    boxes = detect_faces(image, DetectionConfig(detector="haar"))  # Haar's framing (the CNN ones: below)
    assert len(boxes) == n_faces
    for p in pasted:
        best = max(iou(p.box, b) for b in boxes)
        assert best > 0.5, (p, boxes)
    # FER2013 framing: the framed box is close to the pasted FER image (the face it came from)
    sides = sorted(b.w / face_px for b in boxes)
    assert 0.75 < sides[len(sides) // 2] < 1.25


def test_pasted_face_crop_resembles_the_original_fer_image():
    require_shared(FER_ZIP)
    image, pasted = face_canvas(FER_ZIP, 3)
    boxes, faces = locate_faces(image, DetectionConfig(detector="haar"))
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    correlations = []
    for p in pasted:
        i = int(np.argmax([iou(p.box, b) for b in boxes]))
        original = resize_face(gray[p.box.y : p.box.y + p.box.h, p.box.x : p.box.x + p.box.w])
        correlations.append(np.corrcoef(original.ravel().astype(float), faces[i].ravel().astype(float))[0, 1])
    # Pixel-level agreement for faces centred in their FER image (0.96-0.99 measured); the first
    # FER image's face sits off-centre in its own crop, so the detector frames it ~15 px away.
    assert sorted(correlations)[1] > 0.9


# ---------------------------------------------------------------- framing per detector


def test_frame_box_squares_shifts_and_grows():
    raw = Box(40, 30, 40, 50, 0.8)  # taller than wide, like a YuNet box
    # square 50x50 around the centre (60, 55) -> (35, 30); shifted down 10% of 50 = 5 px; +5 px margin
    assert frame_box(raw, Framing(margin=0.1, shift_y=0.1), 200, 200) == Box(30, 30, 60, 60, 0.8)
    assert frame_box(raw, Framing(margin=0.0, shift_y=0.0), 200, 200) == Box(35, 30, 50, 50, 0.8)
    assert frame_box(raw, Framing(margin=-0.1, shift_y=-0.2), 200, 200) == Box(40, 25, 40, 40, 0.8)
    assert shift_box(Box(0, 10, 20, 20), -0.5) == Box(0, 0, 20, 20)
    # clipped at the image edge; landmarks travel with the box
    marked = Box(0, 0, 30, 30, 0.5, ((5.0, 5.0),) * 5)
    assert frame_box(marked, Framing(0.2), 100, 100) == Box(0, 0, 36, 36, 0.5, ((5.0, 5.0),) * 5)


def test_framing_comes_from_the_running_detector_unless_configured():
    config = DetectionConfig()
    for name in ("haar", "yunet", "yuface"):
        assert config.framing(name) == FRAMING[name]
    assert DetectionConfig(margin=0.3).framing("yuface") == Framing(0.3, FRAMING["yuface"].shift_y)
    assert DetectionConfig(shift_y=0.2).framing("haar") == Framing(FRAMING["haar"].margin, 0.2)


def test_min_face_size_sets_the_detector_scale_never_above_one():
    cnn = detection.CNN_MIN_FACE
    assert DetectionConfig(min_face_size=2 * cnn).detect_scale() == 0.5  # a face of min_face_size -> CNN_MIN_FACE px
    assert DetectionConfig(min_face_size=cnn).detect_scale() == 1.0
    assert DetectionConfig(min_face_size=cnn // 2).detect_scale() == 1.0  # never enlarged
    assert DetectionConfig().detect_scale() == min(1.0, cnn / DetectionConfig.min_face_size)
    with pytest.raises(ValueError, match="min_face_size"):
        DetectionConfig(min_face_size=0)
    with pytest.raises(ValueError, match="score_threshold"):
        DetectionConfig(score_threshold=2)


class RecordingNetwork:
    """Stands in for yuface's network: records the image it is given and reports one face at a
    fixed place of that image (row: score 0-100, x, y, w, h, 10 landmark coordinates)."""

    def __init__(self, box):
        self.box, self.shapes = box, []

    def __call__(self, bgr):
        self.shapes.append(bgr.shape)
        x, y, w, h = self.box
        return np.array([[90, x, y, w, h, *[x + w // 2, y + h // 2] * 5]])


def test_the_detector_sees_a_shrunk_image_and_boxes_come_back_in_full_resolution(monkeypatch):
    side = detection.CNN_MIN_FACE  # the face the network reports, in the image it saw
    detector = detection.YuFaceDetector.__new__(detection.YuFaceDetector)  # no yuface needed
    detector._detect = network = RecordingNetwork((40, 20, side, side))
    monkeypatch.setitem(detection._INSTANCES, "yuface", detector)
    height, width = 4 * side, 6 * side
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    config = DetectionConfig(detector="yuface", min_face_size=2 * side, margin=0.0, shift_y=0.0)
    boxes, faces = locate_faces(image, config)
    assert network.shapes == [(height // 2, width // 2, 3)]  # half size: min_face_size is twice CNN_MIN_FACE
    centre = (float(2 * (40 + side // 2)), float(2 * (20 + side // 2)))
    assert boxes == [Box(80, 40, 2 * side, 2 * side, 0.9, (centre,) * 5)]  # the network's box x 2
    # the crop is taken from the full-resolution image, not from the one the detector saw
    assert np.array_equal(faces[0], crop_face(image, boxes[0]))
    seen = cv2.cvtColor(cv2.resize(image, (width // 2, height // 2), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
    assert not np.array_equal(faces[0], resize_face(seen[20 : 20 + side, 40 : 40 + side]))
    # a face smaller than min_face_size in the full image is not kept
    network.box = (40, 20, side - 2, side - 2)
    assert detect_faces(image, config) == []
    # min_face_size at most CNN_MIN_FACE: the detector gets the image at full size
    detect_faces(image, replace(config, min_face_size=side))
    assert network.shapes[-1] == (height, width, 3)


def test_a_larger_min_face_size_still_finds_a_large_real_face(yuface_installed):
    canvas = np.full((720, 1280, 3), 120, np.uint8)
    face = cv2.resize(rgb("fear.jpg"), (300, 300))
    canvas[200:500, 500:800] = face
    full = detect_faces(canvas, DetectionConfig(detector="yuface", min_face_size=detection.CNN_MIN_FACE))
    shrunk_boxes, shrunk_faces = locate_faces(canvas, DetectionConfig(detector="yuface", min_face_size=2 * detection.CNN_MIN_FACE))
    assert len(full) == len(shrunk_boxes) == 1 and iou(full[0], shrunk_boxes[0]) > 0.7
    assert np.array_equal(shrunk_faces[0], crop_face(canvas, shrunk_boxes[0]))


# ---------------------------------------------------------------- CNN detectors


def check_cnn_faces(boxes: list[Box], pasted) -> None:
    """Every pasted face found once, framed about like the FER image, with 5 landmarks inside."""
    assert len(boxes) == len(pasted)
    for p in pasted:
        box = max(boxes, key=lambda b: iou(p.box, b))
        # > 0.4, not 0.5: the first canvas face sits off-centre in its own FER image, and YuNet
        # frames the whole head (IoU 0.47 with the pasted square); the others are 0.6-0.9
        assert iou(p.box, box) > 0.4, (p, boxes)
        assert 0.3 < box.confidence <= 1 and len(box.landmarks) == 5
        (rx, ry), (lx, ly), (nx, ny), (mrx, mry), (mlx, mly) = box.landmarks
        assert rx < nx < lx and mrx < mlx and max(ry, ly) < ny < min(mry, mly)  # upright face layout
        for x, y in box.landmarks:
            assert p.box.x <= x <= p.box.x + p.box.w and p.box.y <= y <= p.box.y + p.box.h


@pytest.fixture
def yuface_installed():
    pytest.importorskip("yuface", reason="yuface is not installed (wheels: CPython 3.11, Linux x86_64 / Windows)")


def yunet_config(**options) -> DetectionConfig:
    require_shared(YUNET_FILE)
    return DetectionConfig(detector="yunet", yunet_model=str(YUNET_FILE), **options)


@pytest.mark.parametrize("n_faces, size, face_px, seed", [(3, (640, 480), 120, 0), (6, (960, 640), 110, 1)])
def test_yuface_finds_pasted_faces_with_landmarks(yuface_installed, n_faces, size, face_px, seed):
    require_shared(FER_ZIP)
    image, pasted = face_canvas(FER_ZIP, n_faces, size=size, face_px=face_px, seed=seed)
    check_cnn_faces(detect_faces(image, DetectionConfig(detector="yuface")), pasted)


@pytest.mark.parametrize("n_faces, size, face_px, seed", [(3, (640, 480), 120, 0), (6, (960, 640), 110, 1)])
def test_yunet_finds_pasted_faces_with_landmarks(n_faces, size, face_px, seed):
    require_shared(FER_ZIP)
    image, pasted = face_canvas(FER_ZIP, n_faces, size=size, face_px=face_px, seed=seed)
    check_cnn_faces(detect_faces(image, yunet_config()), pasted)


@pytest.mark.parametrize("n_faces, size, face_px, seed", [(3, (640, 480), 120, 0), (6, (1280, 720), 110, 1)])
def test_yunet_on_openvino_finds_what_opencv_finds(n_faces, size, face_px, seed):
    """The yunet detector's two runtimes, one network: the same faces, boxes within 1 px,
    landmarks within 1 px, confidences within 0.01 (sizes that are and are not multiples of 32)."""
    require_shared(FER_ZIP)
    image, _ = face_canvas(FER_ZIP, n_faces, size=size, face_px=face_px, seed=seed)
    gray, config = to_grayscale(image), yunet_config()
    ours = sorted(detection.YuNetOpenVINODetector().detect(gray, config), key=lambda b: (b.x, b.y))
    reference = sorted(detection.YuNetOpenCVDetector().detect(gray, config), key=lambda b: (b.x, b.y))
    assert len(ours) == len(reference) == n_faces
    for a, b in zip(ours, reference):
        assert max(abs(a.x - b.x), abs(a.y - b.y), abs(a.w - b.w), abs(a.h - b.h)) <= 1
        assert np.abs(np.subtract(a.landmarks, b.landmarks)).max() < 1 and abs(a.confidence - b.confidence) < 0.01


@pytest.mark.parametrize("shape", [(480, 640), (1, 1), (7, 300), (33, 33)])
def test_yunet_on_openvino_finds_nothing_in_blank_or_tiny_images(shape):
    """No face passes the score threshold: an empty answer, not an error (sizes under 32 px are padded)."""
    assert detection.YuNetOpenVINODetector().detect(np.zeros(shape, np.uint8), yunet_config()) == []


def test_yunet_runs_on_opencv_without_openvino(monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now raises ImportError
    assert isinstance(detection._yunet_detector(), detection.YuNetOpenCVDetector)


def test_yunet_and_yuface_agree_on_a_real_photo(yuface_installed):
    image = rgb("messi5.jpg")
    # the same network: the same face, the same landmarks (same framing here: their calibrated
    # framings differ within noise)
    [a] = detect_faces(image, yunet_config(margin=0.0, shift_y=0.0))
    [b] = detect_faces(image, DetectionConfig(detector="yuface", margin=0.0, shift_y=0.0))
    assert iou(a, b) > 0.8 and iou(a, Box(226, 93, 39, 39)) > 0.5  # the hand-checked face
    assert np.abs(np.subtract(a.landmarks, b.landmarks)).max() < 2.5


def test_yunet_model_file_is_checked_with_a_clear_error(tmp_path):
    image = np.zeros((100, 100), np.uint8)
    with pytest.raises(DetectorUnavailable, match="EMOTION_YUNET_MODEL.*|download"):
        detect_faces(image, DetectionConfig(detector="yunet", yunet_model=""))
    with pytest.raises(DetectorUnavailable, match="does not exist"):
        detect_faces(image, DetectionConfig(detector="yunet", yunet_model=str(tmp_path / "nope.onnx")))
    wrong = tmp_path / "other.onnx"
    wrong.write_bytes(b"not the 2023mar release")
    with pytest.raises(DetectorUnavailable, match="sha256"):
        detect_faces(image, DetectionConfig(detector="yunet", yunet_model=str(wrong)))
    with pytest.raises(DetectorUnavailable, match="sha256"):  # auto does not hide a wrong file
        detect_faces(image, DetectionConfig(yunet_model=str(wrong)))


def test_a_yunet_file_replaced_after_its_check_is_checked_again(tmp_path):
    """Checked once (not hashed again on every frame), but a file changed since is read again."""
    require_shared(YUNET_FILE)
    copy = tmp_path / "yunet.onnx"
    copy.write_bytes(YUNET_FILE.read_bytes())
    image, config = np.zeros((100, 100), np.uint8), DetectionConfig(detector="yunet", yunet_model=str(copy))
    assert detect_faces(image, config) == [] and detection.check_yunet_model(copy) == copy
    copy.write_bytes(b"replaced")
    with pytest.raises(DetectorUnavailable, match="sha256"):
        detection.check_yunet_model(copy)


def test_auto_picks_yunet_when_its_file_is_configured(monkeypatch):
    require_shared(YUNET_FILE)
    monkeypatch.setenv("EMOTION_YUNET_MODEL", str(YUNET_FILE))
    config = DetectionConfig()  # the path comes from the environment
    assert resolve_detector(config) == "yunet" and describe_detector(config)["model_file"] == str(YUNET_FILE)
    assert describe_detector(config)["runtime"] == "openvino"


def test_auto_falls_back_to_haar_with_a_warning_when_yuface_is_missing(monkeypatch, caplog):
    import builtins

    real_import = builtins.__import__

    def no_yuface(name, *args, **kwargs):
        if name == "yuface" or name.startswith("yuface."):
            raise ModuleNotFoundError("No module named 'yuface'")
        return real_import(name, *args, **kwargs)

    monkeypatch.delenv("EMOTION_YUNET_MODEL", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_yuface)
    monkeypatch.setattr(detection, "_INSTANCES", {})  # forget the loaded detectors and auto's choice
    monkeypatch.setattr(detection, "_UNAVAILABLE", set())
    try:
        with caplog.at_level(logging.WARNING, logger="emotion_recognition.detection"):
            image = rgb("fear.jpg")
            boxes = detect_faces(image)  # the default config: auto
            assert resolve_detector(DetectionConfig()) == "haar"
        assert describe_detector(DetectionConfig())["detector"] == "haar"
        assert len(boxes) == 1 and boxes[0].landmarks is None
        assert boxes == detect_faces(image, DetectionConfig(detector="haar"))
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "Haar" in warnings[0].getMessage() and "yuface" in warnings[0].getMessage()
        with pytest.raises(DetectorUnavailable, match="pip install yuface"):
            detect_faces(image, DetectionConfig(detector="yuface"))  # asked for by name: an error
    finally:
        monkeypatch.undo()


# ---------------------------------------------------------------- alignment (synthetic face)
# Alignment is measured by bench/detection_benchmark.py (not in the product: it did not win).

from bench import detection_benchmark  # noqa: E402 (the repository root is on pytest's pythonpath)


def synthetic_face(angle: float) -> tuple[np.ndarray, Box]:
    """A grey 200x200 image with a light disc (face) holding two dark eyes 60 px apart, the whole
    face turned by ``angle`` degrees (counter-clockwise as displayed) about (100, 100)."""
    image = np.full((200, 200), 60, np.uint8)
    cv2.circle(image, (100, 100), 70, 200, -1)
    eyes = np.array([[70.0, 80.0], [130.0, 80.0]])  # the subject's right eye on the image's left
    for x, y in eyes:
        cv2.circle(image, (int(x), int(y)), 8, 0, -1)
    matrix = cv2.getRotationMatrix2D((100, 100), angle, 1.0)
    image = cv2.warpAffine(image, matrix, (200, 200), borderValue=60)
    moved = np.hstack([eyes, np.ones((2, 1))]) @ matrix.T
    points = (tuple(moved[0]), tuple(moved[1]), (100.0, 110.0), (80.0, 140.0), (120.0, 140.0))
    return image, Box(30, 30, 140, 140, 0.9, points)


def eye_rows(face48: np.ndarray) -> tuple[float, float]:
    """Row of the darkest blob in the left and in the right half of the upper face."""
    upper = face48[:24].astype(float)
    rows = []
    for half in (upper[:, :24], upper[:, 24:]):
        weights = (half < 60).astype(float)
        rows.append(float((weights.sum(axis=1) * np.arange(24)).sum() / weights.sum()))
    return rows[0], rows[1]


@pytest.mark.parametrize("angle", [-25, -10, 10, 25])
def test_aligned_crop_levels_the_eyes(angle):
    image, box = synthetic_face(angle)
    assert detection_benchmark.eye_angle(box.landmarks) == pytest.approx(-angle, abs=0.01)
    left, right = eye_rows(crop_face(image, box))
    assert abs(left - right) > 3  # the plain crop keeps the tilt
    aligned = detection_benchmark.aligned_crop(image, box)
    left, right = eye_rows(aligned)
    assert aligned.shape == (48, 48) and abs(left - right) < 0.6
    upright, upright_box = synthetic_face(0)
    assert np.abs(aligned.astype(int) - crop_face(upright, upright_box).astype(int)).mean() < 6


def test_aligned_crop_without_landmarks_is_the_plain_crop():
    image, box = synthetic_face(20)
    plain = Box(box.x, box.y, box.w, box.h)
    assert np.array_equal(detection_benchmark.aligned_crop(image, plain), crop_face(image, plain))


def test_yuface_gives_the_same_faces_from_concurrent_threads(yuface_installed):
    """The service detects in a thread pool: calls from several threads must not mix results."""
    from concurrent.futures import ThreadPoolExecutor

    images = [rgb(name) for name in ("messi5.jpg", "fear.jpg", "angry_girl.jpg")]
    config = DetectionConfig(detector="yuface")
    alone = [detect_faces(image, config) for image in images]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda image: detect_faces(image, config), images * 4))
    assert together == alone * 4 and all(len(boxes) == 1 for boxes in alone)
