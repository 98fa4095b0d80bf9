"""`emotion batch` throughput: photos/s and faces/s, local workers and Ray, on the detection
benchmark's photos (bench/detection_benchmark.py: FER2013 PublicTest faces pasted on backgrounds).

Usage (from the repository root, PYTHONPATH=.):

    python -m bench.batch_throughput --photos 60 --workers 1,2 [--ray-address HOST:PORT]

Writes the photos (JPEG) into --dir once, then times each whole `emotion batch` command (model
loading and worker start-up included) and prints photos/s and faces/s from its wall time. With
--ray-address it also runs `--engine ray` against that cluster with each worker count.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import pandas as pd

from bench.detection_benchmark import SHARED, make_photos, read_zip_faces, real_backgrounds


def write_photos(folder: Path, count: int, seed: int) -> None:
    if len(list(folder.glob("*.jpg"))) == count:
        return
    folder.mkdir(parents=True, exist_ok=True)
    photos = make_photos(read_zip_faces(SHARED / "data" / "fer2013.zip", "test", 100_000), count, seed,
                         real_backgrounds())
    for i, photo in enumerate(photos):
        cv2.imwrite(str(folder / f"photo{i:04d}.jpg"), photo.image[:, :, ::-1])


def run(folder: Path, workers: int, extra: list[str]) -> tuple[float, int, int]:
    out = Path(tempfile.mkdtemp(prefix="batch-bench-")) / "r.parquet"
    command = [sys.executable, "-m", "emotion_recognition.cli", "batch", str(folder), "-o", str(out),
               "--workers", str(workers), "--quiet", *extra]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    return seconds, len(pd.read_parquet(out)), len(pd.read_parquet(str(out).replace(".parquet", ".files.parquet")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "emotion-batch-bench")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--ray-address", help="also time --engine ray on this cluster")
    args = parser.parse_args()
    write_photos(args.dir, args.photos, args.seed)
    engines = [("local", [])] + ([("ray", ["--engine", "ray", "--ray-address", args.ray_address])]
                                 if args.ray_address else [])
    print(f"{args.photos} photos in {args.dir}; {os.cpu_count()} cores")
    print("| engine | workers | seconds | photos/s | faces/s |\n| --- | --- | --- | --- | --- |")
    for engine, extra in engines:
        for workers in map(int, args.workers.split(",")):
            seconds, faces, files = run(args.dir, workers, extra)
            print(f"| {engine} | {workers} | {seconds:.1f} | {files / seconds:.2f} | {faces / seconds:.2f} |")


if __name__ == "__main__":
    main()
