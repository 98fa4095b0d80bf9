"""How much smoothing steadies the labels of tracked faces in a real video.

    python -m bench.label_flicker [--video ../shared/media/Megamind.avi] [--model PATH] [--tta flip]
                                  [--smooth 1,3,5,10]

Every frame of the video goes through the detector and the model once (the bundled model unless
--model; the service's and the CLI's default test-time views, flip); the per-face results are then replayed through
``FaceTracker`` with each ``smooth_frames`` value (tracking does not depend on smoothing). For
each value it prints: tracks started; label changes per 100 consecutive observations of the
same track (flicker); and the share of faces whose smoothed label equals their own per-frame
label. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def label_stats(per_frame, smooth_frames: int) -> dict[str, float]:
    from emotion_recognition.face_tracking import FaceTracker

    tracker = FaceTracker(smooth_frames=smooth_frames)
    last: dict[int, str] = {}
    pairs = changes = faces = agree = 0
    for results in per_frame:
        for raw, tracked in zip(results, tracker.update(results)):
            faces += 1
            agree += tracked.result.emotion == raw.emotion
            previous = last.get(tracked.track_id)
            if previous is not None:
                pairs += 1
                changes += previous != tracked.result.emotion
            last[tracked.track_id] = tracked.result.emotion
    return {
        "tracks": tracker.tracks_started,
        "faces": faces,
        "changes_per_100": 100 * changes / max(pairs, 1),
        "agree_pct": 100 * agree / max(faces, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--video", default=str(REPO.parent / "shared" / "media" / "Megamind.avi"))
    parser.add_argument("--model", help="a .keras file (default: the bundled model)")
    parser.add_argument("--tta", default="flip", help="test-time views (emotion_recognition.tta presets)")
    parser.add_argument("--smooth", default="1,3,5,10")
    args = parser.parse_args()
    from emotion_recognition.inference import EmotionRecognizer
    from emotion_recognition.media import iter_video_frames
    from emotion_recognition.model_files import resolve_model_file
    from emotion_recognition.tta import from_preset

    source = resolve_model_file(args.model)
    recognizer = EmotionRecognizer.from_file(source.path, tta=from_preset(args.tta))
    per_frame = []
    frames = list(iter_video_frames(args.video))
    for start in range(0, len(frames), 16):
        per_frame.extend(recognizer.analyze_frames([f.rgb for f in frames[start : start + 16]]))
    print(f"{Path(args.video).name}: {len(frames)} frames, model {source.path.relative_to(REPO) if source.path.is_relative_to(REPO) else source.path}, "
          f"detector {recognizer.detection.detector}, views {recognizer.tta.describe()}\n")
    print("| smooth_frames | tracks | faces | label changes per 100 steps | same label as the frame's own |")
    print("|---|---|---|---|---|")
    for n in (int(v) for v in args.smooth.split(",")):
        s = label_stats(per_frame, n)
        print(f"| {n} | {s['tracks']} | {s['faces']} | {s['changes_per_100']:.1f} | {s['agree_pct']:.1f}% |")


if __name__ == "__main__":
    main()
