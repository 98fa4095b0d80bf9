"""Cold start of `bentoml serve`: seconds from launching the process until /readyz answers 200,
and until the first /analyze of the 3-face frame has returned.

    python -m bench.serving_cold_start [--model PATH] [--runs 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bench.serving_common import bentoml_server, import_into, machine_note, model_file, temp_home, three_face_frame


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(machine_note())
    import httpx

    from emotion_recognition.media import encode_image

    jpeg = encode_image(three_face_frame(), "jpg", 90)
    ready, first = [], []
    with temp_home() as home:
        model, described = model_file(args.model, home)
        print(f"model: {described}")
        import_into(home, model)
        for run in range(args.runs):
            start = time.perf_counter()
            with bentoml_server(home) as (url, seconds_ready):
                response = httpx.post(f"{url}/analyze", files={"image": ("f.jpg", jpeg)}, timeout=120)
                seconds_first = time.perf_counter() - start
                assert response.status_code == 200 and len(response.json()) == 3
            ready.append(seconds_ready)
            first.append(seconds_first)
            print(f"run {run + 1}: ready after {seconds_ready:.2f} s, first /analyze answered after {seconds_first:.2f} s")
    print(f"cold start: ready median {np.median(ready):.2f} s (min {min(ready):.2f}, max {max(ready):.2f}); "
          f"first answer median {np.median(first):.2f} s")


if __name__ == "__main__":
    main()
