"""OpenVINO fp32 vs bf16 vs INT8 (NNCF post-training quantization) vs Keras, in one run:
PublicTest accuracy with the mirror view and views/s, for the choice in docs/decisions.md.

    python -m bench.openvino_precision --fer2013 ../shared/data/fer2013.zip [--model PATH] [--seconds 2] [--no-accuracy]

INT8 is calibrated on the validation split, made by the split stage's own code (params.yaml's
``split``) from the zip's train/; PublicTest is the zip's test/. Speed: every runtime is timed for
``--seconds`` per round at batch 6 (3 faces + mirrors) and 256 views, rounds interleaved (A B C A B C)
five times; the median per runtime is printed with its ratio to Keras (``Classifier.from_keras``, the
library's Keras runtime) from the same run.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from emotion_recognition.pipeline.data import read_fer2013, save_split
from emotion_recognition.model_files import sha256_file, load_model, bundled_model_path
from emotion_recognition.pipeline.params import load_params
from emotion_recognition.runtime import CALIBRATION_FACES, Classifier, _compile, convert
from emotion_recognition.tta import from_preset
from stages.split import split


def fer_splits(zip_path: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        parts, _ = read_fer2013(zip_path)
        for name in ("train", "test"):
            save_split(parts[name], f"{tmp}/{name}.npz")
        p = load_params().split
        split(p.val_fraction, p.seed, p.drop_duplicates, Path(tmp), Path(tmp), Path(tmp) / "split.json")
        from emotion_recognition.pipeline.data import load_split

        return {name: load_split(f"{tmp}/{name}.npz") for name in ("val", "test")}


def accuracy(predict, faces: np.ndarray, labels: np.ndarray) -> float:
    flip = from_preset("flip")
    probabilities = np.concatenate([flip.predict(lambda v: predict(v[..., None].astype(np.float32)), faces[i : i + 128])
                                    for i in range(0, len(faces), 128)])
    return float((probabilities.argmax(1) == labels).mean())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fer2013", required=True)
    parser.add_argument("--model", default=str(bundled_model_path()))
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--no-accuracy", action="store_true", help="speed only")
    args = parser.parse_args()
    import openvino as ov

    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; model {args.model}; openvino {ov.__version__}")
    data = fer_splits(args.fer2013)
    model = load_model(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        sha, test = sha256_file(args.model), data["test"]
        # the copies the project makes (runtime.convert): fp32, and INT8 as bundle/evaluate make it
        fp32 = ov.Core().read_model(convert(model, f"{tmp}/fp32", sha, test.images[:256], "PublicTest faces"))
        int8 = ov.Core().read_model(convert(model, f"{tmp}/int8", sha, test.images, "PublicTest faces",
                                            data["val"].images[:CALIBRATION_FACES]))
        runtimes = {"keras": Classifier.from_keras(model).predict, "openvino fp32": _compile(fp32, 0),
                    "openvino int8": _compile(int8, 0), "openvino int8 1 thread": _compile(int8, 1)}
        bf16 = ov.Core().compile_model(fp32, "CPU", {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "bf16"})
        runtimes["openvino bf16"] = lambda batch: np.array(bf16(batch)[0])
        print(f"PublicTest {len(test)} faces with the mirror view (flip); INT8 calibrated on {CALIBRATION_FACES} "
              "validation faces + mirrors")
        reference = None
        for name, predict in runtimes.items() if not args.no_accuracy else ():
            probe = predict(test.images[:512, ..., None].astype(np.float32))
            reference = probe if reference is None else reference
            print(f"  {name:<14} accuracy {accuracy(predict, test.images, test.labels):.4f}   "
                  f"max |p - keras| on 512 faces {np.abs(probe - reference).max():.1e}")
        rng = np.random.default_rng(0)
        for n in (6, 256):
            batch = test.images[rng.choice(len(test), n)].astype(np.float32)[..., None]
            rates: dict[str, list[float]] = {name: [] for name in runtimes}
            for predict in runtimes.values():
                predict(batch)  # warm-up
            for _ in range(5):
                for name, predict in runtimes.items():
                    count, start = 0, time.perf_counter()
                    while time.perf_counter() - start < args.seconds:
                        predict(batch)
                        count += 1
                    rates[name].append(count * n / (time.perf_counter() - start))
            keras_rate = float(np.median(rates["keras"]))
            for name, values in rates.items():
                rate = float(np.median(values))
                print(f"  batch {n:>3} views  {name:<14} {rate:7.0f} views/s  ({rate / keras_rate:.2f}x keras)")


if __name__ == "__main__":
    main()
