"""Turning pixels into what the model takes: 48x48 single-channel faces with values 0-255.

Training data (FER2013) is already 48x48 grayscale; detected faces in photos go through
``to_grayscale`` and ``resize_face``. Scaling to [0, 1] / [-1, 1] and any resizing a backbone
needs happen inside the saved model (see ``emotion_recognition.pipeline.model``), so no consumer
re-implements them.
"""

from __future__ import annotations

import cv2
import numpy as np

# File suffixes read as photos: dataset zips, folders (batch), outputs (CLI).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
FACE_SIZE = 48
MODEL_INPUT_SHAPE = (FACE_SIZE, FACE_SIZE, 1)


def to_grayscale(image: np.ndarray) -> np.ndarray:
    """Return an 8-bit single-channel copy of ``image`` (gray, RGB, RGBA; 8 or 16 bit).

    Colour images are expected in RGB channel order (what PIL and the service decode to).
    """
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype in (np.float32, np.float64):
        image = np.clip(image * (255.0 if image.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ValueError(f"unsupported pixel type {image.dtype}: expected uint8, uint16 or float")
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_RGBA2GRAY)
    raise ValueError(f"unsupported image shape {image.shape}: expected HxW, HxWx3 or HxWx4")


def resize_face(gray_face: np.ndarray) -> np.ndarray:
    """Resize a grayscale face crop to FACE_SIZE x FACE_SIZE (area interpolation when shrinking)."""
    h, w = gray_face.shape[:2]
    interpolation = cv2.INTER_AREA if h >= FACE_SIZE and w >= FACE_SIZE else cv2.INTER_LINEAR
    return cv2.resize(gray_face, (FACE_SIZE, FACE_SIZE), interpolation=interpolation)


def to_model_batch(faces: np.ndarray | list[np.ndarray]) -> np.ndarray:
    """Stack 48x48 uint8 faces into the model's (N, 48, 48, 1) float32 input, values 0-255."""
    batch = np.asarray(faces, dtype=np.float32)
    if batch.ndim == 3:
        batch = batch[..., np.newaxis]
    if batch.shape[1:] != MODEL_INPUT_SHAPE:
        raise ValueError(f"faces must be {FACE_SIZE}x{FACE_SIZE} grayscale, got batch shape {batch.shape}")
    return batch
