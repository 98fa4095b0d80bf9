"""The face tracker: stable ids across frames, new ids for new faces, the missed-frame age, and
smoothing (the timeline CSV writer: tests/test_timeline.py)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from emotion_recognition.detection import Box, detect_faces
from emotion_recognition.face_tracking import FaceTracker, box_iou, greedy_iou_matches, track_frames
from emotion_recognition.inference import FaceResult
from emotion_recognition.labels import EMOTIONS
from testkit import face, one_hot

FER_ZIP = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fer2013.zip"


def ids(tracked) -> list[int]:
    return [t.track_id for t in tracked]


def test_box_iou():
    a = Box(0, 0, 10, 10)
    assert box_iou(a, a) == 1.0
    assert box_iou(a, Box(5, 0, 10, 10)) == pytest.approx(50 / 150)
    assert box_iou(a, Box(10, 0, 10, 10)) == 0.0
    assert box_iou(a, Box(0, 0, 0, 0)) == 0.0


def test_greedy_matching_takes_the_best_overlap_first():
    previous = [Box(0, 0, 10, 10), Box(8, 0, 10, 10)]
    current = [Box(7, 0, 10, 10)]  # overlaps both, the second more
    assert greedy_iou_matches(previous, current, 0.3) == [(1, 0)]
    assert greedy_iou_matches(previous, [Box(50, 50, 10, 10)], 0.3) == []


def test_two_moving_faces_keep_their_ids_and_a_new_face_gets_a_new_id():
    tracker = FaceTracker()
    for k in range(12):  # 8 px per frame on a 60 px face: IoU ~0.77 between frames
        faces = [face(20 + 8 * k, 40), face(400 - 6 * k, 300 + 4 * k)]
        if k >= 6:
            faces.append(face(250, 50))
        tracked = tracker.update(faces)
        assert ids(tracked) == ([1, 2, 3] if k >= 6 else [1, 2])
    # order of the faces in a frame does not matter: ids follow the boxes
    assert ids(tracker.update([face(250, 50), face(20 + 8 * 12, 40)])) == [3, 1]


def test_a_face_jumping_far_is_a_new_track():
    tracker = FaceTracker()
    assert ids(tracker.update([face(0, 0)])) == [1]
    assert ids(tracker.update([face(300, 300)])) == [2]


def test_id_survives_missed_frames_up_to_the_age_limit():
    tracker = FaceTracker(max_missed=2)
    assert ids(tracker.update([face(100, 100)])) == [1]
    tracker.update([])
    tracker.update([])  # missed twice: still alive
    assert ids(tracker.update([face(104, 100)])) == [1]
    for _ in range(3):  # missed three times: the track ends
        tracker.update([])
    assert ids(tracker.update([face(104, 100)])) == [2]


def test_smoothing_is_the_mean_of_the_last_n_probability_vectors():
    tracker = FaceTracker(smooth_frames=3)
    sequence = [one_hot("happy", 0.9), one_hot("sad", 0.6), one_hot("sad", 0.6), one_hot("sad", 0.6)]
    outputs = [tracker.update([face(50 + i, 50, probabilities=p)])[0] for i, p in enumerate(sequence)]
    # frame 1: mean of happy 0.9 and sad 0.6 -> happy still ahead (0.9+1/15 over 2 vs 0.6+1/60 over 2)
    expected = np.mean(sequence[:2], axis=0)
    got = np.array([outputs[1].result.probability(e) for e in EMOTIONS])
    assert got == pytest.approx(expected)
    assert outputs[1].result.emotion == "happy" and outputs[1].result.score == pytest.approx(expected.max())
    assert outputs[2].result.emotion == "sad"  # two sad frames out of three
    # frame 3: the window (3 frames) has dropped the happy frame: all sad
    got = np.array([outputs[3].result.probability(e) for e in EMOTIONS])
    assert got == pytest.approx(sequence[3])
    assert sum(outputs[3].result.probabilities_dict.values()) == pytest.approx(1.0)
    # the box is always this frame's own
    assert outputs[3].result.box == Box(53, 50, 60, 60, 0.9)


def test_no_smoothing_returns_each_face_unchanged():
    tracker = FaceTracker(smooth_frames=1)
    first = face(0, 0, probabilities=one_hot("fear"))
    second = face(2, 0, probabilities=one_hot("angry"))
    tracker.update([first])
    assert tracker.update([second])[0].result == second


def test_smoothing_keeps_tracks_apart():
    tracker = FaceTracker(smooth_frames=5)
    for _ in range(4):
        a, b = tracker.update([face(0, 0, probabilities=one_hot("happy")), face(300, 0, probabilities=one_hot("sad"))])
    assert (a.result.emotion, b.result.emotion) == ("happy", "sad")
    assert a.result.probability("happy") == pytest.approx(0.7)


def test_bad_settings_are_clear_errors():
    with pytest.raises(ValueError, match="smooth_frames must be between 1 and"):
        FaceTracker(smooth_frames=0)
    with pytest.raises(ValueError, match="max_missed"):
        FaceTracker(max_missed=-1)
    with pytest.raises(ValueError, match="min_iou"):
        FaceTracker(min_iou=0)


def detectable_fer_face(zip_path: Path, face_px: int = 120) -> np.ndarray:
    """The first FER2013 PublicTest face (upscaled) that the detector finds alone on a plain canvas."""
    with zipfile.ZipFile(zip_path) as archive:
        names = sorted(n for n in archive.namelist() if n.startswith("test/") and n.endswith(".jpg"))
        for name in names[:200]:
            small = cv2.imdecode(np.frombuffer(archive.read(name), np.uint8), cv2.IMREAD_GRAYSCALE)
            big = cv2.resize(small, (face_px, face_px), interpolation=cv2.INTER_CUBIC)
            canvas = np.full((face_px * 2, face_px * 2), 128, np.uint8)
            canvas[face_px // 2 : face_px // 2 + face_px, face_px // 2 : face_px // 2 + face_px] = big
            if len(detect_faces(canvas)) == 1:
                return big
    raise AssertionError(f"no detectable face among the first 200 of {zip_path}")


def test_real_face_moving_across_frames_keeps_its_id():
    """A real FER2013 face moved across a textured background, found by the real detector in
    every frame; it vanishes for one frame (kept id), and a second face appears (new id)."""
    if not FER_ZIP.is_file():
        pytest.skip(f"{FER_ZIP} is not present (../shared holds FER2013 for this test)")
    fer_face = detectable_fer_face(FER_ZIP)
    size = fer_face.shape[0]
    height, width = 360, 640
    yy, xx = np.mgrid[0:height, 0:width]
    background = np.clip(100 + 50 * np.sin(xx / 29.0) * np.cos(yy / 41.0), 0, 255).astype(np.uint8)
    tracker = FaceTracker(max_missed=2)
    seen: list[list[int]] = []
    for k in range(10):
        frame = background.copy()
        x, y = 30 + 20 * k, 60 + 5 * k  # 20 px per frame: the boxes still overlap well
        if k != 4:  # frame 4: the face is hidden
            frame[y : y + size, x : x + size] = fer_face
        if k >= 7:  # a second face enters at the right
            frame[40 : 40 + size, 500 : 500 + size] = fer_face
        boxes = detect_faces(cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB))
        boxes.sort(key=lambda b: b.x)
        results = [FaceResult(b, "neutral", np.full(len(EMOTIONS), 1 / len(EMOTIONS))) for b in boxes]
        seen.append(ids(tracker.update(results)))
    assert seen == [[1]] * 4 + [[]] + [[1]] * 2 + [[1, 2]] * 3, seen


def test_track_frames_sends_chunks_in_order_and_keeps_ids():
    """7 frames in chunks of 3: the analyser sees 3, 3 and 1 frames; every frame comes back once, in
    order, with the face moving 2 px a frame keeping track id 1."""
    from types import SimpleNamespace

    frames = [SimpleNamespace(index=i, rgb=np.full((4, 4, 3), i, np.uint8)) for i in range(7)]
    seen = []

    def analyze(images):
        seen.append(len(images))
        return [[FaceResult(Box(10 + 2 * int(image[0, 0, 0]), 10, 40, 40), "happy", np.eye(len(EMOTIONS))[3])]
                for image in images]

    out = list(track_frames(frames, analyze, FaceTracker(), chunk=3))
    assert seen == [3, 3, 1]
    assert [frame.index for frame, _ in out] == list(range(7))
    assert [[t.track_id for t in tracked] for _, tracked in out] == [[1]] * 7
    assert [tracked[0].result.box.x for _, tracked in out] == [10 + 2 * i for i in range(7)]
