"""Training throughput (images/s) of the 48x48 models on this machine, fp32 vs bf16.

Usage: python bench/train_throughput.py [--widths 32,64,128,256] [--batch 128] [--steps 30]
"""

from __future__ import annotations

import argparse
import time

import keras
import numpy as np

from emotion_recognition.model import build_model


def measure(widths: list[int], batch: int, steps: int, precision: str) -> float:
    keras.mixed_precision.set_global_policy(precision)
    model = build_model("vgg", widths=widths)
    model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (batch * steps, 48, 48, 1)).astype(np.float32)
    y = rng.integers(0, 7, batch * steps)
    model.fit(x[: batch * 3], y[: batch * 3], batch_size=batch, epochs=1, verbose=0)  # warm-up / tracing
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch, epochs=1, verbose=0)
    seconds = time.perf_counter() - start
    keras.mixed_precision.set_global_policy("float32")
    return batch * steps / seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--widths", default="32,64,128,256")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--precision", default="float32,mixed_bfloat16")
    args = parser.parse_args()
    widths = [int(w) for w in args.widths.split(",")]
    for precision in args.precision.split(","):
        rate = measure(widths, args.batch, args.steps, precision)
        print(f"widths={widths} batch={args.batch} precision={precision}: {rate:.0f} images/s")


if __name__ == "__main__":
    main()
