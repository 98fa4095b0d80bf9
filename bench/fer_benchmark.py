"""This project against the peer package `fer` 25.10.3, in one process, on the same inputs.

Install the peer for this benchmark only (it is not a dependency of the product; its own
dependency list would pull other TensorFlow/OpenCV builds, hence --no-deps):

    pip install --no-deps fer==25.10.3 pandas requests

Usage (from the repository root):

    PYTHONPATH=. python -m bench.fer_benchmark [--photos 60] [--crops 0] [--seed 0] [--rounds 3]
        [--fer ../shared/data/fer2013.zip] [--out bench/results/fer.json]

1. Photos: bench/detection_benchmark.py's evaluation photos (same seed: 640x480 and 1280x720,
   2-8 PublicTest faces of 40-250 px pasted on backgrounds). Each side gets the whole photo:
   `fer` through ``FER().detect_emotions(bgr)`` (its defaults: Haar, TFLite model), this project
   through ``EmotionRecognizer.analyze(rgb)`` (its defaults, with the mirror view). Per photo the
   two run one after the other (A B A B), so load drift hits both; ms per photo is the median,
   the time ratio the median of the per-photo ratios.
   Recall: faces matched at IoU >= 0.3 to the square each face was pasted into; end to end:
   matched faces with the right label / all faces.
2. Crops, box given: PublicTest faces (48x48). `fer` through its public
   ``detect_emotions(image, face_rectangles=[box])``, one call per face (its API takes one image);
   it widens the box by 10 px a side, so it is given (10, 10, 28, 28) and crops exactly the 48x48
   face. This project through ``EmotionRecognizer.classify_faces(faces)`` (many faces at once,
   face + mirror). Faces/s per side over ``--rounds`` alternating rounds (median); accuracy.

Times are in-process wall times (time.perf_counter) and are only comparable within one run:
the report gives them as ratios and records the CPU model, its vector flags and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np

from bench.detection_benchmark import SHARED, SIZES, make_photos, match, real_backgrounds
from emotion_recognition.detection import Box
from emotion_recognition.inference import EmotionRecognizer
from emotion_recognition.labels import EMOTIONS
from emotion_recognition.model_files import BUNDLED_MODEL
from emotion_recognition.tta import from_preset
from tests.testkit import read_zip_faces

FER_BOX = (10, 10, 28, 28)  # fer adds 10 px a side: its crop is then the whole 48x48 face


def publictest(zip_path: str, limit: int) -> list[tuple[str, str, np.ndarray]]:
    """Every PublicTest face (name order), or the first ``limit``: (name, label, 48x48 uint8)."""
    with zipfile.ZipFile(zip_path) as archive:
        names = sorted(n for n in archive.namelist() if n.startswith("test/") and n.endswith(".jpg"))[: limit or None]
        return [(n, n.split("/")[1], cv2.imdecode(np.frombuffer(archive.read(n), np.uint8), cv2.IMREAD_GRAYSCALE))
                for n in names]


def load_fer():
    try:
        from fer.fer import FER
    except ImportError as error:
        raise SystemExit(f"fer is not installed ({error}): pip install --no-deps fer==25.10.3 pandas requests") from None
    return FER()


def fer_label(result: dict) -> str:
    return max(result["emotions"], key=result["emotions"].get)


def cpu() -> dict:
    info = dict(line.split(":", 1) for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines() if ":" in line)
    flags = info.get("Flags", "").split()
    return {"model": info.get("Model name", platform.processor()).strip(), "cores": os.cpu_count(),
            "vector_flags": [f for f in flags if f.startswith(("avx", "amx")) or f in ("fma", "f16c")]}


def photos_part(photos, peer, ours: EmotionRecognizer) -> dict:
    ours.analyze(photos[0].image), peer.detect_emotions(photos[0].image[:, :, ::-1].copy())  # warm-up
    times = {"fer": {size: [] for size in SIZES}, "ours": {size: [] for size in SIZES}}
    found = {"fer": [], "ours": []}
    for photo in photos:
        size = (photo.image.shape[1], photo.image.shape[0])
        bgr = photo.image[:, :, ::-1].copy()  # fer takes OpenCV's BGR, this project RGB
        start = time.perf_counter()
        theirs = peer.detect_emotions(bgr)
        times["fer"][size].append(time.perf_counter() - start)
        start = time.perf_counter()
        mine = ours.analyze(photo.image)
        times["ours"][size].append(time.perf_counter() - start)
        found["fer"].append([(Box(*map(int, r["box"])), fer_label(r)) for r in theirs])
        found["ours"].append([(r.box, r.emotion) for r in mine])
    n_faces = sum(len(p.faces) for p in photos)
    out = {"photos": len(photos), "faces": n_faces}
    for side in ("fer", "ours"):
        hits = right = 0
        for photo, results in zip(photos, found[side]):
            pairs = match([f.box for f in photo.faces], [b for b, _ in results], 0.3)
            hits += len(pairs)
            right += sum(results[j][1] == photo.faces[i].label for i, j in pairs)
        out[side] = {"recall@0.3": round(hits / n_faces, 4), "end_to_end": round(right / n_faces, 4),
                     **{f"ms_{w}x{h}": round(1000 * float(np.median(t)), 1) for (w, h), t in times[side].items()},
                     "ms_all": round(1000 * float(np.median([x for t in times[side].values() for x in t])), 1)}
    # per photo: our time / fer's on that photo (run back to back), median per size and overall
    ratios = {size: np.array(times["ours"][size]) / np.array(times["fer"][size]) for size in SIZES}
    out["time_ratio_ours_over_fer"] = {**{f"ms_{w}x{h}": round(float(np.median(r)), 2) for (w, h), r in ratios.items()},
                                       "ms_all": round(float(np.median(np.concatenate(list(ratios.values())))), 2)}
    return out


def crops_part(fer_faces, peer, ours: EmotionRecognizer, rounds: int) -> dict:
    labels = [label for _, label, _ in fer_faces]
    gray = np.stack([face for _, _, face in fer_faces])
    bgr = [cv2.cvtColor(face, cv2.COLOR_GRAY2BGR) for face in gray]
    ours.classify_faces(gray[:8]), peer.detect_emotions(bgr[0], face_rectangles=[FER_BOX])  # warm-up
    rates = {"fer": [], "ours": []}
    for _ in range(rounds):
        start = time.perf_counter()
        theirs = [peer.detect_emotions(image, face_rectangles=[FER_BOX]) for image in bgr]
        rates["fer"].append(len(bgr) / (time.perf_counter() - start))
        start = time.perf_counter()
        probabilities = ours.classify_faces(gray)
        rates["ours"].append(len(gray) / (time.perf_counter() - start))
    fer_right = sum(fer_label(r[0]) == label for r, label in zip(theirs, labels) if r)
    our_right = sum(EMOTIONS[int(i)] == label for i, label in zip(np.argmax(probabilities, axis=1), labels))
    out = {"faces": len(labels),
           "fer": {"accuracy": round(fer_right / len(labels), 4), "faces_per_s": [round(r) for r in rates["fer"]]},
           "ours": {"accuracy": round(our_right / len(labels), 4), "faces_per_s": [round(r) for r in rates["ours"]]}}
    out["speed_ratio_ours_over_fer"] = round(float(np.median(np.array(rates["ours"]) / np.array(rates["fer"]))), 2)
    return out


def table(report: dict) -> str:
    p, c = report["photos"], report["crops"]
    pct = lambda v: f"{100 * v:.1f}%"  # noqa: E731
    rows = [
        "| same run, same process | `fer` 25.10.3 | this project | ratio (this / fer) |", "|---|---|---|---|",
        f"| photos ({p['photos']}, {p['faces']} faces of 40-250 px): faces found (IoU 0.3) | {pct(p['fer']['recall@0.3'])} | {pct(p['ours']['recall@0.3'])} | |",
        f"| same: faces found with the right emotion (end to end) | {pct(p['fer']['end_to_end'])} | {pct(p['ours']['end_to_end'])} | {p['ours']['end_to_end'] / p['fer']['end_to_end']:.2f} |",
    ]
    for key in ("ms_640x480", "ms_1280x720", "ms_all"):
        name = "all photos" if key == "ms_all" else key[3:]
        rows.append(f"| same: ms per photo, median, {name} | {p['fer'][key]} | {p['ours'][key]} | {p['time_ratio_ours_over_fer'][key]} (median per-photo ratio) |")
    rows += [
        f"| PublicTest crops, box given ({c['faces']}): accuracy | {pct(c['fer']['accuracy'])} (one view) | {pct(c['ours']['accuracy'])} (face + mirror) | |",
        f"| same: faces per second ({len(c['fer']['faces_per_s'])} alternating rounds) | {', '.join(map(str, c['fer']['faces_per_s']))} | "
        f"{', '.join(map(str, c['ours']['faces_per_s']))} | {c['speed_ratio_ours_over_fer']} (median of per-round ratios) |",
    ]
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=60)
    parser.add_argument("--crops", type=int, default=0, help="PublicTest faces for part 2 (0: all)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fer", default=str(SHARED / "data" / "fer2013.zip"))
    parser.add_argument("--model", default=str(BUNDLED_MODEL))
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "fer.json"))
    parser.add_argument("--table", metavar="RESULTS_JSON", help="print the markdown table of a results file and exit")
    args = parser.parse_args()
    if args.table:
        print(table(json.loads(Path(args.table).read_text())))
        return
    peer = load_fer()
    ours = EmotionRecognizer.from_file(args.model, tta=from_preset("flip"))  # face + mirror: the service default
    fer_faces = read_zip_faces(args.fer, split="test", limit=100_000)
    photos = make_photos(fer_faces, args.photos, args.seed, real_backgrounds())
    report = {"command": f"python -m bench.fer_benchmark --photos {args.photos} --crops {args.crops} "
                         f"--rounds {args.rounds} --seed {args.seed}",
              "cpu": cpu(), "load_average_before": open("/proc/loadavg").read().split()[:3]}
    report["photos"] = photos_part(photos, peer, ours)
    print(json.dumps(report["photos"]), flush=True)
    report["crops"] = crops_part(publictest(args.fer, args.crops), peer, ours, args.rounds)
    report["load_average_after"] = open("/proc/loadavg").read().split()[:3]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(table(report))


if __name__ == "__main__":
    main()
