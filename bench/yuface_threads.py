"""Time yuface's OpenMP thread count: run it once per OMP_NUM_THREADS value and compare.

    for t in 1 2 1 2 1 2; do OMP_NUM_THREADS=$t /usr/bin/time -f "$t threads: %e s wall, %U+%S s cpu" \\
        python bench/yuface_threads.py; done

Each run: ``locate_faces`` (yuface, default settings) on messi5.jpg resized to 1280x720 and to
640x480, ``--repeat`` times each, after one warm-up call.
"""

import argparse
from pathlib import Path

import cv2

from emotion_recognition.detection import DetectionConfig, locate_faces

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--repeat", type=int, default=15)
parser.add_argument("--image", default=str(Path(__file__).resolve().parents[2] / "shared" / "media" / "messi5.jpg"))
args = parser.parse_args()
config = DetectionConfig(detector="yuface")
photo = cv2.cvtColor(cv2.imread(args.image), cv2.COLOR_BGR2RGB)
images = [cv2.resize(photo, (1280, 720)), cv2.resize(photo, (640, 480))]
locate_faces(images[0], config)
for _ in range(args.repeat):
    for image in images:
        locate_faces(image, config)
