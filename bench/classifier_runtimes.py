"""The classifier's forward pass on other runtimes: faces/s and agreement with Keras.

    python -m bench.classifier_runtimes [--model PATH] [--batches 6,256] [--seconds 4] [--threads 0,1,2]

Runtimes compared on the same (N, 48, 48, 1) float32 batches (N views: 6 = the 3 faces of the
benchmark frame with their mirrors; 256 = 128 faces with mirrors, the service's batch):

- ``keras``: a traced ``tf.function`` (the service runs OpenVINO: bench/openvino_precision.py);
- ``xla``: the same with ``jit_compile=True``;
- ``tflite``: ``tf.lite`` (no extra dependency), converted from the traced function, float32;
  ``--threads`` sets the interpreter's threads (0: TF's default);
- ``onnxruntime``: converted by tf2onnx (opset 17), when ``tf2onnx`` and ``onnxruntime`` are
  importable (not project dependencies: ``pip install --target DIR tf2onnx==1.17.0
  onnxruntime==1.32.0 onnx==1.23.2 --no-deps`` and put DIR on PYTHONPATH).

Each line: views/s and faces/s (views / 2, the mirror being the service's default), and the max
absolute difference of the probabilities against Keras on real-looking random faces.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import tensorflow as tf

from emotion_recognition.model_files import load_model, bundled_model_path
from emotion_recognition.preprocessing import FACE_SIZE


def timed(predict, batch: np.ndarray, seconds: float) -> float:
    predict(batch)  # warm-up (tracing, compilation, allocation)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        predict(batch)
        count += 1
    return count * len(batch) / (time.perf_counter() - start)


def keras_predict(model, jit: bool):
    forward = tf.function(lambda x: model(x, training=False), jit_compile=jit,
                          input_signature=[tf.TensorSpec((None, FACE_SIZE, FACE_SIZE, 1), tf.float32)])
    return lambda batch: forward(tf.convert_to_tensor(batch)).numpy(), forward


def tflite_predict(forward, model, threads: int):
    converter = tf.lite.TFLiteConverter.from_concrete_functions([forward.get_concrete_function()], model)
    interpreter = tf.lite.Interpreter(model_content=converter.convert(), num_threads=threads or None)
    index_in = interpreter.get_input_details()[0]["index"]
    index_out = interpreter.get_output_details()[0]["index"]
    shape = [None]

    def predict(batch: np.ndarray) -> np.ndarray:
        if shape[0] != batch.shape:
            interpreter.resize_tensor_input(index_in, batch.shape)
            interpreter.allocate_tensors()
            shape[0] = batch.shape
        interpreter.set_tensor(index_in, batch)
        interpreter.invoke()
        return interpreter.get_tensor(index_out).copy()

    return predict


def onnx_predict(model, threads: int):
    import onnxruntime
    import tf2onnx

    spec = (tf.TensorSpec((None, FACE_SIZE, FACE_SIZE, 1), tf.float32, name="faces"),)
    forward = tf.function(lambda x: model(x, training=False), input_signature=list(spec))
    proto, _ = tf2onnx.convert.from_function(forward, input_signature=spec, opset=17)
    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda batch: session.run(None, {name: batch})[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=str(bundled_model_path()))
    parser.add_argument("--batches", default="6,256")
    parser.add_argument("--seconds", type=float, default=4)
    parser.add_argument("--threads", default="0,2")
    args = parser.parse_args()
    import os

    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} (1 min); model {args.model}")
    model = load_model(args.model)
    keras_fn, forward = keras_predict(model, jit=False)
    xla_fn, _ = keras_predict(model, jit=True)
    runtimes = {"keras": keras_fn, "xla": xla_fn}
    for threads in (int(t) for t in args.threads.split(",")):
        runtimes[f"tflite threads={threads or 'default'}"] = tflite_predict(forward, model, threads)
        try:
            runtimes[f"onnxruntime threads={threads or 'default'}"] = onnx_predict(model, threads)
        except ImportError:
            pass
    rng = np.random.default_rng(0)
    for n in (int(b) for b in args.batches.split(",")):
        batch = rng.integers(0, 256, (n, FACE_SIZE, FACE_SIZE, 1)).astype(np.float32)
        reference = keras_fn(batch)
        for name, predict in runtimes.items():
            difference = float(np.abs(predict(batch) - reference).max())
            rate = timed(predict, batch, args.seconds)
            print(f"batch {n:>4} views  {name:<22} {rate:8.0f} views/s = {rate / 2:8.0f} faces/s (with mirror), "
                  f"{1000 * n / rate:7.2f} ms/call, max |diff| vs keras {difference:.1e}")


if __name__ == "__main__":
    main()
