"""Training throughput (images/s) of the models on this machine, fp32 vs bf16.

Usage:
    python -m bench.train_throughput [--widths 32,64,128,256] [--batch 128] [--steps 30] [--precision float32,auto]
    python -m bench.train_throughput --architecture mobilenetv2 --input-size 96 --batch 64 --steps 10
    python -m bench.train_throughput --precision float32 --jit-compile false,true --repeats 2   # XLA or not
"""

from __future__ import annotations

import argparse
import time

import keras
import numpy as np

from emotion_recognition.pipeline.model import ARCHITECTURES, build_model
from emotion_recognition.pipeline.params import load_params
from emotion_recognition.pipeline.training import cpu_info, resolve_precision


def measure(architecture: str, widths: list[int], input_size: int, batch: int, steps: int, precision: str,
            jit_compile: bool | str = "auto") -> float:
    keras.mixed_precision.set_global_policy(precision)
    params = load_params().model.model_copy(update={"architecture": architecture, "widths": widths,
                                                    "input_size": input_size, "weights": "none"})
    model = build_model(params)  # params.yaml's model group with the options given
    model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss="sparse_categorical_crossentropy",
                  jit_compile=jit_compile)  # "auto" is off on CPU-only machines, as in the train stage
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
    parser.add_argument("--architecture", default="vgg", choices=list(ARCHITECTURES))
    parser.add_argument("--input-size", type=int, default=96, help="mobilenetv2 only")
    parser.add_argument("--widths", default="32,64,128,256", help="vgg only")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--precision", default="float32,auto",
                        help="comma-separated policies; 'auto' is what training would use here (mixed_bfloat16 only "
                             "on CPUs with bf16 instructions: emulated bf16 takes minutes for a few steps)")
    parser.add_argument("--jit-compile", default="auto", help="comma-separated: auto, true (XLA), false")
    parser.add_argument("--repeats", type=int, default=1, help="measure every combination this many times, interleaved")
    args = parser.parse_args()
    jit_modes = [{"true": True, "false": False}.get(mode, "auto") for mode in args.jit_compile.split(",")]
    widths = [int(w) for w in args.widths.split(",")]
    cpu, flags = cpu_info()
    print(f"CPU: {cpu}")
    precisions = dict.fromkeys(resolve_precision(name, flags)[0] for name in args.precision.split(","))
    shape = f"input_size={args.input_size}" if args.architecture == "mobilenetv2" else f"widths={widths}"
    for _ in range(args.repeats):
        for precision in precisions:
            for jit in jit_modes:
                rate = measure(args.architecture, widths, args.input_size, args.batch, args.steps, precision, jit)
                print(f"{args.architecture} {shape} batch={args.batch} precision={precision} jit_compile={jit}: "
                      f"{rate:.0f} images/s", flush=True)


if __name__ == "__main__":
    main()
