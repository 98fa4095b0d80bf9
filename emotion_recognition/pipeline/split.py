"""Duplicate detection and the stratified train/validation split."""

from __future__ import annotations

import hashlib

import numpy as np

from emotion_recognition.pipeline.data import Split


def pixel_hashes(images: np.ndarray) -> np.ndarray:
    """One digest per image of its exact pixels."""
    return np.array([hashlib.blake2b(image.tobytes(), digest_size=16).hexdigest() for image in images])


def find_duplicates(train: Split, test: Split) -> dict[str, np.ndarray]:
    """Masks over ``train``: later copies of an earlier train image, and images whose pixels are in test."""
    train_hashes = pixel_hashes(train.images)
    _, first_index = np.unique(train_hashes, return_index=True)
    repeated = np.ones(len(train), dtype=bool)
    repeated[first_index] = False
    in_test = np.isin(train_hashes, pixel_hashes(test.images))
    return {"repeated_in_train": repeated, "in_test": in_test}


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val) holding ``val_fraction`` of every class in val; same seed, same split."""
    rng = np.random.default_rng(seed)
    train_index, val_index = [], []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        rng.shuffle(members)
        n_val = int(round(len(members) * val_fraction))
        val_index.append(members[:n_val])
        train_index.append(members[n_val:])
    return np.sort(np.concatenate(train_index)), np.sort(np.concatenate(val_index))
