"""The per-frame timeline and its CSV writer (track ids, empty rows for frames without a face)."""

from __future__ import annotations

import csv
import io

import pytest

from emotion_recognition.face_tracking import FaceTracker
from emotion_recognition.timeline import TIMELINE_COLUMNS, timeline_frame, write_timeline_csv
from testkit import face, one_hot


def test_timeline_csv_has_track_ids_and_empty_rows():
    tracker = FaceTracker()
    frames = [
        timeline_frame(0, 0.0, tracker.update([face(0, 0, probabilities=one_hot("happy")), face(200, 0)])),
        timeline_frame(5, 0.20833333, tracker.update([])),
        timeline_frame(10, 0.41666667, tracker.update([face(3, 0, probabilities=one_hot("sad"))])),
    ]
    assert frames[1] == {"frame": 5, "time_s": 0.2083, "faces": []}
    assert frames[2]["faces"][0]["track_id"] == 1
    out = io.StringIO()
    assert write_timeline_csv(frames, out) == 4
    more = io.StringIO()
    write_timeline_csv(frames[:1], more, header=False)
    rows = list(csv.DictReader(io.StringIO(out.getvalue() + more.getvalue())))
    assert list(rows[0]) == TIMELINE_COLUMNS
    assert [(r["frame"], r["face"], r["track_id"], r["emotion"]) for r in rows] == [
        ("0", "0", "1", "happy"), ("0", "1", "2", "angry"), ("5", "", "", ""), ("10", "0", "1", "sad"),
        ("0", "0", "1", "happy"), ("0", "1", "2", "angry"),
    ]
    assert float(rows[0]["happy"]) == pytest.approx(0.7) and rows[1]["x"] == "200"
