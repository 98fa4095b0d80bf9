"""The YuNet network on three runtimes: what shipping its ONNX file would buy (issue 42's lever (a)).

    python -m bench.yunet_runtimes [--model ../shared/models/face_detection_yunet_2023mar.onnx]
                                   [--sizes 640x480,1280x720] [--runs 40]

Per frame size, the median milliseconds of the product's three detectors on the same gray frame
(``locate_faces``' input), with the ``yunet`` calibration (score 0.4) and each runtime's default threads:

- ``yuface``: the default detector (YuNet-s compiled into the wheel);
- ``opencv``: ``cv2.FaceDetectorYN`` on the ONNX file (the ``yunet`` detector without OpenVINO);
- ``openvino``: the ``yunet`` detector (the file's network on OpenVINO, one dynamic-shape compiled
  model, then ``detection.decode_yunet``);

and of the network's forward pass alone, compiled for this one frame size: ``opencv net``
(``cv2.dnn``) and ``openvino net`` (with the time that compiling for this size took). The last column
counts the faces each detector finds and the largest box difference, in pixels, between the
OpenCV and OpenVINO detectors. The frame is ../shared/media/messi5.jpg resized.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import cv2
import numpy as np

from bench.serving_common import SHARED, machine_note
from emotion_recognition.detection import DetectionConfig, YuFaceDetector, YuNetOpenCVDetector, YuNetOpenVINODetector
from emotion_recognition.preprocessing import to_grayscale


def median_ms(call, runs: int) -> float:
    call()  # warm-up (first-call allocation, kernel choice)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=SHARED / "models" / "face_detection_yunet_2023mar.onnx")
    parser.add_argument("--sizes", default="640x480,1280x720")
    parser.add_argument("--runs", type=int, default=40)
    args = parser.parse_args()
    import openvino as ov

    photo = cv2.imread(str(SHARED / "media" / "messi5.jpg"))
    config = DetectionConfig(detector="yunet", yunet_model=str(args.model))
    # the product's detectors, on the gray frame locate_faces gives them
    detectors = {"yuface": YuFaceDetector(), "opencv": YuNetOpenCVDetector(), "openvino": YuNetOpenVINODetector()}
    start = time.perf_counter()
    detectors["openvino"].detect(np.zeros((64, 64), np.uint8), config)
    print(machine_note())
    print(f"yunet on OpenVINO: file read, checked and compiled once for every frame size (dynamic shape): "
          f"{(time.perf_counter() - start) * 1000:.0f} ms")
    print(f"{'size':>9} | {'yuface':>7} | {'opencv':>7} | {'openvino':>8} | {'opencv net':>10} | {'openvino net':>12} | "
          f"compile for this size | faces yuface/opencv/openvino, largest box difference")
    for size in args.sizes.split(","):
        width, height = map(int, size.split("x"))
        gray = to_grayscale(cv2.cvtColor(cv2.resize(photo, (width, height), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB))
        # the network alone, compiled for this one size: NCHW float32 BGR 0-255, padded to multiples of 32
        bgr = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
        blob = cv2.dnn.blobFromImage(cv2.copyMakeBorder(bgr, 0, -height % 32, 0, -width % 32, cv2.BORDER_CONSTANT))
        net = cv2.dnn.readNet(str(args.model))
        compile_start = time.perf_counter()
        model = ov.Core().read_model(args.model)
        model.reshape(list(blob.shape))
        request = ov.Core().compile_model(model, "CPU").create_infer_request()
        compile_ms = (time.perf_counter() - compile_start) * 1000

        def opencv_net() -> None:
            net.setInput(blob)
            net.forward(net.getUnconnectedOutLayersNames())

        found = {name: detector.detect(gray, config) for name, detector in detectors.items()}
        times = {name: median_ms(lambda d=detector: d.detect(gray, config), args.runs) for name, detector in detectors.items()}
        times.update({"opencv net": median_ms(opencv_net, args.runs),
                      "openvino net": median_ms(lambda: request.infer({0: blob}), args.runs)})
        # each OpenCV face against its nearest OpenVINO face (scores may tie, so no order is assumed)
        difference = max((min(max(abs(a.x - b.x), abs(a.y - b.y), abs(a.w - b.w), abs(a.h - b.h)) for a in found["openvino"])
                          for b in found["opencv"]), default=0)
        print(f"{size:>9} | {times['yuface']:7.1f} | {times['opencv']:7.1f} | {times['openvino']:8.1f} | "
              f"{times['opencv net']:10.1f} | {times['openvino net']:12.1f} | {compile_ms:.0f} ms | "
              + "/".join(str(len(found[name])) for name in detectors) + f", {difference} px")


if __name__ == "__main__":
    main()
