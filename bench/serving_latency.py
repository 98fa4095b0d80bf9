"""Latency of one 640x480 frame with 3 faces, detect + classify: in-process and over HTTP.

    python -m bench.serving_latency [--model PATH] [--runs 100] [--tta none,flip,crops]

In-process: ``EmotionRecognizer.analyze(frame)`` once per test-time augmentation preset. HTTP:
``POST /analyze`` (the frame as JPEG) to a ``bentoml serve`` this script starts on a free port,
one request at a time, with the service's default ``EMOTION_TTA`` (flip).
"""

from __future__ import annotations

import argparse
import time

from bench.serving_common import (
    bentoml_server,
    import_into,
    machine_note,
    model_file,
    percentiles,
    temp_home,
    three_face_frame,
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--tta", default="none,flip,crops", help="in-process presets to time")
    args = parser.parse_args()
    print(machine_note())
    frame = three_face_frame()
    with temp_home() as home:
        model, described = model_file(args.model, home)
        print(f"model: {described}")
        from emotion_recognition.detection import detect_faces
        from emotion_recognition.inference import EmotionRecognizer
        from emotion_recognition.media import encode_image

        from emotion_recognition.tta import from_preset

        detect_only = []
        for _ in range(args.runs):
            start = time.perf_counter()
            detect_faces(frame)
            detect_only.append(time.perf_counter() - start)
        print(f"in-process detect only:       {percentiles(detect_only)}")
        for preset in args.tta.split(","):
            recognizer = EmotionRecognizer.from_file(model, tta=from_preset(preset))
            for _ in range(5):
                assert len(recognizer.analyze(frame)) == 3
            full = []
            for _ in range(args.runs):
                start = time.perf_counter()
                recognizer.analyze(frame)
                full.append(time.perf_counter() - start)
            print(f"in-process detect + classify, TTA {preset} ({recognizer.tta.describe()}): {percentiles(full)}")

        import httpx

        jpeg = encode_image(frame, "jpg", 90)
        import_into(home, model)
        with bentoml_server(home) as (url, _):
            with httpx.Client(base_url=url, timeout=60) as client:
                for _ in range(5):
                    assert len(client.post("/analyze", files={"image": ("f.jpg", jpeg)}).json()) == 3
                http = []
                for _ in range(args.runs):
                    start = time.perf_counter()
                    response = client.post("/analyze", files={"image": ("f.jpg", jpeg)})
                    http.append(time.perf_counter() - start)
                    assert response.status_code == 200 and len(response.json()) == 3
        print(f"HTTP POST /analyze (JPEG {len(jpeg) // 1024} KB): {percentiles(http)}")


if __name__ == "__main__":
    main()
