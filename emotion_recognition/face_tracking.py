"""Faces through video: a stable ``track_id`` per face across frames, and optional smoothing.

(Not to be confused with ``emotion_recognition.pipeline.tracking``, which is MLflow experiment tracking.)

``FaceTracker`` is a small IoU tracker, fed the faces of each analysed frame in order::

    tracker = FaceTracker(smooth_frames=5)
    for faces in per_frame_results:            # list[FaceResult] per frame
        for tracked in tracker.update(faces):  # same order as ``faces``
            tracked.track_id, tracked.result.emotion

Matching is greedy on IoU (intersection over union of the boxes): the pair of (live track,
new face) with the highest IoU is matched first, then the next, while IoU >= ``min_iou``. A
face left unmatched starts a new track with the next id (1, 2, 3, ...; ids are never reused
within one tracker). A track that gets no face keeps its id for up to ``max_missed`` further
analysed frames, so a face the detector misses for a frame or two, or that is briefly hidden,
comes back with its id; after that the track ends. A track is matched against its last seen box
(no motion model): enough for faces, which move little between analysed frames, but with a
large frame step (``every``) a fast face can overlap its old box by less than ``min_iou`` and
get a new id.

Smoothing. With ``smooth_frames = N > 1`` the result of a tracked face carries the mean of the
probability vectors of that track's last N observed faces (this frame's included; frames where
the face was missed add nothing), and its emotion is the argmax of that mean. ``N = 1`` (the
default) returns every face's own probabilities unchanged. A face's box, confidence and any
other field (e.g. landmarks) are always this frame's.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from emotion_recognition.inference import FaceResult
from emotion_recognition.labels import EMOTIONS
from emotion_recognition.media import chunks

DEFAULT_MIN_IOU = 0.3
DEFAULT_MAX_MISSED = 5
MAX_SMOOTH_FRAMES = 100


def box_iou(a: Any, b: Any) -> float:
    """IoU of two boxes with ``x, y, w, h`` attributes (0 when they do not overlap)."""
    x0, y0 = max(a.x, b.x), max(a.y, b.y)
    x1, y1 = min(a.x + a.w, b.x + b.w), min(a.y + a.h, b.y + b.h)
    inter = max(0, x1 - x0) * max(0, y1 - y0)
    union = a.w * a.h + b.w * b.h - inter
    return inter / union if union > 0 else 0.0


def greedy_iou_matches(
    previous: Sequence[Any], current: Sequence[Any], min_iou: float
) -> list[tuple[int, int]]:
    """(index in ``previous``, index in ``current``) pairs, highest IoU first, each index once."""
    candidates = [
        (box_iou(p, c), i, j)
        for i, p in enumerate(previous)
        for j, c in enumerate(current)
    ]
    # ties broken by index so the result does not depend on float noise or set order
    candidates.sort(key=lambda t: (-t[0], t[1], t[2]))
    used_prev: set[int] = set()
    used_cur: set[int] = set()
    matches = []
    for overlap, i, j in candidates:
        if overlap < min_iou:
            break
        if i in used_prev or j in used_cur:
            continue
        used_prev.add(i)
        used_cur.add(j)
        matches.append((i, j))
    return matches


@dataclass
class Track:
    track_id: int
    box: Any
    missed: int = 0  # analysed frames since the face was last seen
    history: deque = field(default_factory=deque)  # last N probability vectors


@dataclass(frozen=True)
class TrackedFace:
    track_id: int
    result: FaceResult  # smoothed emotion/probabilities when the tracker smooths

    def to_dict(self) -> dict[str, Any]:
        return {**self.result.to_dict(), "track_id": self.track_id}


class FaceTracker:
    """Gives the faces of successive frames stable ids; see the module docstring."""

    def __init__(
        self,
        smooth_frames: int = 1,
        max_missed: int = DEFAULT_MAX_MISSED,
        min_iou: float = DEFAULT_MIN_IOU,
    ):
        if not 1 <= smooth_frames <= MAX_SMOOTH_FRAMES:
            raise ValueError(f"smooth_frames must be between 1 and {MAX_SMOOTH_FRAMES}, got {smooth_frames}")
        if max_missed < 0:
            raise ValueError(f"max_missed must be >= 0, got {max_missed}")
        if not 0 < min_iou <= 1:
            raise ValueError(f"min_iou must be in (0, 1], got {min_iou}")
        self.smooth_frames = smooth_frames
        self.max_missed = max_missed
        self.min_iou = min_iou
        self.tracks: list[Track] = []
        self._next_id = 1

    @property
    def tracks_started(self) -> int:
        """How many tracks (distinct faces, as far as the tracker can tell) have been started."""
        return self._next_id - 1

    def update(self, faces: Sequence[FaceResult]) -> list[TrackedFace]:
        """The faces of the next analysed frame -> the same faces with track ids (same order)."""
        matches = dict(
            (j, i) for i, j in greedy_iou_matches([t.box for t in self.tracks], [f.box for f in faces], self.min_iou)
        )
        matched_tracks = set(matches.values())
        for i, track in enumerate(self.tracks):
            if i not in matched_tracks:
                track.missed += 1
        out = []
        new_tracks = []
        for j, face in enumerate(faces):
            if j in matches:
                track = self.tracks[matches[j]]
                track.box, track.missed = face.box, 0
            else:
                track = Track(self._next_id, face.box, history=deque(maxlen=self.smooth_frames))
                self._next_id += 1
                new_tracks.append(track)
            out.append(TrackedFace(track.track_id, self._smoothed(track, face)))
        self.tracks = [t for t in self.tracks if t.missed <= self.max_missed] + new_tracks
        return out

    def _smoothed(self, track: Track, face: FaceResult) -> FaceResult:
        track.history.append(face.probabilities)
        if self.smooth_frames == 1:
            return face
        mean = np.mean(np.stack(track.history), axis=0)  # what a smoothed face reports
        return dataclasses.replace(face, emotion=EMOTIONS[int(np.argmax(mean))], probabilities=mean)


def track_frames(frames: Iterable, analyze: Callable[[list[np.ndarray]], list[list[FaceResult]]],
                 tracker: FaceTracker, chunk: int = 16) -> Iterator[tuple[Any, list[TrackedFace]]]:
    """(frame, its tracked faces) for each video frame (``.rgb``) in order, as ``emotion video`` and
    ``emotion batch`` read them: the faces of ``chunk`` frames go through ``analyze`` together."""
    for batch in chunks(frames, chunk):
        for frame, faces in zip(batch, analyze([f.rgb for f in batch])):
            yield frame, tracker.update(faces)
