"""Time yuface: its OpenMP thread count, and how many frames/s two cores detect at most.

    for t in 1 2 1 2 1 2; do OMP_NUM_THREADS=$t /usr/bin/time -f "$t threads: %e s wall, %U+%S s cpu" \\
        python -m bench.yuface_threads; done
    for t in 1 2; do OMP_NUM_THREADS=$t python -m bench.yuface_threads --size 640x480 --streams 1,2; done

Each run: ``locate_faces`` (yuface, default settings) on messi5.jpg resized to 1280x720 and to
640x480, ``--repeat`` times each, after one warm-up call. With ``--streams``, only ``--size``, from
that many Python threads at once (as the service's worker threads call it); prints ms per frame
and frames/s for each count: the ceiling detection puts on a service's requests/s.
"""

import argparse
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2

from emotion_recognition.detection import DetectionConfig, locate_faces

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--repeat", type=int, default=15)
parser.add_argument("--image", default=str(Path(__file__).resolve().parents[2] / "shared" / "media" / "messi5.jpg"))
parser.add_argument("--streams", default="", help="comma-separated thread counts, e.g. 1,2 (default: one pass, no timing)")
parser.add_argument("--size", default="640x480", help="WxH for --streams")
args = parser.parse_args()
config = DetectionConfig(detector="yuface")
photo = cv2.cvtColor(cv2.imread(args.image), cv2.COLOR_BGR2RGB)
if not args.streams:
    images = [cv2.resize(photo, (1280, 720)), cv2.resize(photo, (640, 480))]
    locate_faces(images[0], config)
    for _ in range(args.repeat):
        for image in images:
            locate_faces(image, config)
else:
    width, height = (int(v) for v in args.size.split("x"))
    image = cv2.resize(photo, (width, height))
    locate_faces(image, config)
    frames = 4 * args.repeat
    for streams in (int(s) for s in args.streams.split(",")):
        with ThreadPoolExecutor(streams) as pool:
            start = time.perf_counter()
            list(pool.map(lambda _: locate_faces(image, config), range(frames)))
            seconds = time.perf_counter() - start
        print(f"{width}x{height}, {streams} stream(s): {1000 * seconds / frames:.1f} ms per frame, "
              f"{frames / seconds:.1f} frames/s", flush=True)
