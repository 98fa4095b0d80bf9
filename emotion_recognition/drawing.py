"""Drawing results on images: a box and a label ("happy 87%") per face, English or Spanish."""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from emotion_recognition.inference import FaceResult
from emotion_recognition.labels import translate

# RGB colours, one per emotion.
COLOURS: dict[str, tuple[int, int, int]] = {
    "angry": (230, 40, 40),
    "disgust": (120, 170, 40),
    "fear": (150, 70, 200),
    "happy": (250, 200, 0),
    "neutral": (200, 200, 200),
    "sad": (50, 110, 230),
    "surprise": (250, 120, 20),
}


def label_text(result: FaceResult, language: str = "en", track_id: int | None = None) -> str:
    """"happy 87%", or "#3 happy 87%" for a face tracked through a video (its track id)."""
    prefix = f"#{track_id} " if track_id is not None else ""
    return f"{prefix}{translate(result.emotion, language)} {round(100 * result.score)}%"


def draw_results(
    image: np.ndarray,
    results: Sequence[FaceResult],
    language: str = "en",
    fps: float | None = None,
    track_ids: Sequence[int | None] | None = None,
) -> np.ndarray:
    """A copy of the RGB ``image`` with each face's box and label (and an FPS counter if given);
    ``track_ids`` (one per result) puts each face's track id in front of its label."""
    translate("neutral", language)  # unknown language -> ValueError before drawing anything
    canvas = np.ascontiguousarray(image.copy())
    if canvas.ndim == 2:
        canvas = cv2.cvtColor(canvas, cv2.COLOR_GRAY2RGB)
    height, width = canvas.shape[:2]
    scale = max(0.4, min(width, height) / 700)
    thickness = max(1, round(scale * 2))
    if track_ids is not None and len(track_ids) != len(results):
        raise ValueError(f"{len(track_ids)} track ids for {len(results)} faces")
    for i, result in enumerate(results):
        box = result.box
        colour = COLOURS.get(result.emotion, (255, 255, 255))
        cv2.rectangle(canvas, (box.x, box.y), (box.x + box.w - 1, box.y + box.h - 1), colour, thickness)
        text = label_text(result, language, track_ids[i] if track_ids is not None else None)
        (tw, th), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        top = box.y - th - baseline - 4
        if top < 0:  # no room above the box: draw inside it
            top = box.y
        left = min(max(box.x, 0), max(width - tw - 4, 0))
        cv2.rectangle(canvas, (left, top), (left + tw + 4, top + th + baseline + 4), colour, -1)
        cv2.putText(
            canvas, text, (left + 2, top + th + 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness, cv2.LINE_AA
        )
    if fps is not None:
        cv2.putText(
            canvas, f"{fps:.1f} FPS", (8, int(30 * scale) + 4), cv2.FONT_HERSHEY_SIMPLEX, scale,
            (0, 255, 0), thickness, cv2.LINE_AA,
        )
    return canvas
