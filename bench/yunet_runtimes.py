"""The YuNet network on three runtimes: what shipping its ONNX file would buy (issue 42's lever (a)).

    python -m bench.yunet_runtimes [--model ../shared/models/face_detection_yunet_2023mar.onnx]
                                   [--sizes 640x480,1280x720] [--runs 40]

Per frame size, the median milliseconds of:

- ``yuface``: the default detector (YuNet-s compiled into the wheel), whole detection;
- ``opencv``: ``cv2.FaceDetectorYN`` on the ONNX file (the ``yunet`` detector), whole detection;
- ``opencv net``: the same network's forward pass alone through ``cv2.dnn`` (no decoding or NMS);
- ``openvino net``: the forward pass alone through OpenVINO (``openvino.Core().read_model`` of the
  ONNX file, reshaped to the frame, compiled for the CPU);
- ``openvino``: that forward pass plus FaceDetectorYN's decoding (``decode`` below, numpy) and NMS
  (``cv2.dnn.NMSBoxes``): a whole detection, checked against ``opencv``'s boxes (largest corner
  difference in pixels).

The frame is ../shared/media/messi5.jpg resized; the same frame goes to every runtime, with each
runtime's default threads.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import cv2
import numpy as np

from bench.serving_common import SHARED, machine_note


STRIDES = (8, 16, 32)


def decode(outputs: dict, width: int, height: int, score_threshold: float = 0.4, nms_threshold: float = 0.3):
    """YuNet's 12 outputs (cls/obj/bbox/kps per stride) -> (N, 15) rows as FaceDetectorYN returns
    them: x, y, w, h, 10 landmark coordinates, score (OpenCV's face_detect.cpp, in numpy)."""
    rows = []
    for stride in STRIDES:
        cols = -(-width // 32) * 32 // stride
        cls, obj = (np.clip(outputs[f"{k}_{stride}"].reshape(-1), 0, 1) for k in ("cls", "obj"))
        bbox, kps = outputs[f"bbox_{stride}"].reshape(-1, 4), outputs[f"kps_{stride}"].reshape(-1, 10)
        score = np.sqrt(cls * obj)
        keep = np.flatnonzero(score >= score_threshold)
        c, r = (keep % cols).astype(np.float32), (keep // cols).astype(np.float32)
        w, h = np.exp(bbox[keep, 2]) * stride, np.exp(bbox[keep, 3]) * stride
        x, y = (c + bbox[keep, 0]) * stride - w / 2, (r + bbox[keep, 1]) * stride - h / 2
        points = (kps[keep].reshape(-1, 5, 2) + np.stack([c, r], axis=1)[:, None, :]) * stride
        rows.append(np.column_stack([x, y, w, h, points.reshape(-1, 10), score[keep]]))
    rows = np.concatenate(rows)
    keep = cv2.dnn.NMSBoxes(rows[:, :4].tolist(), rows[:, 14].tolist(), score_threshold, nms_threshold, top_k=5000)
    return rows[np.asarray(keep, dtype=int).reshape(-1)]


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
    import yuface

    photo = cv2.imread(str(SHARED / "media" / "messi5.jpg"))
    core = ov.Core()
    print(machine_note())
    print(f"{'size':>9} | {'yuface':>7} | {'opencv':>7} | {'opencv net':>10} | {'openvino net':>12} | "
          f"{'openvino':>8} | faces yuface/opencv/openvino, largest box difference")
    for size in args.sizes.split(","):
        width, height = map(int, size.split("x"))
        bgr = cv2.resize(photo, (width, height), interpolation=cv2.INTER_AREA)
        detector = cv2.FaceDetectorYN.create(str(args.model), "", (width, height), 0.4, 0.3, 5000)
        net = cv2.dnn.readNet(str(args.model))
        # NCHW float32 BGR, no scaling, padded to multiples of 32: what FaceDetectorYN feeds the network
        padded = cv2.copyMakeBorder(bgr, 0, -height % 32, 0, -width % 32, cv2.BORDER_CONSTANT)
        blob = cv2.dnn.blobFromImage(padded)
        model = core.read_model(args.model)
        model.reshape(list(blob.shape))
        compiled = core.compile_model(model, "CPU")
        request = compiled.create_infer_request()
        names = [f"{kind}_{stride}" for kind in ("cls", "obj", "bbox", "kps") for stride in STRIDES]
        assert [set(o.get_names()) for o in model.outputs] == [{name} for name in names], "not YuNet 2023mar's outputs"

        def openvino() -> np.ndarray:
            request.infer({0: blob})
            return decode({name: request.get_output_tensor(i).data for i, name in enumerate(names)}, width, height)

        def opencv_net() -> None:
            net.setInput(blob)
            net.forward(net.getUnconnectedOutLayersNames())

        times = {
            "yuface": median_ms(lambda: yuface.c_detect(bgr), args.runs),
            "opencv": median_ms(lambda: detector.detect(bgr), args.runs),
            "opencv net": median_ms(opencv_net, args.runs),
            "openvino net": median_ms(lambda: request.infer({0: blob}), args.runs),
            "openvino": median_ms(openvino, args.runs),
        }
        yuface_faces = sum(1 for row in np.asarray(yuface.c_detect(bgr)).reshape(-1, 16) if row[0] >= 40)
        reference = detector.detect(bgr)[1]
        reference, ours = np.zeros((0, 15)) if reference is None else reference, openvino()
        # each reference face against its nearest OpenVINO face (scores may tie, so no order is assumed)
        difference = max((float(np.abs(ours[:, :4] - row[:4]).max(axis=1).min()) for row in reference), default=0.0)
        print(f"{size:>9} | {times['yuface']:7.1f} | {times['opencv']:7.1f} | {times['opencv net']:10.1f} | "
              f"{times['openvino net']:12.1f} | {times['openvino']:8.1f} | "
              f"{yuface_faces}/{len(reference)}/{len(ours)}, {difference:.2f} px")


if __name__ == "__main__":
    main()
