"""Throughput and tail latency of `bentoml serve` for 1 and 16 concurrent clients.

    python -m bench.serving_throughput [--model PATH] [--requests 200] [--clients 1,16]

Each client sends the 640x480 3-face frame (JPEG) to ``POST /analyze`` in a loop, one request at
a time; every run sends ``--requests`` requests in total (bounded) and counts non-200 answers as
errors. Faces from concurrent requests are classified together by the adaptive-batching
``classify`` API.
"""

from __future__ import annotations

import argparse
import threading
import time

from bench.serving_common import bentoml_server, import_into, machine_note, model_file, percentiles, temp_home, three_face_frame


def run(url: str, jpeg: bytes, clients: int, total: int) -> None:
    import httpx

    latencies: list[float] = []
    errors = 0
    first_error: list[str] = []
    lock = threading.Lock()
    remaining = [total]

    def client_loop() -> None:
        nonlocal errors
        with httpx.Client(base_url=url, timeout=120) as client:
            while True:
                with lock:
                    if remaining[0] == 0:
                        return
                    remaining[0] -= 1
                start = time.perf_counter()
                try:
                    response = client.post("/analyze", files={"image": ("f.jpg", jpeg)})
                    ok = response.status_code == 200 and len(response.json()) == 3
                    problem = "" if ok else f"{response.status_code} {response.text[:300]}"
                except httpx.HTTPError as error:
                    ok, problem = False, repr(error)
                if problem and not first_error:
                    first_error.append(problem)
                elapsed = time.perf_counter() - start
                with lock:
                    latencies.append(elapsed)
                    errors += not ok

    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    print(f"{clients:>2} client(s): {total / wall:6.1f} req/s, {percentiles(latencies)}, errors {errors}/{total}")
    if first_error:
        print(f"   first error: {first_error[0]}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", default="1,16")
    parser.add_argument("--env", action="append", default=[], metavar="EMOTION_X=VALUE",
                        help="a serving setting for the server (repeatable)")
    args = parser.parse_args()
    env = dict(item.split("=", 1) for item in args.env)
    if env:
        print(f"server settings: {env}")
    print(machine_note())
    from emotion_recognition.media import encode_image

    jpeg = encode_image(three_face_frame(), "jpg", 90)
    with temp_home() as home:
        model, described = model_file(args.model, home)
        print(f"model: {described}")
        import_into(home, model)
        with bentoml_server(home, env=env) as (url, _):
            run(url, jpeg, 2, 20)  # warm-up
            for clients in [int(c) for c in args.clients.split(",")]:
                run(url, jpeg, clients, args.requests)
            import httpx

            metrics = httpx.get(f"{url}/metrics").text
            sizes = [line for line in metrics.splitlines() if "adaptive_batch_size" in line and "_sum" in line or ("adaptive_batch_size" in line and "_count" in line)]
            for line in sizes:
                print("metrics:", line)


if __name__ == "__main__":
    main()
