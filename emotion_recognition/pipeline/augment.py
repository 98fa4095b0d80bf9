"""Offline augmentation of 48x48 faces: flip, rotation, shift, zoom, brightness, contrast.

Deterministic for a seed: every random draw comes from one ``numpy.random.Generator``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from emotion_recognition.pipeline.data import Split
from emotion_recognition.labels import NUM_CLASSES


@dataclass(frozen=True)
class AugmentConfig:
    flip: bool = True
    max_rotation: float = 10.0
    max_shift: float = 0.1
    zoom: float = 0.1
    brightness: float = 0.2
    contrast: float = 0.2


def augment_image(image: np.ndarray, config: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """One random variant of a (48, 48) uint8 face."""
    h, w = image.shape
    if config.flip and rng.random() < 0.5:
        image = image[:, ::-1]
    angle = rng.uniform(-config.max_rotation, config.max_rotation)
    scale = 1.0 + rng.uniform(-config.zoom, config.zoom)
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
    matrix[:, 2] += rng.uniform(-config.max_shift, config.max_shift, size=2) * (w, h)
    out = cv2.warpAffine(np.ascontiguousarray(image), matrix, (w, h), borderMode=cv2.BORDER_REFLECT_101)
    gain = 1.0 + rng.uniform(-config.contrast, config.contrast)
    offset = rng.uniform(-config.brightness, config.brightness) * 255.0
    mean = out.mean()
    out = (out.astype(np.float32) - mean) * gain + mean + offset
    return np.clip(out, 0, 255).astype(np.uint8)


def copies_per_image(labels: np.ndarray, copies: int, min_per_class: int) -> np.ndarray:
    """How many augmented copies each image gets: ``copies`` each, plus extra for classes
    whose total would stay under ``min_per_class`` (spread evenly over that class)."""
    per_image = np.full(len(labels), copies, dtype=np.int64)
    counts = np.bincount(labels, minlength=NUM_CLASSES)
    for label in range(NUM_CLASSES):
        n = counts[label]
        missing = min_per_class - n * (1 + copies)
        if n == 0 or missing <= 0:
            continue
        members = np.flatnonzero(labels == label)
        per_image[members] += missing // n
        per_image[members[: missing % n]] += 1
    return per_image


def augment_split(split: Split, config: AugmentConfig, copies: int, min_per_class: int, seed: int) -> Split:
    """The originals followed by their augmented copies."""
    rng = np.random.default_rng(seed)
    per_image = copies_per_image(split.labels, copies, min_per_class)
    source = np.repeat(np.arange(len(split)), per_image)
    augmented = np.empty((len(source), *split.images.shape[1:]), dtype=np.uint8)
    for i, index in enumerate(source):
        augmented[i] = augment_image(split.images[index], config, rng)
    names = np.char.add(split.names[source].astype(str), "#aug")
    return Split(
        np.concatenate([split.images, augmented]),
        np.concatenate([split.labels, split.labels[source]]),
        np.concatenate([split.names, names]),
    )
