"""Test-time augmentation views on PublicTest: none, flip, flip + small shifts.

Usage: python bench/tta_views.py [--model emotion_recognition/default_model/model.keras] [--shifts 1,2,3]

Needs data/split/test.npz (run `dvc repro` up to the split stage). Each shifted view pads the face
by edge replication and crops it back to 48x48, moved by d pixels (4 axis moves, or 4 diagonal
moves), and is averaged with its mirror image; accuracy is printed for each set of views.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from emotion_recognition.data import load_split
from emotion_recognition.evaluation import predict_probabilities
from emotion_recognition.model import load_model
from emotion_recognition.model_files import BUNDLED_MODEL

TEST = Path("data/split/test.npz")


def shifted(faces: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """(N, H, W) faces moved by (dy, dx) pixels, the uncovered border filled by edge replication."""
    pad = max(abs(dy), abs(dx))
    height, width = faces.shape[1:3]
    padded = np.pad(faces, ((0, 0), (pad, pad), (pad, pad)), mode="edge")
    return padded[:, pad + dy : pad + dy + height, pad + dx : pad + dx + width]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(BUNDLED_MODEL))
    parser.add_argument("--shifts", default="1,2,3")
    args = parser.parse_args()
    if not TEST.is_file():
        raise SystemExit(f"{TEST} is missing: run `dvc repro split` first")
    test = load_split(TEST)
    model = load_model(args.model)
    faces = test.images

    def with_flip(views: np.ndarray) -> np.ndarray:  # the evaluate stage's flip TTA
        return predict_probabilities(model, views, flip_tta=True)

    def accuracy(probabilities: np.ndarray) -> str:
        return f"{100 * (probabilities.argmax(axis=1) == test.labels).mean():.2f}%"

    plain = predict_probabilities(model, faces)
    flip = with_flip(faces)
    print(f"{args.model} on {len(test)} PublicTest faces")
    print(f"no TTA: {accuracy(plain)}   flip (2 views): {accuracy(flip)}")
    for d in (int(v) for v in args.shifts.split(",")):
        axis = flip + sum(with_flip(shifted(faces, dy, dx)) for dy, dx in ((d, 0), (-d, 0), (0, d), (0, -d)))
        diagonal = flip + sum(with_flip(shifted(faces, dy, dx)) for dy, dx in ((d, d), (-d, -d), (-d, d), (d, -d)))
        print(f"shift {d}px: flip + axis moves (10 views) {accuracy(axis)}, flip + diagonal moves (10 views) {accuracy(diagonal)}")


if __name__ == "__main__":
    main()
