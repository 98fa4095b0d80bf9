"""Batched face classification throughput (faces/s) of a model file on this machine.

Usage: python -m bench.classify_throughput [--model emotion_recognition/default_model/model.keras]
       [--batch-sizes 1,8,32,128,512] [--seconds 5] [--tta none,flip,crops]

Times ``EmotionRecognizer.classify_faces``, the service's classification call, once per
test-time augmentation preset (``emotion_recognition.tta.PRESETS``; the service's ``EMOTION_TTA``),
with the float32 file as saved (what the service runs).

Faces are real FER2013 PublicTest crops from data/split/test.npz when present, else random pixels
(the cost does not depend on the pixel values).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from emotion_recognition.pipeline.data import load_split
from emotion_recognition.inference import EmotionRecognizer
from emotion_recognition.model_files import load_model, BUNDLED_MODEL
from emotion_recognition.tta import from_preset


def faces(n: int) -> np.ndarray:
    path = Path("data/split/test.npz")
    if path.is_file():
        images = load_split(path).images
        return images[np.arange(n) % len(images)]
    return np.random.default_rng(0).integers(0, 256, (n, 48, 48), dtype=np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=str(BUNDLED_MODEL))
    parser.add_argument("--batch-sizes", default="1,8,32,128,512")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--tta", default="none", help="comma-separated presets: none, flip, crops")
    args = parser.parse_args()
    model = load_model(args.model)
    print(f"model {args.model}, {tf.config.threading.get_intra_op_parallelism_threads() or 'all'} intra-op threads")
    for preset in args.tta.split(","):
        recognizer = EmotionRecognizer(model, tta=from_preset(preset))
        print(f"test-time augmentation {preset}: {recognizer.tta.describe()}")
        for size in (int(s) for s in args.batch_sizes.split(",")):
            batch = faces(size)
            recognizer.classify_faces(batch)  # trace + warm up
            count, started = 0, time.perf_counter()
            while time.perf_counter() - started < args.seconds:
                recognizer.classify_faces(batch)
                count += 1
            seconds = time.perf_counter() - started
            print(f"batch {size:4d}: {count * size / seconds:8.0f} faces/s, {1000 * seconds / count:7.2f} ms per batch")


if __name__ == "__main__":
    main()
