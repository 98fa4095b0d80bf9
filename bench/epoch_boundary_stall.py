"""Time lost at epoch boundaries by the training input pipeline: a new iterator per epoch vs one.

Keras builds a fresh iterator over a finite tf.data dataset every epoch. Destroying the old one
waits for tf.data's autotuning thread, and on this CPU that wait sometimes took 30 s (training
stalled with the CPU idle every 4-5 epochs). stages/train.py therefore trains from one repeated
iterator (`make_dataset(..., repeat=True)` + `fit(steps_per_epoch=...)`). This bench replays both
with the project's own pipeline, a sleep standing in for each training step, and reports the time
from an epoch's last batch to the next epoch's first batch.

Usage:
    python bench/epoch_boundary_stall.py [--minutes 5] [--images 26000] [--step-ms 250]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from emotion_recognition.data import Split
from emotion_recognition.params import TrainParams
from emotion_recognition.training import make_dataset, steps_per_epoch


def epoch_boundaries(split: Split, params: TrainParams, repeat: bool, minutes: float, step_seconds: float,
                     batch_size: int) -> list[float]:
    """Seconds between the last batch of each epoch and the first batch of the next."""
    dataset = make_dataset(split, batch_size, True, params, repeat=repeat)
    steps = steps_per_epoch(len(split), batch_size)
    deadline = time.monotonic() + minutes * 60
    boundaries: list[float] = []
    iterator = iter(dataset) if repeat else None
    last_batch = None
    while time.monotonic() < deadline:
        if not repeat:
            iterator = None  # what Keras does for a finite dataset: drop the old iterator, build a new one
            iterator = iter(dataset)
        for step in range(steps):
            next(iterator)
            if step == 0 and last_batch is not None:
                boundaries.append(time.monotonic() - last_batch)
            time.sleep(step_seconds)
        last_batch = time.monotonic()
    return boundaries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="per mode; stalls showed up every ~4 min")
    parser.add_argument("--images", type=int, default=26000, help="training-set size (the default pipeline trains on 25,653)")
    parser.add_argument("--step-ms", type=float, default=250.0, help="simulated training step")
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    split = Split(rng.integers(0, 256, (args.images, 48, 48)).astype(np.uint8),
                  rng.integers(0, 7, args.images), np.arange(args.images).astype(str))
    params = TrainParams()  # flip + shift: the augmentation cost does not matter here, the iterator does
    for repeat in (False, True):
        gaps = epoch_boundaries(split, params, repeat, args.minutes, args.step_ms / 1000, args.batch)
        label = "one repeated iterator " if repeat else "new iterator per epoch"
        print(f"{label}: {len(gaps)} epoch boundaries, median {np.median(gaps):.2f} s, "
              f"max {max(gaps):.2f} s, total {sum(gaps):.1f} s")


if __name__ == "__main__":
    main()
