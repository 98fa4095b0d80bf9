"""``emotion``: faces and emotions in a photo, a video or the webcam, locally or via the service.

    emotion photo IN.jpg -o OUT.jpg          # annotated image + OUT.json beside it
    emotion video IN.mp4 -o OUT.mp4          # annotated video + OUT.csv timeline (progress bar);
                                             # faces keep a track id across frames, --smooth N
    emotion webcam [--camera 0]              # live window: every face labelled (#id, smoothed), FPS shown
    emotion batch IN... -o OUT.parquet       # folders/globs/@list.txt of photos and videos -> a row per
                                             # face + OUT.files.parquet; resumable; --engine ray

Options common to all: ``--model PATH`` (a .keras file; default: the bundled model),
``--server URL`` (use a running ``bentoml serve`` instead of a local model), ``--language en|es``,
``--detector auto|yuface|yunet|haar`` (docs/detection.md), ``--min-face-size N`` (smallest face to find;
it sets the resolution the detector runs at). Errors print one line and exit non-zero.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np


from emotion_recognition.face_tracking import MAX_SMOOTH_FRAMES, FaceTracker, track_frames
from emotion_recognition.detection import DetectionConfig, DetectorUnavailable, detector_choices, prepare_detector
from emotion_recognition.inference import FaceResult
from emotion_recognition.labels import TRANSLATIONS
from emotion_recognition.media import VideoLimits, encode_image
from emotion_recognition.preprocessing import IMAGE_SUFFIXES
from emotion_recognition.runtime import RUNTIMES
from emotion_recognition.tta import PRESETS, from_preset

EXIT_ERROR = 1
EXIT_USAGE = 2


class CliError(Exception):
    """A user-facing error: printed as one line, exit code ``code``."""

    def __init__(self, message: str, code: int = EXIT_ERROR):
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------- analysers (local or remote)

# analyze(images) -> one list of faces per image (RGB arrays; a server also takes a photo's file
# bytes, sent as they are: no re-encoding).
Analyzer = Callable[[Sequence[np.ndarray | bytes]], list[list[FaceResult]]]


def local_analyzer(model_path: str | None, detection: DetectionConfig, tta: str = "flip",
                   runtime: str = "openvino") -> Analyzer:
    from emotion_recognition.model_files import ModelNotFoundError, resolve_model_file

    try:
        source = resolve_model_file(model_path)
    except ModelNotFoundError as error:
        raise CliError(str(error)) from None
    try:
        views = from_preset(tta)
    except ValueError as error:
        raise CliError(str(error), EXIT_USAGE) from None
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from emotion_recognition.inference import EmotionRecognizer

    try:
        recognizer = EmotionRecognizer.from_file(source.path, detection, views, runtime=runtime)
    except (ValueError, OSError) as error:
        raise CliError(f"could not load the model {source.path}: {error}") from None

    return recognizer.analyze_frames


def remote_analyzer(url: str, timeout: float = 60.0) -> Analyzer:
    """Analyse through a running emotion service (``bentoml serve``) over HTTP: /analyze_frames."""
    import httpx

    url = url.rstrip("/")
    client = httpx.Client(base_url=url, timeout=timeout)

    def request(method: str, path: str, **options):
        try:
            return client.request(method, path, **options)
        except httpx.HTTPError as error:
            raise CliError(f"could not reach the service at {url}: {error}") from None

    if (status := request("GET", "/readyz", timeout=10).status_code) != 200:
        raise CliError(f"the service at {url} is not ready ({status})")

    def analyze(images: Sequence[np.ndarray | bytes]) -> list[list[FaceResult]]:
        frames = [image if isinstance(image, bytes) else encode_image(image, "jpg", 92) for image in images]
        response = request("POST", "/analyze_frames", files=[("frames", (f"frame{i}", data)) for i, data in enumerate(frames)])
        if response.status_code != 200:
            raise CliError(f"the service at {url} answered {response.status_code}: {_error_text(response)}")
        return [[FaceResult.from_dict(face) for face in faces] for faces in response.json()]

    return analyze


def _error_text(response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    item = body[0] if isinstance(body, list) and body else body
    return str(item.get("error", body)) if isinstance(item, dict) else str(body)


def make_analyzer(args: argparse.Namespace) -> Analyzer:
    if args.server:
        return remote_analyzer(args.server)
    return local_analyzer(args.model, detection_config(args), args.tta, args.runtime)


def detection_config(args: argparse.Namespace) -> DetectionConfig:
    try:
        config = DetectionConfig(detector=args.detector, min_face_size=args.min_face_size)
        prepare_detector(config)
        return config
    except (ValueError, DetectorUnavailable) as error:
        raise CliError(str(error), EXIT_USAGE) from None


# ---------------------------------------------------------------- commands


def cmd_photo(args: argparse.Namespace) -> int:
    from emotion_recognition.drawing import draw_results
    from emotion_recognition.media import atomic_output, read_image, write_image

    source = Path(args.input)
    out = Path(args.output) if args.output else source.with_name(f"{source.stem}_emotions{source.suffix or '.png'}")
    if out.suffix.lower() not in IMAGE_SUFFIXES:
        raise CliError(f"output {out} must end in one of {', '.join(IMAGE_SUFFIXES)}", EXIT_USAGE)
    json_path = out.with_suffix(".json")
    refuse_overwriting(source, out, json_path)
    if not source.is_file():
        raise CliError(f"no image file at {source}")
    image = read_image(source)
    analyze = make_analyzer(args)
    results = analyze([source.read_bytes() if args.server else image])[0]
    write_image(draw_results(image, results, language=args.language), out)
    with atomic_output(json_path) as tmp:
        tmp.write_text(json.dumps({"image": str(source), "faces": [r.to_dict() for r in results]}, indent=2) + "\n")
    print(f"{len(results)} face(s): {', '.join(r.emotion for r in results) or 'none'}")
    print(f"wrote {out} and {json_path}")
    return 0


def cmd_video(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from emotion_recognition.drawing import draw_results
    from emotion_recognition.media import VideoWriter, atomic_output, video_frames
    from emotion_recognition.timeline import timeline_frame, write_timeline_csv

    source = Path(args.input)
    out = Path(args.output) if args.output else source.with_name(f"{source.stem}_emotions.mp4")
    if out.suffix.lower() not in VideoWriter.CODECS:
        raise CliError(f"output {out} must end in .mp4, .webm or .avi", EXIT_USAGE)
    csv_path = out.with_suffix(".csv")
    refuse_overwriting(source, out, csv_path)
    # the frame-size limit always applies; a length budget only if asked (a local file, progress shown)
    limits = VideoLimits(max_decoded_frames=sys.maxsize, max_pixels=args.max_video_pixels or sys.maxsize)
    info, frames = video_frames(source, every=args.every, max_frames=args.max_frames or None, limits=limits)
    analyze = make_analyzer(args)
    total = info.frame_count // args.every if info.frame_count else None
    if args.max_frames and total:
        total = min(total, args.max_frames)
    tracker = FaceTracker(smooth_frames=args.smooth)
    n_frames = n_faces = 0
    # written beside the outputs and renamed onto them at the end: a failure leaves no half-written file
    with atomic_output(out) as tmp_out, atomic_output(csv_path) as tmp_csv, VideoWriter(
        tmp_out, info.fps / args.every, info.width, info.height
    ) as writer, open(tmp_csv, "w", newline="") as f:
        with tqdm(total=total, unit="frame", desc=source.name, disable=args.quiet) as progress:
            for frame, tracked in track_frames(frames, analyze, tracker, args.batch):
                writer.write(draw_results(frame.rgb, [t.result for t in tracked], language=args.language,
                                          track_ids=[t.track_id for t in tracked]))
                write_timeline_csv([timeline_frame(frame.index, frame.time_s, tracked)], f, header=n_frames == 0)
                n_frames, n_faces = n_frames + 1, n_faces + len(tracked)
                progress.update()
    print(f"{n_frames} frame(s), {n_faces} face(s), {tracker.tracks_started} track(s); wrote {out} and {csv_path}")
    return 0


def refuse_overwriting(source: Path, *outputs: Path) -> None:
    """An output naming the input (also via a symlink, a relative path or a hard link) would destroy it."""
    for out in outputs:
        if out.resolve() == source.resolve() or (out.exists() and source.exists() and os.path.samefile(out, source)):
            raise CliError(f"the output {out} is the input file {source}: choose another output name", EXIT_USAGE)


def cmd_batch(args: argparse.Namespace) -> int:
    from concurrent.futures.process import BrokenProcessPool

    from emotion_recognition.batch import BatchSettings, files_table_path, run_local, run_ray
    from emotion_recognition.model_files import ModelNotFoundError, resolve_model_file

    if args.server:
        raise CliError("batch runs the model here or on Ray (--engine ray), not via --server", EXIT_USAGE)
    if args.engine == "local" and not args.output.endswith((".parquet", ".csv")):
        raise CliError(f"output {args.output} must end in .parquet or .csv", EXIT_USAGE)
    detection_config(args)  # an unknown/unavailable detector fails here, not in every worker
    try:
        resolve_model_file(args.model)
    except ModelNotFoundError as error:
        raise CliError(str(error)) from None
    settings = BatchSettings(args.model and str(Path(args.model).resolve()), args.detector, args.min_face_size,
                             args.tta, args.every, args.batch, args.runtime)
    try:
        if args.engine == "ray":
            files, faces, errors = run_ray(args.input, args.output, settings, args.workers, args.ray_address)
        else:
            files, faces, errors = run_local(args.input, args.output, settings, args.workers,
                                             progress=None if args.quiet else sys.stderr)
    except BrokenProcessPool:
        raise CliError("a worker process died (out of memory?); run the same command again to resume") from None
    except ModuleNotFoundError as error:
        raise CliError(f"{error}: --engine ray needs pip install 'emotion-recognition[ray]'") from None
    print(f"{files} file(s), {faces} face(s), {errors} error(s); wrote {args.output} and {files_table_path(args.output)}")
    return 0


def gui_available() -> bool:
    """False for opencv-python-headless (no highgui backend: cv2.imshow cannot open a window)."""
    import cv2

    try:
        cv2.namedWindow("emotion-gui-check", cv2.WINDOW_AUTOSIZE)
        cv2.destroyWindow("emotion-gui-check")
        return True
    except cv2.error:
        return False


def cmd_webcam(args: argparse.Namespace) -> int:
    import cv2

    from emotion_recognition.drawing import draw_results

    if not gui_available():
        raise CliError(
            "this OpenCV build has no GUI (opencv-python-headless), so the live window cannot open. "
            "Install the GUI build in this environment: pip uninstall opencv-python-headless && "
            "pip install opencv-python==4.14.0.94 -- or use the web page's webcam mode "
            "(bentoml serve serving.service:EmotionService, then open http://localhost:3000/ui/)"
        )
    camera = int(args.camera) if str(args.camera).isdigit() else args.camera
    capture = cv2.VideoCapture(camera)
    if not capture.isOpened():
        raise CliError(f"camera {args.camera} could not be opened (is it connected and free?)")
    analyze = make_analyzer(args)
    tracker = FaceTracker(smooth_frames=args.smooth)
    window = "emotion (q or Esc to quit)"
    fps, last = 0.0, time.perf_counter()
    try:
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            tracked = tracker.update(analyze([rgb])[0])
            now = time.perf_counter()
            fps = 0.9 * fps + 0.1 / max(now - last, 1e-6) if fps else 1.0 / max(now - last, 1e-6)
            last = now
            drawn = draw_results(rgb, [t.result for t in tracked], language=args.language, fps=fps,
                                 track_ids=[t.track_id for t in tracked])
            cv2.imshow(window, cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
            if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                break
    finally:
        capture.release()
        cv2.destroyAllWindows()
    return 0


# ---------------------------------------------------------------- argument parsing


def int_in(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number in [low, high] (no upper bound when ``high`` is None)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}" if high is None
                                             else f"must be between {low} and {high}, got {value}")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--model", help="a .keras model file (default: the bundled model)")
    common.add_argument("--server", metavar="URL", help="use a running service, e.g. http://localhost:3000")
    common.add_argument("--language", choices=sorted(TRANSLATIONS), default="en", help="label language")
    common.add_argument("--detector", choices=detector_choices(), default=DetectionConfig.detector,
                        help="auto (default): yunet if EMOTION_YUNET_MODEL is set, else yuface, else haar")
    common.add_argument("--min-face-size", type=int_in(1), default=DetectionConfig.min_face_size, metavar="PIXELS",
                        help="smallest face to find; the detector runs on the image shrunk to suit it (default %(default)s)")
    common.add_argument("--tta", choices=list(PRESETS), default="flip",
                        help="test-time views per face: flip (default: face + mirror), none (fastest), "
                             "crops (16 views, most accurate); with --server the service's EMOTION_TTA applies")
    common.add_argument("--runtime", choices=RUNTIMES, default="openvino",
                        help="classifier engine: openvino (default, fastest; Keras if it is not installed) or keras")

    parser = argparse.ArgumentParser(prog="emotion", description="Faces and their emotions in photos, videos and the webcam.")
    commands = parser.add_subparsers(dest="command", required=True)

    photo = commands.add_parser("photo", parents=[common], help="annotate a photo (+ JSON beside it)")
    photo.add_argument("input")
    photo.add_argument("-o", "--output", help="annotated image (default: IN_emotions.EXT); JSON goes beside it")
    photo.set_defaults(func=cmd_photo)

    video = commands.add_parser("video", parents=[common], help="annotate a video (+ CSV timeline)")
    video.add_argument("input")
    video.add_argument("-o", "--output", help="annotated .mp4/.webm/.avi (default: IN_emotions.mp4); CSV beside it")
    video.add_argument("--every", type=int_in(1), default=1, help="analyse every N-th frame (default 1)")
    video.add_argument("--max-frames", type=int_in(0), default=0, help="stop after N analysed frames (0: all)")
    video.add_argument("--batch", type=int_in(1), default=16, help="frames per model call (default 16)")
    video.add_argument("--smooth", type=int_in(1, MAX_SMOOTH_FRAMES), default=1, metavar="N",
                       help="label each tracked face with the mean of its last N analysed frames' "
                            f"probabilities (1-{MAX_SMOOTH_FRAMES}; default 1: no smoothing)")
    video.add_argument("--max-video-pixels", type=int_in(0), default=0, metavar="N",
                       help="refuse a video needing more than N decoded pixels (frames x width x height; default 0: "
                            f"no limit; the service's EMOTION_MAX_VIDEO_PIXELS is {VideoLimits.max_pixels:,})")
    video.add_argument("--quiet", action="store_true", help="no progress bar")
    video.set_defaults(func=cmd_video)

    batch = commands.add_parser("batch", parents=[common], help="photos and videos -> one table (Parquet/CSV)")
    batch.add_argument("input", nargs="+", help="files, folders (recursive), globs, @list.txt (a path a line)")
    batch.add_argument("-o", "--output", required=True, help="results .parquet or .csv (+ OUT.files.EXT per file)")
    batch.add_argument("--every", type=int_in(1), default=1, help="analyse every N-th video frame (default 1)")
    batch.add_argument("--batch", type=int_in(1), default=16, help="video frames per model call (default 16)")
    batch.add_argument("--workers", type=int_in(1), default=os.cpu_count() or 1,
                       help="processes (local) or Ray actors (default: the number of cores)")
    batch.add_argument("--engine", choices=("local", "ray"), default="local")
    batch.add_argument("--ray-address", help="Ray cluster (default: RAY_ADDRESS, else a local Ray)")
    batch.add_argument("--quiet", action="store_true", help="no progress")
    batch.set_defaults(func=cmd_batch)

    webcam = commands.add_parser("webcam", parents=[common], help="live window with labelled faces and FPS")
    webcam.add_argument("--camera", default="0", help="camera index (default 0) or a video file/URL")
    webcam.add_argument("--smooth", type=int_in(1, MAX_SMOOTH_FRAMES), default=5, metavar="N",
                        help="label each tracked face with the mean of its last N frames' probabilities "
                             f"(1-{MAX_SMOOTH_FRAMES}; default 5, as the web page; 1: off)")
    webcam.set_defaults(func=cmd_webcam)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)  # a bad option: argparse's one-line usage error
    except SystemExit as exit:
        return exit.code
    try:
        return args.func(args)
    except CliError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.code
    except (OSError, ValueError) as error:  # InputError (unreadable media) too
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
