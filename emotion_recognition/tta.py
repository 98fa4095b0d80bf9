"""Test-time augmentation (TTA): classify each face from several views of it and average.

Views, all 48x48 like the face itself:
- the face;
- centre zooms: the central ``c`` x ``c`` pixels resized back to 48x48 (one view per crop size);
- shifts: the face moved by ``shift`` pixels left, right, up and down, the uncovered border
  filled by edge replication (four views);
- with ``flip``, the mirror image of every view above as well.

Every view counts once in the average. Evaluation, the registry's champion check and the
service use this one definition (serving: ``EMOTION_TTA``, see ``PRESETS``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import cv2
import numpy as np

from emotion_recognition.labels import NUM_CLASSES
from emotion_recognition.preprocessing import FACE_SIZE

MIN_ZOOM_CROP = 24
MAX_SHIFT = 8


@dataclass(frozen=True)
class TestTimeAugmentation:
    flip: bool = False
    zoom_crops: tuple[int, ...] = ()
    shift: int = 0

    __test__ = False  # not a pytest test class despite the name

    def __post_init__(self) -> None:
        object.__setattr__(self, "zoom_crops", tuple(int(c) for c in self.zoom_crops))
        for crop in self.zoom_crops:
            if not MIN_ZOOM_CROP <= crop < FACE_SIZE:
                raise ValueError(f"zoom crop {crop} px: expected {MIN_ZOOM_CROP}-{FACE_SIZE - 1} (a centre crop of the 48x48 face)")
        if not 0 <= self.shift <= MAX_SHIFT:
            raise ValueError(f"shift {self.shift} px: expected 0-{MAX_SHIFT}")

    @property
    def view_count(self) -> int:
        return (1 + len(self.zoom_crops) + (4 if self.shift else 0)) * (2 if self.flip else 1)

    def describe(self) -> str:
        parts = (["flip"] if self.flip else []) + [f"zoom {c}px" for c in self.zoom_crops]
        parts += [f"shift {self.shift}px x4"] if self.shift else []
        return f"{self.view_count} views ({', '.join(parts)})" if parts else "1 view (no TTA)"

    def views(self, faces: np.ndarray) -> np.ndarray:
        """(V, N, 48, 48) views of (N, 48, 48) faces (uint8 stays uint8, other types become
        float32); view 0 is the faces themselves, and with ``flip`` the second half holds the
        mirror images of the first half, in order."""
        faces = np.asarray(faces)
        if faces.dtype != np.uint8:
            faces = faces.astype(np.float32)  # OpenCV resizes uint8 and float32, not int64
        views = [faces] + [zoom(faces, crop) for crop in self.zoom_crops]
        if self.shift:
            views += [shifted(faces, dy, dx) for dy, dx in ((self.shift, 0), (-self.shift, 0), (0, self.shift), (0, -self.shift))]
        if self.flip:
            views += [view[:, :, ::-1] for view in views]
        return np.stack(views)

    def predict(self, predict_batch: Callable[[np.ndarray], np.ndarray], faces: np.ndarray) -> np.ndarray:
        """(N, 7) probabilities: the mean over all views of ``predict_batch`` ((M, 48, 48) uint8 ->
        (M, 7)), which is called once with every view of every face."""
        return self.predict_views(predict_batch, faces).mean(axis=0)

    def predict_views(self, predict_batch: Callable[[np.ndarray], np.ndarray], faces: np.ndarray) -> np.ndarray:
        """(V, N, 7) probabilities, one slice per view in ``views`` order."""
        views = self.views(faces)
        count, n = views.shape[:2]
        if n == 0:
            return np.zeros((count, 0, NUM_CLASSES), np.float32)
        probabilities = np.asarray(predict_batch(views.reshape(count * n, FACE_SIZE, FACE_SIZE)))
        return probabilities.reshape(count, n, -1)


Preset = Literal["none", "flip", "crops"]  # the names users pick from (CLI --tta, EMOTION_TTA)
PRESETS: dict[Preset, TestTimeAugmentation] = {
    "none": TestTimeAugmentation(),
    "flip": TestTimeAugmentation(flip=True),
    # the best validation accuracy among the view sets compared for the bundled model (docs/decisions.md)
    "crops": TestTimeAugmentation(flip=True, zoom_crops=(44, 42, 40), shift=3),
}


def from_preset(name: str) -> TestTimeAugmentation:
    try:
        return PRESETS[name.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown test-time augmentation {name!r}: expected one of {', '.join(PRESETS)}") from None


def zoom(faces: np.ndarray, crop: int) -> np.ndarray:
    """The central ``crop`` x ``crop`` pixels of each (N, 48, 48) face, resized back to 48x48."""
    start = (FACE_SIZE - crop) // 2
    centre = faces[:, start : start + crop, start : start + crop]
    return np.stack([cv2.resize(face, (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_LINEAR) for face in centre]) if len(faces) else faces.copy()


def shifted(faces: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """(N, H, W) faces moved by (dy, dx) pixels, the uncovered border filled by edge replication."""
    pad = max(abs(dy), abs(dx))
    height, width = faces.shape[1:3]
    padded = np.pad(faces, ((0, 0), (pad, pad), (pad, pad)), mode="edge")
    return padded[:, pad - dy : pad - dy + height, pad - dx : pad - dx + width]
