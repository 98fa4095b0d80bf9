"""A video's emotion timeline: per analysed frame, its faces with track ids; written as JSON or CSV.

The service (``/video_timeline``, ``/video_timeline_csv``) and the CLI (``emotion video``) build
the frame entries with ``timeline_frame`` and write the CSV with ``write_timeline_csv``, so both
produce the same columns and number formats.
"""

from __future__ import annotations

import csv
from typing import IO, Any, Iterable, Sequence

from emotion_recognition.face_tracking import TrackedFace
from emotion_recognition.labels import EMOTIONS

# "face": the face's index within its frame; "track_id": the same face across frames.
TIMELINE_COLUMNS = ["frame", "time_s", "face", "track_id", "x", "y", "w", "h", "confidence", "emotion", *EMOTIONS]


def timeline_frame(index: int, time_s: float, faces: Sequence[TrackedFace]) -> dict[str, Any]:
    """One timeline entry: ``{"frame", "time_s", "faces": [face JSON + "track_id", ...]}``."""
    return {"frame": index, "time_s": round(time_s, 4), "faces": [face.to_dict() for face in faces]}


def timeline_rows(frame: int, time_s: float, faces: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Face dicts (``FaceResult.to_dict``, + ``track_id`` in video) -> rows keyed by TIMELINE_COLUMNS
    (the timeline CSV's rows, and ``emotion batch``'s table's)."""
    return [{"frame": frame, "time_s": round(time_s, 4), "face": i, "track_id": face.get("track_id"), **face["box"],
             "confidence": face["confidence"], "emotion": face["emotion"], **face["probabilities"]}
            for i, face in enumerate(faces)]


def write_timeline_csv(frames: Iterable[dict[str, Any]], f: IO[str], header: bool = True) -> int:
    """Timeline entries -> CSV rows on ``f``: one row per face, one empty row for a frame
    without a face. ``header=False`` appends to a CSV already started (the CLI writes chunk by
    chunk). Returns the number of rows written (header excluded)."""
    writer = csv.DictWriter(f, TIMELINE_COLUMNS)
    if header:
        writer.writeheader()
    rows = [row for entry in frames for row in timeline_rows(entry["frame"], entry["time_s"], entry["faces"])
            or [{"frame": entry["frame"], "time_s": entry["time_s"]}]]
    writer.writerows(rows)
    return len(rows)
