"""Scale-out figures (bench/README.md): training images/s per tf.distribute strategy, and what
the per-epoch resume backup costs.

    python -m bench.scaleout throughput [--strategies one_device,mirrored] [--steps 20]
    python -m bench.scaleout backup                  # seconds to write / read the epoch backup

Each strategy runs in its own process (logical CPU devices are fixed when TensorFlow starts).
The model is the default one of params.yaml (vgg, widths 32-256, batch 128, float32).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BATCH = 128


def build(strategy):
    import keras

    from emotion_recognition.pipeline.model import build_model
    from emotion_recognition.pipeline.params import load_params

    with strategy.scope():
        model = build_model(load_params().model)  # the committed network
        model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss="categorical_crossentropy")
    return model


def data(steps: int):
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (BATCH * steps, 48, 48, 1)).astype(np.float32)
    y = tf.one_hot(rng.integers(0, 7, BATCH * steps), 7)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH).repeat()


def one_strategy(name: str, steps: int) -> dict:
    from emotion_recognition.pipeline.distribute import make_strategy

    strategy = make_strategy(name)
    model = build(strategy)
    ds = data(steps)
    model.fit(ds, epochs=1, steps_per_epoch=3, verbose=0)  # tracing
    start = time.perf_counter()
    model.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0)
    seconds = time.perf_counter() - start
    return {"strategy": name, "replicas": strategy.num_replicas_in_sync, "images_per_second": round(BATCH * steps / seconds, 1)}


def throughput(strategies: list[str], steps: int) -> None:
    for name in strategies:
        out = subprocess.run([sys.executable, "-m", "bench.scaleout", "_one", name, str(steps)], capture_output=True, text=True, check=True)
        print(out.stdout.strip().splitlines()[-1], flush=True)


def backup() -> None:
    import keras

    from emotion_recognition.pipeline.distribute import make_strategy

    model = build(make_strategy("one_device"))
    model.fit(data(2), epochs=1, steps_per_epoch=2, verbose=0)  # the optimizer's slots exist
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.weights.h5"
        start = time.perf_counter()
        model.save_weights(path)  # what BackupAndRestore writes each epoch
        write = time.perf_counter() - start
        start = time.perf_counter()
        model.load_weights(path)
        read = time.perf_counter() - start
        size = path.stat().st_size
        start = time.perf_counter()
        keras.saving.save_model(model, Path(folder) / "best.keras")  # on a new best epoch
        best = time.perf_counter() - start
    print(json.dumps({"parameters": model.count_params(), "backup_mb": round(size / 1e6, 1),
                      "write_seconds": round(write, 3), "read_seconds": round(read, 3),
                      "best_model_seconds": round(best, 3)}))


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "_one":
        print(json.dumps(one_strategy(sys.argv[2], int(sys.argv[3]))))
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["throughput", "backup"])
    parser.add_argument("--strategies", default="one_device,mirrored")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    if args.what == "throughput":
        throughput(args.strategies.split(","), args.steps)
    else:
        backup()


if __name__ == "__main__":
    main()
