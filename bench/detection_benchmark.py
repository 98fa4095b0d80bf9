"""Face detection benchmark: group photos of FER2013 PublicTest faces with known boxes and labels.

Usage (from the repository root, PYTHONPATH=.):

    python -m bench.detection_benchmark [--photos 200] [--seed 0] [--fer ../shared/data/fer2013.zip]
        [--yunet-model ../shared/models/face_detection_yunet_2023mar.onnx] [--out bench/results/detection.json]

Photos (deterministic for a seed): 640x480 or 1280x720, 2-8 FER2013 PublicTest faces each
(40-250 px, log-uniform, no overlap), upscaled from 48x48 and pasted on a background: a synthetic
texture, a noisy gradient, or a real photo with its faces masked (matplotlib's grace_hopper.jpg,
../shared/media messi5.jpg and Megamind.avi frames). One face in three is rotated by 10-25 degrees
either way. Each photo is JPEG-compressed (quality 60-90). Ground truth: the square each FER
image was pasted into (its side, its centre for rotated faces) and the FER label.

Two photo sets with different seeds: ``calibration`` (seed + 1000) chooses each CNN detector's
framing (margin, vertical shift) by end-to-end accuracy; ``evaluation`` (seed) gives every figure.

Per detector (at IoU >= 0.3 and >= 0.5, greedy one-to-one matching on the framed boxes):
recall, precision; ms per 640x480 and per 1280x720 photo (detect_faces alone); end-to-end
emotion accuracy = faces found with the right label / all faces, with the bundled model and the
service's default test-time augmentation (flip); and the classifier's accuracy on the same faces
cropped from their true boxes. Alignment (eyes levelled before the crop) is measured on upright
and rotated faces. The detector levers (input scale, score threshold, OpenCV threads) are swept
for speed and recall. Also: found faces on ../shared/media (messi5.jpg against a hand box,
Megamind.avi every 15th frame).

``--min-face-sweep`` (a few minutes): the resolution the CNN detector needs, and the default of
the smallest face to find. Part 1 runs each detector on the photos shrunk by fixed factors and
reports recall by face size in the image the detector saw, next to the recall of the same faces
at full resolution (where it plateaus gives ``CNN_MIN_FACE``). Part 2 runs the product path
(``locate_faces`` + the bundled model, flip) for several ``min_face_size`` values: recall by
face size, end-to-end accuracy and ms per photo (median), to choose the default.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import dataclass, field, replace
import sys
from pathlib import Path

import cv2
import numpy as np

from emotion_recognition.detection import (
    CNN_MIN_FACE,
    FRAMING,
    Box,
    DetectionConfig,
    DetectorUnavailable,
    Framing,
    Landmarks,
    crop_face,
    detect_faces,
    frame_box,
    get_detector,
    locate_faces,
    resolve_detector,
)
from emotion_recognition.inference import EmotionRecognizer
from emotion_recognition.labels import EMOTIONS
from emotion_recognition.model_files import BUNDLED_MODEL
from emotion_recognition.preprocessing import resize_face, to_grayscale
from emotion_recognition.tta import from_preset

ROOT = Path(__file__).resolve().parents[1]
from tests.testkit import iou, read_zip_faces  # the test helpers: run as python -m bench.NAME from the root
SHARED = ROOT.parent / "shared"
SIZES = [(640, 480), (1280, 720)]
MESSI_FACE = Box(226, 93, 39, 39)  # hand-checked box of the one face in messi5.jpg


@dataclass
class Face:
    box: Box  # ground truth: the square the FER image was pasted into
    label: str
    angle: float  # degrees the face was rotated (0: upright)
    fer_image: np.ndarray = field(repr=False)


@dataclass
class Photo:
    image: np.ndarray  # RGB, after JPEG
    faces: list[Face]
    background: str


# ---------------------------------------------------------------- alignment (measured, not in the product)
# Rotating each face so its eyes are level before the crop did not raise end-to-end accuracy
# beyond noise (bench/README.md), so it lives here, where it is measured, and not in detection.py.


def eye_angle(landmarks: Landmarks) -> float:
    """Degrees the eye line is turned from horizontal (positive: the subject's left eye, on the
    image's right, is lower)."""
    (rx, ry), (lx, ly) = landmarks[0], landmarks[1]
    return float(np.degrees(np.arctan2(ly - ry, lx - rx)))


def aligned_crop(gray_image: np.ndarray, box: Box) -> np.ndarray:
    """Like ``crop_face``, but the image is first rotated about the box centre so the eyes are
    level (``box.landmarks``); a box without landmarks gets the plain crop."""
    if box.landmarks is None:
        return crop_face(gray_image, box)
    gray = to_grayscale(gray_image)
    side = max(box.w, box.h)
    centre = (box.x + box.w / 2.0, box.y + box.h / 2.0)
    matrix = cv2.getRotationMatrix2D(centre, eye_angle(box.landmarks), 1.0)
    matrix[0, 2] += side / 2.0 - centre[0]
    matrix[1, 2] += side / 2.0 - centre[1]
    face = cv2.warpAffine(gray, matrix, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return np.ascontiguousarray(resize_face(face), dtype=np.uint8)


# ---------------------------------------------------------------- backgrounds


def _mask_faces(rgb: np.ndarray) -> np.ndarray:
    """Cover the faces of a real photo (found by Haar and yuface at a low threshold, boxes grown
    by 40%) with the photo's median colour, so they are neither ground truth nor false alarms."""
    out = rgb.copy()
    boxes = detect_faces(rgb, DetectionConfig(detector="haar", min_neighbors=2, min_face_size=16, margin=0.2))
    try:
        boxes += detect_faces(rgb, DetectionConfig(detector="yuface", score_threshold=0.2, min_face_size=10, margin=0.2))
    except DetectorUnavailable:
        pass
    fill = np.median(rgb.reshape(-1, 3), axis=0).astype(np.uint8)
    for b in boxes:
        out[max(b.y, 0) : b.y + b.h, max(b.x, 0) : b.x + b.w] = fill
    return out


def real_backgrounds() -> dict[str, np.ndarray]:
    found = {}
    import matplotlib

    hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    candidates = {"grace_hopper": hopper, "messi5": SHARED / "media" / "messi5.jpg"}
    for name, path in candidates.items():
        if path.exists():
            found[name] = _mask_faces(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB))
    video = SHARED / "media" / "Megamind.avi"
    if video.exists():
        capture = cv2.VideoCapture(str(video))
        for index in (40, 160):
            capture.set(cv2.CAP_PROP_POS_FRAMES, index)
            ok, bgr = capture.read()
            if ok:
                found[f"megamind_{index}"] = _mask_faces(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return found


def background(kind: str, size: tuple[int, int], rng: np.random.Generator, reals: dict[str, np.ndarray]) -> np.ndarray:
    width, height = size
    if kind == "texture":
        yy, xx = np.mgrid[0:height, 0:width]
        base = 90 + 60 * np.sin(xx / rng.uniform(20, 60)) * np.cos(yy / rng.uniform(20, 60)) + rng.normal(0, 6, (height, width))
        tint = rng.uniform(0.8, 1.2, 3)
        return np.clip(base[:, :, None] * tint, 0, 255).astype(np.uint8)
    if kind == "gradient":
        ramp = np.linspace(rng.uniform(30, 120), rng.uniform(130, 230), width)[None, :, None]
        noise = rng.normal(0, 12, (height, width, 3))
        return np.clip(ramp + noise, 0, 255).astype(np.uint8).repeat(1, axis=0)
    real = reals[kind]
    return cv2.resize(real, size, interpolation=cv2.INTER_LINEAR if real.shape[1] < width else cv2.INTER_AREA)


# ---------------------------------------------------------------- photos


def paste(canvas: np.ndarray, face48: np.ndarray, box: Box, angle: float) -> None:
    side = box.w
    big = cv2.resize(face48, (side, side), interpolation=cv2.INTER_CUBIC)
    if angle:
        matrix = cv2.getRotationMatrix2D((side / 2, side / 2), angle, 1.0)
        big = cv2.warpAffine(big, matrix, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        mask = cv2.warpAffine(np.ones((side, side), np.uint8), matrix, (side, side), flags=cv2.INTER_NEAREST)
    else:
        mask = np.ones((side, side), np.uint8)
    region = canvas[box.y : box.y + side, box.x : box.x + side]
    region[mask > 0] = big[mask > 0][:, None]


def make_photos(fer: list[tuple[str, str, np.ndarray]], count: int, seed: int, reals: dict[str, np.ndarray]) -> list[Photo]:
    rng = np.random.default_rng(seed)
    kinds = ["texture", "gradient", *sorted(reals)]
    order = rng.permutation(len(fer))
    next_face = 0
    photos = []
    for index in range(count):
        size = SIZES[index % 2]
        width, height = size
        kind = kinds[index % len(kinds)]
        canvas = background(kind, size, rng, reals).copy()
        faces: list[Face] = []
        wanted = int(rng.integers(2, 9))
        for _ in range(wanted * 30):  # rejection sampling of non-overlapping squares
            if len(faces) == wanted:
                break
            side = int(round(np.exp(rng.uniform(np.log(40), np.log(min(250, height // 2))))))
            x, y = int(rng.integers(0, width - side)), int(rng.integers(0, height - side))
            candidate = Box(x, y, side, side)
            if any(iou(candidate, f.box) > 0 or _overlap(candidate, f.box) for f in faces):
                continue
            _, label, face48 = fer[order[next_face % len(order)]]
            next_face += 1
            angle = float(rng.choice([-1, 1]) * rng.uniform(10, 25)) if rng.random() < 1 / 3 else 0.0
            paste(canvas, face48, candidate, angle)
            faces.append(Face(candidate, label, angle, face48))
        quality = int(rng.integers(60, 91))
        ok, jpeg = cv2.imencode(".jpg", canvas[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
        image = cv2.imdecode(jpeg, cv2.IMREAD_COLOR)[:, :, ::-1].copy()
        photos.append(Photo(image, faces, kind))
    return photos


def _overlap(a: Box, b: Box, gap: int = 4) -> bool:
    return not (a.x + a.w + gap <= b.x or b.x + b.w + gap <= a.x or a.y + a.h + gap <= b.y or b.y + b.h + gap <= a.y)


# ---------------------------------------------------------------- matching and scoring


def match(truth: list[Box], found: list[Box], threshold: float) -> list[tuple[int, int]]:
    """Greedy one-to-one pairs (truth index, found index) by decreasing IoU >= threshold."""
    pairs = sorted(((iou(t, f), i, j) for i, t in enumerate(truth) for j, f in enumerate(found)), reverse=True)
    used_t, used_f, out = set(), set(), []
    for value, i, j in pairs:
        if value < threshold:
            break
        if i not in used_t and j not in used_f:
            used_t.add(i), used_f.add(j), out.append((i, j))
    return out


def raw_detections(photos: list[Photo], config: DetectionConfig) -> list[list[Box]]:
    """Unframed detector boxes per photo (framing is applied afterwards, per candidate)."""
    name = resolve_detector(config)
    detector = get_detector(name)
    out = []
    for photo in photos:
        gray = cv2.cvtColor(photo.image, cv2.COLOR_RGB2GRAY)
        out.append([b for b in detector.detect(gray, config) if b.confidence >= config.min_confidence])
    return out


def framed(photos: list[Photo], raw: list[list[Box]], framing: Framing) -> list[list[Box]]:
    out = []
    for photo, boxes in zip(photos, raw):
        height, width = photo.image.shape[:2]
        out.append([b for b in (frame_box(r, framing, width, height) for r in boxes) if b.w > 0 and b.h > 0])
    return out


def detection_scores(photos: list[Photo], boxes: list[list[Box]]) -> dict:
    result = {}
    n_truth = sum(len(p.faces) for p in photos)
    n_found = sum(len(b) for b in boxes)
    for threshold in (0.3, 0.5):
        hits = sum(len(match([f.box for f in p.faces], b, threshold)) for p, b in zip(photos, boxes))
        result[f"recall@{threshold}"] = hits / n_truth
        result[f"precision@{threshold}"] = hits / n_found if n_found else 0.0
    # recall@0.3 by face size: small faces (upscaled 48x48 FER images) are the hard part
    for low, high in ((40, 80), (80, 251)):
        found = total = 0
        for p, b in zip(photos, boxes):
            matched = {i for i, _ in match([f.box for f in p.faces], b, 0.3)}
            for i, f in enumerate(p.faces):
                if low <= f.box.w < high:
                    total += 1
                    found += i in matched
        result[f"recall@0.3_{low}-{high - 1}px"] = found / total if total else float("nan")
    return result


class Classifier:
    def __init__(self, model_path: Path):
        self.recognizer = EmotionRecognizer.from_file(model_path, tta=from_preset("flip"))  # the service's default

    def labels(self, faces: list[np.ndarray]) -> list[str]:
        if not faces:
            return []
        probabilities = self.recognizer.classify_faces(np.stack(faces))
        return [EMOTIONS[int(i)] for i in np.argmax(probabilities, axis=1)]


def end_to_end(photos: list[Photo], boxes: list[list[Box]], classifier: Classifier, align: bool = False) -> dict:
    """Right label / all faces, overall and for upright and rotated faces (IoU >= 0.3 matches)."""
    crops, keys = [], []
    for pi, (photo, found) in enumerate(zip(photos, boxes)):
        gray = cv2.cvtColor(photo.image, cv2.COLOR_RGB2GRAY)
        for ti, fi in match([f.box for f in photo.faces], found, 0.3):
            crops.append(aligned_crop(gray, found[fi]) if align else crop_face(gray, found[fi]))
            keys.append((pi, ti))
    predicted = dict(zip(keys, classifier.labels(crops)))
    return _accuracies(photos, predicted)


def _accuracies(photos: list[Photo], predicted: dict) -> dict:
    groups = {"all": [0, 0], "upright": [0, 0], "rotated": [0, 0]}
    for pi, photo in enumerate(photos):
        for ti, face in enumerate(photo.faces):
            right = predicted.get((pi, ti)) == face.label
            for group in ("all", "rotated" if face.angle else "upright"):
                groups[group][0] += right
                groups[group][1] += 1
    return {f"accuracy_{k}": (r / n if n else float("nan")) for k, (r, n) in groups.items()}


def true_box_accuracy(photos: list[Photo], classifier: Classifier) -> dict:
    crops, keys = [], []
    for pi, photo in enumerate(photos):
        gray = cv2.cvtColor(photo.image, cv2.COLOR_RGB2GRAY)
        for ti, face in enumerate(photo.faces):
            crops.append(crop_face(gray, face.box))
            keys.append((pi, ti))
    return _accuracies(photos, dict(zip(keys, classifier.labels(crops))))


def time_detection(photos: list[Photo], config: DetectionConfig, count: int = 40) -> dict:
    """Median ms of detect_faces per photo, per photo size (after a warm-up call). The median,
    not the mean: the 2 cores are shared, and a busy neighbour inflates single calls."""
    result = {}
    for width, height in SIZES:
        images = [p.image for p in photos if p.image.shape[1] == width][:count]
        detect_faces(images[0], config)
        times = []
        for image in images:
            start = time.perf_counter()
            detect_faces(image, config)
            times.append(time.perf_counter() - start)
        result[f"ms_{width}x{height}"] = 1000 * float(np.median(times))
    return result


# ---------------------------------------------------------------- real media


def real_media(config: DetectionConfig) -> dict:
    out = {}
    messi = SHARED / "media" / "messi5.jpg"
    if messi.exists():
        boxes = detect_faces(cv2.cvtColor(cv2.imread(str(messi)), cv2.COLOR_BGR2RGB), config)
        out["messi5_faces"] = len(boxes)
        out["messi5_best_iou"] = round(max((iou(MESSI_FACE, b) for b in boxes), default=0.0), 2)
    video = SHARED / "media" / "Megamind.avi"
    if video.exists():
        capture = cv2.VideoCapture(str(video))
        index = frames = with_face = detections = 0
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            if index % 15 == 0:
                found = detect_faces(bgr[:, :, ::-1], config)
                frames += 1
                with_face += bool(found)
                detections += len(found)
            index += 1
        out["megamind_frames_with_face"] = f"{with_face}/{frames}"
        out["megamind_detections"] = detections  # one person on screen: more than frames = false alarms
    return out


# ---------------------------------------------------------------- main


SCORES = (0.3, 0.4, 0.5, 0.6)
MARGINS = (-0.1, -0.05, 0.0, 0.05, 0.1)
SHIFTS = (-0.1, -0.05, 0.0, 0.05, 0.1)


def calibrate_framing(photos: list[Photo], config: DetectionConfig, classifier: Classifier) -> tuple[Framing, dict]:
    raw = raw_detections(photos, config)
    scores = {}
    for margin in MARGINS:
        for shift in SHIFTS:
            framing = Framing(margin, shift)
            scores[(margin, shift)] = end_to_end(photos, framed(photos, raw, framing), classifier)["accuracy_all"]
    best = max(scores, key=scores.get)
    return Framing(*best), {f"{m:+.2f}/{s:+.2f}": round(v, 4) for (m, s), v in scores.items()}


def markdown_tables(report: dict) -> str:
    """The figures of a results file as the markdown tables of bench/README.md."""
    pct = lambda v: f"{100 * v:.1f}%"  # noqa: E731
    truth = report["true_boxes"]
    lines = [f"{report['photos']} photos, {report['faces']} faces; classifier on the true boxes: "
             f"{pct(truth['accuracy_all'])} (upright {pct(truth['accuracy_upright'])}, rotated {pct(truth['accuracy_rotated'])})", "",
             "| detector | recall / precision @0.3 | @0.5 | recall 40-79 px / 80-250 px | ms 640x480 | ms 1280x720 "
             "| end-to-end (upright / rotated) | ÷ true-box accuracy | aligned (upright / rotated) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, row in report["detectors"].items():
        e2e, aligned = row["end_to_end"], row.get("end_to_end_aligned")
        lines.append(
            f"| {name} | {pct(row['recall@0.3'])} / {pct(row['precision@0.3'])} | {pct(row['recall@0.5'])} / {pct(row['precision@0.5'])} "
            f"| {pct(row['recall@0.3_40-79px'])} / {pct(row['recall@0.3_80-250px'])} | {row['ms_640x480']} | {row['ms_1280x720']} "
            f"| {pct(e2e['accuracy_all'])} ({pct(e2e['accuracy_upright'])} / {pct(e2e['accuracy_rotated'])}) "
            f"| {e2e['accuracy_all'] / truth['accuracy_all']:.2f} "
            + (f"| {pct(aligned['accuracy_all'])} ({pct(aligned['accuracy_upright'])} / {pct(aligned['accuracy_rotated'])}) |" if aligned else "| - |"))
    lines += ["", "| detector | framing margin / shift_y (calibration accuracy: best, 0/0, worst) | messi5.jpg faces (IoU with hand box) | Megamind frames with a face (detections) |",
              "|---|---|---|---|"]
    for name, row in report["detectors"].items():
        grid, media = row.get("framing_grid_calibration_accuracy") or {}, row.get("real_media", {})
        calib = f" ({pct(max(grid.values()))}, {pct(grid['+0.00/+0.00'])}, {pct(min(grid.values()))})" if grid else " (not calibrated)"
        lines.append(f"| {name} | {row['framing']['margin']} / {row['framing']['shift_y']}{calib} | "
                     f"{media.get('messi5_faces')} ({media.get('messi5_best_iou')}) | {media.get('megamind_frames_with_face')} ({media.get('megamind_detections')}) |")
    lines += ["", "| lever | recall / precision @0.3 | recall 40-79 / 80-250 px | ms 640x480 | ms 1280x720 |", "|---|---|---|---|---|"]
    for name, row in report["levers"].items():
        if "recall@0.3" in row:
            lines.append(f"| {name} | {pct(row['recall@0.3'])} / {pct(row['precision@0.3'])} | "
                         f"{pct(row['recall@0.3_40-79px'])} / {pct(row['recall@0.3_80-250px'])} | {row['ms_640x480']} | {row['ms_1280x720']} |")
        else:
            lines.append(f"| {name} | | | {row['ms_640x480']} | {row['ms_1280x720']} |")
    return "\n".join(lines)


def speed_only(photos: list[Photo], detectors: dict[str, DetectionConfig]) -> None:
    print("load average before:", open("/proc/loadavg").read().split()[:3])
    for name, config in detectors.items():
        for threads in (1, 2):
            cv2.setNumThreads(threads)  # OpenCV's pool (Haar, FaceDetectorYN); yuface ignores it
            times = {k: round(v, 1) for k, v in time_detection(photos, config, count=40).items()}
            print(f"{name} cv2.setNumThreads({threads}): {times}", flush=True)
    print("load average after:", open("/proc/loadavg").read().split()[:3])


SIZE_BANDS = ((40, 60), (60, 80), (80, 120), (120, 251))  # original px, [low, high)
SEEN_BANDS = ((8, 16), (16, 24), (24, 32), (32, 40), (40, 56), (56, 80), (80, 251))  # px the detector saw


def found_faces(photos: list[Photo], boxes: list[list[Box]]) -> list[list[bool]]:
    """Per photo, per true face: matched at IoU >= 0.3."""
    out = []
    for photo, found in zip(photos, boxes):
        matched = {i for i, _ in match([f.box for f in photo.faces], found, 0.3)}
        out.append([i in matched for i in range(len(photo.faces))])
    return out


def recall_by_band(photos: list[Photo], hits: list[list[bool]], bands, scale: float = 1.0) -> dict:
    """Recall per band of face side x ``scale`` (scale < 1: the side the detector saw)."""
    out = {}
    for low, high in bands:
        flags = [hit for p, row in zip(photos, hits) for f, hit in zip(p.faces, row) if low <= f.box.w * scale < high]
        out[f"{low}-{high - 1}px"] = [round(sum(flags) / len(flags), 4) if flags else None, len(flags)]
    return out


def detection_size_sweep(photos: list[Photo], config: DetectionConfig, scales=(1.0, 0.75, 0.5, 0.375, 0.25)) -> dict:
    """Part 1 of --min-face-sweep: detect on the photos shrunk by each factor (the detector is
    given the shrunk image itself, min_face_size 1), boxes mapped back; recall of each face at that
    scale, by the side it had in the shrunk image, against the same faces at full resolution."""
    name = resolve_detector(config)
    detector, framing = get_detector(name), config.framing(name)
    config = replace(config, min_face_size=1)
    hits = {}
    for scale in scales:
        boxes = []
        for photo in photos:
            gray = cv2.cvtColor(photo.image, cv2.COLOR_RGB2GRAY)
            small = gray if scale == 1.0 else cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            raw = [Box(round(b.x / scale), round(b.y / scale), round(b.w / scale), round(b.h / scale), b.confidence)
                   for b in detector.detect(small, config)]
            boxes.append(raw)
        hits[scale] = found_faces(photos, framed(photos, boxes, framing))
    out = {}
    for scale in scales:
        row = {}
        for low, high in SEEN_BANDS:
            pairs = [(hit, full) for p, r, rf in zip(photos, hits[scale], hits[1.0])
                     for f, hit, full in zip(p.faces, r, rf) if low <= f.box.w * scale < high]
            if pairs:
                row[f"{low}-{high - 1}px"] = {"recall": round(sum(h for h, _ in pairs) / len(pairs), 4),
                                              "same_faces_full_res": round(sum(f for _, f in pairs) / len(pairs), 4),
                                              "faces": len(pairs)}
        out[f"scale={scale}"] = row
        print(name, f"scale={scale}", row, flush=True)
    return out


MIN_FACE_GRID = ((24, None), (40, None), (48, None), (64, None), (96, None), (128, None), (64, 48), (64, 32))  # (min_face_size, CNN_MIN_FACE; None: the product's)


def min_face_sweep(photos: list[Photo], config: DetectionConfig, classifier: Classifier, grid=MIN_FACE_GRID) -> dict:
    """Part 2 of --min-face-sweep: the product path (``locate_faces``) for each (min_face_size,
    CNN_MIN_FACE) pair; the first pair (full resolution, today's default) is the baseline. Each
    photo goes through every pair in turn, so the per-photo time ratios share the load."""
    import emotion_recognition.detection as detection

    default = detection.CNN_MIN_FACE
    located = {pair: [] for pair in grid}
    seconds = {pair: [] for pair in grid}
    for pair in grid:  # warm-up at each resolution
        detection.CNN_MIN_FACE = pair[1] or default
        locate_faces(photos[0].image, replace(config, min_face_size=pair[0]))
    for photo in photos:
        for size, cnn_min in grid:
            detection.CNN_MIN_FACE = cnn_min or default
            start = time.perf_counter()
            located[(size, cnn_min)].append(locate_faces(photo.image, replace(config, min_face_size=size)))
            seconds[(size, cnn_min)].append(time.perf_counter() - start)
    detection.CNN_MIN_FACE = default
    out = {}
    for pair in grid:
        boxes = [b for b, _ in located[pair]]
        crops, keys = [], []
        for pi, (photo, (found, faces)) in enumerate(zip(photos, located[pair])):
            for ti, fi in match([f.box for f in photo.faces], found, 0.3):
                crops.append(faces[fi])
                keys.append((pi, ti))
        e2e = _accuracies(photos, dict(zip(keys, classifier.labels(crops))))
        scores = detection_scores(photos, boxes)
        scale = min(1.0, (pair[1] or default) / pair[0])
        ratios = np.array(seconds[pair]) / np.array(seconds[grid[0]])
        by_size = {f"ms_{w}x{h}": round(1000 * float(np.median([t for p, t in zip(photos, seconds[pair]) if p.image.shape[1] == w])), 1)
                   for w, h in SIZES}
        row = {"min_face_size": pair[0], "cnn_min_face": pair[1] or default, "detect_scale": round(scale, 3),
               "recall@0.3": round(scores["recall@0.3"], 4), "precision@0.3": round(scores["precision@0.3"], 4),
               "recall_by_size": recall_by_band(photos, found_faces(photos, boxes), SIZE_BANDS),
               "end_to_end": round(e2e["accuracy_all"], 4), **by_size,
               "time_ratio_to_baseline": round(float(np.median(ratios)), 3)}
        out[f"{pair[0]}/{pair[1] or default}"] = row
        print(row, flush=True)
    return out


def sweep_tables(report: dict) -> str:
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    lines = [f"{report['photos']} photos, {report['faces']} faces. Recall @IoU 0.3 by the face side the detector saw "
             "(in brackets: the same faces at full resolution; faces)", ""]
    for name, rows in report["detector_scale"].items():
        bands = [f"{low}-{high - 1}px" for low, high in SEEN_BANDS]
        lines += [f"| {name} scale | " + " | ".join(bands) + " |", "|---" * (len(bands) + 1) + "|"]
        for scale, row in rows.items():
            cells = [f"{pct(row[b]['recall'])} ({pct(row[b]['same_faces_full_res'])}; {row[b]['faces']})" if b in row else ""
                     for b in bands]
            lines.append(f"| {scale.split('=')[1]} | " + " | ".join(cells) + " |")
        lines.append("")
    bands = [f"{low}-{high - 1}px" for low, high in SIZE_BANDS]
    lines += ["| min_face_size / CNN_MIN_FACE | detector scale | recall / precision @0.3 | "
              + " | ".join(f"recall {b} ({report['min_face_size'][next(iter(report['min_face_size']))]['recall_by_size'][b][1]})" for b in bands)
              + " | end-to-end | time / first row (median per photo) | ms 640x480 | ms 1280x720 |", "|---" * (len(bands) + 7) + "|"]
    for key, row in report["min_face_size"].items():
        lines.append(f"| {key} | {row['detect_scale']} | {pct(row['recall@0.3'])} / {pct(row['precision@0.3'])} | "
                     + " | ".join(pct(row["recall_by_size"][b][0]) for b in bands)
                     + f" | {pct(row['end_to_end'])} | {row['time_ratio_to_baseline']} | {row['ms_640x480']} | {row['ms_1280x720']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fer", default=str(SHARED / "data" / "fer2013.zip"))
    parser.add_argument("--yunet-model", default=str(SHARED / "models" / "face_detection_yunet_2023mar.onnx"))
    parser.add_argument("--model", default=str(BUNDLED_MODEL))
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "detection.json"))
    parser.add_argument("--table", metavar="RESULTS_JSON", help="print the markdown tables of a results file and exit")
    parser.add_argument("--min-face-sweep", action="store_true",
                        help="detector resolution and min_face_size sweep (module docstring); writes --out")
    parser.add_argument("--speed-only", action="store_true",
                        help="only time each detector at its defaults (a minute; rerun when the cores are idle)")
    args = parser.parse_args()
    if args.table:
        report = json.loads(Path(args.table).read_text())
        print(sweep_tables(report) if "min_face_size" in report else markdown_tables(report))
        return

    started = time.perf_counter()
    fer = read_zip_faces(args.fer, split="test", limit=100_000)
    reals = real_backgrounds()
    evaluation = make_photos(fer, args.photos, args.seed, reals)
    calibration = make_photos(fer[::-1], max(args.photos // 2, 20), args.seed + 1000, reals)
    n_faces = sum(len(p.faces) for p in evaluation)
    print(f"{len(evaluation)} evaluation photos, {n_faces} faces; {len(calibration)} calibration photos; "
          f"backgrounds {['texture', 'gradient', *sorted(reals)]}")

    report: dict = {"command": "python -m bench.detection_benchmark " + f"--photos {args.photos} --seed {args.seed}",
                    "machine": f"{platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores",
                    "faces": n_faces, "photos": len(evaluation)}

    detectors = {"haar": DetectionConfig(detector="haar"), "yuface": DetectionConfig(detector="yuface")}
    if Path(args.yunet_model).exists():
        detectors["yunet"] = DetectionConfig(detector="yunet", yunet_model=args.yunet_model)

    if args.speed_only:
        speed_only(evaluation, detectors)
        return
    if args.min_face_sweep:
        report["command"] += " --min-face-sweep"
        report["cnn_min_face"] = CNN_MIN_FACE
        report["detector_scale"] = {"yuface": detection_size_sweep(evaluation, detectors["yuface"])}  # yunet: same network
        report["min_face_size"] = min_face_sweep(evaluation, detectors["yuface"], Classifier(Path(args.model)))
        report["load_average"] = open("/proc/loadavg").read().split()[:3]
        Path(args.out).write_text(json.dumps(report, indent=1))
        print(sweep_tables(report))
        return

    # Levers: min_face_size (which sets the input scale; detect once per value at the lowest threshold, then filter by score)
    # and score threshold; OpenCV threads for yunet. Speed: median ms over 20 photos per size.
    levers = {}
    for name in ("yuface", "yunet"):
        if name not in detectors:
            continue
        for size in (DetectionConfig.min_face_size, 96, 128):  # the detector scale follows (--min-face-sweep)
            config = replace(detectors[name], min_face_size=size, score_threshold=min(SCORES), margin=0.0, shift_y=0.0)
            scale = f"{config.detect_scale():.2f} (min_face_size {size})"
            raw = raw_detections(evaluation, config)
            speed = {k: round(v, 1) for k, v in time_detection(evaluation, config, count=20).items()}
            for score in SCORES:
                kept = [[b for b in boxes if b.confidence >= score] for boxes in raw]
                scores = detection_scores(evaluation, framed(evaluation, kept, Framing(0.0)))
                levers[f"{name} scale={scale} score={score}"] = {**{k: round(v, 4) for k, v in scores.items()}, **speed}
                print(f"{name} scale={scale} score={score}", levers[f"{name} scale={scale} score={score}"], flush=True)
    if "yunet" in detectors:
        for threads in (1, 2):
            cv2.setNumThreads(threads)
            levers[f"yunet cv2.setNumThreads({threads})"] = {k: round(v, 1) for k, v in time_detection(evaluation, detectors["yunet"], count=20).items()}
            print(f"yunet cv2.setNumThreads({threads})", levers[f"yunet cv2.setNumThreads({threads})"], flush=True)
        cv2.setNumThreads(2)
    report["levers"] = levers
    report["load_average_during_levers"] = open("/proc/loadavg").read().split()[:3] if Path("/proc/loadavg").exists() else None

    classifier = Classifier(Path(args.model))  # TensorFlow loaded after the detector timings
    report["true_boxes"] = true_box_accuracy(evaluation, classifier)
    print("classifier on true boxes:", report["true_boxes"], flush=True)
    results = {}
    for name, config in detectors.items():
        framing, grid = calibrate_framing(calibration, config, classifier) if name != "haar" else (FRAMING["haar"], {})
        config = replace(config, margin=framing.margin, shift_y=framing.shift_y)
        raw = raw_detections(evaluation, config)
        boxes = framed(evaluation, raw, framing)
        row = {"framing": {"margin": framing.margin, "shift_y": framing.shift_y},
               "input_scale": config.detect_scale() if name != "haar" else 1.0,
               "score_threshold": config.score(name) if name != "haar" else None}
        row.update({k: round(v, 4) for k, v in detection_scores(evaluation, boxes).items()})
        row.update({k: round(v, 1) for k, v in time_detection(evaluation, config).items()})
        row["load_average"] = open("/proc/loadavg").read().split()[:3] if Path("/proc/loadavg").exists() else None
        row["end_to_end"] = {k: round(v, 4) for k, v in end_to_end(evaluation, boxes, classifier).items()}
        if name != "haar":
            row["end_to_end_aligned"] = {k: round(v, 4) for k, v in end_to_end(evaluation, boxes, classifier, align=True).items()}
            row["framing_grid_calibration_accuracy"] = grid
        row["real_media"] = real_media(config)
        results[name] = row
        print(name, json.dumps({k: v for k, v in row.items() if k != "framing_grid_calibration_accuracy"}), flush=True)
    report["detectors"] = results
    report["seconds"] = round(time.perf_counter() - started, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out} in {report['seconds']} s")


if __name__ == "__main__":
    main()
