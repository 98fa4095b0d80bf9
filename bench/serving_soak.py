"""Soak: `bentoml serve` under steady load for N minutes; errors and resident memory over time.

    python -m bench.serving_soak [--minutes 10] [--clients 16] [--warmup 60] [--model PATH]

``--clients`` threads send the 640x480 3-face frame (JPEG) to ``POST /analyze`` in a loop for
``--minutes``; any answer other than 200 with 3 faces is an error. Every 5 s the resident memory
(RSS) of the server's process tree (BentoML's supervisor and workers) is sampled from
/proc. Memory growth is measured from the end of the ``--warmup`` seconds (model loading, TF
graph tracing and allocator pools settle there) to the end of the run. The server serves the
bundled model with no import step (as `make serve` does) unless ``--model`` is given.
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

from bench.serving_common import (
    REPO_ROOT,
    free_port,
    import_into,
    machine_note,
    percentiles,
    start_bentoml_serve,
    stop_process_group,
    temp_home,
    three_face_frame,
    wait_ready,
)


def tree_rss_mb(root: int) -> float:
    """Summed VmRSS of process ``root`` and all its descendants (BentoML's workers) in MB."""
    parents: dict[int, int] = {}
    rss_kb: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss_kb[int(entry.name)] = int(line.split()[1])
        except (OSError, ValueError, IndexError):
            continue  # the process ended while we looked
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in tree]
        tree.update(children)
        frontier.extend(children)
    return sum(rss_kb.get(pid, 0) for pid in tree) / 1024


def soak(url: str, root: int, jpeg: bytes, clients: int, seconds: float, warmup: float) -> None:
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    start = time.perf_counter()
    deadline = start + seconds
    samples: list[tuple[float, float]] = []

    def client_loop() -> None:
        with httpx.Client(base_url=url, timeout=120) as client:
            while time.perf_counter() < deadline:
                began = time.perf_counter()
                try:
                    response = client.post("/analyze", files={"image": ("f.jpg", jpeg)})
                    problem = "" if response.status_code == 200 and len(response.json()) == 3 else \
                        f"{response.status_code} {response.text[:200]}"
                except httpx.HTTPError as error:
                    problem = repr(error)
                with lock:
                    if began - start >= warmup:
                        latencies.append(time.perf_counter() - began)
                    if problem:
                        errors.append(problem)

    threads = [threading.Thread(target=client_loop, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    while time.perf_counter() < deadline:
        samples.append((time.perf_counter() - start, tree_rss_mb(root)))
        time.sleep(5)
    for t in threads:
        t.join()
    samples.append((time.perf_counter() - start, tree_rss_mb(root)))
    measured = seconds - warmup
    after_warmup = [rss for t, rss in samples if t >= warmup]
    base, end, peak = after_warmup[0], after_warmup[-1], max(after_warmup)
    print(f"{clients} clients, {seconds / 60:.1f} min ({warmup:.0f} s warm-up): "
          f"{len(latencies) / measured:.1f} req/s after warm-up, {percentiles(latencies)}")
    print(f"errors: {len(errors)} of {len(latencies)}+ requests" + (f"; first: {errors[0]}" if errors else ""))
    print(f"server RSS (process tree): {samples[0][1]:.0f} MB at start, {base:.0f} MB after warm-up, "
          f"{end:.0f} MB at the end, peak {peak:.0f} MB; growth after warm-up {100 * (end - base) / base:+.1f}%")
    print("RSS samples (s, MB): " + ", ".join(f"{t:.0f}:{rss:.0f}" for t, rss in samples[:: max(1, len(samples) // 12)]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--warmup", type=float, default=60)
    parser.add_argument("--model", help="a .keras file to import first (default: the bundled model, no import)")
    args = parser.parse_args()
    print(machine_note())
    from emotion_recognition.media import encode_image

    jpeg = encode_image(three_face_frame(), "jpg", 90)
    with temp_home() as home:
        if args.model:
            import_into(home, Path(args.model))
        port = free_port()
        log = open(home / "serve.log", "w")
        process = start_bentoml_serve(home, port, "serving.service:EmotionService", cwd=REPO_ROOT, stdout=log)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(url, process, timeout=180)
            soak(url, process.pid, jpeg, args.clients, args.minutes * 60, args.warmup)
        finally:
            stop_process_group(process, timeout=20)
            log.close()


if __name__ == "__main__":
    main()
