"""Many photos and videos -> one table: a row per face, and a row per file (faces, status, error).

``emotion batch`` and the notebook API (``analyze_paths``, ``analyze_image``) share ``analyze_file``,
so a face's row is the same whichever way it was computed, and the same as ``emotion photo``'s JSON
and ``emotion video``'s CSV (both come from ``FaceResult.to_dict``). A file that cannot be read is a
row with ``status = "error"`` and the reason; it never stops the run.

Local engine (``run_local``): worker processes, each with its own recognizer, one file at a time
(videos stream ``batch`` frames at a time), so memory does not grow with the number of files.
Finished files go into ``OUTPUT.parts/`` in parts written atomically (temporary name, then rename;
the files part after the faces part, so a files part marks its faces as done). A re-run with the
same output skips the files the parts list and merges everything into OUTPUT once complete.
Ray engine (``run_ray``): the same ``analyze_file`` in Ray Data actors (docs/scaleout.md).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from emotion_recognition.detection import DetectionConfig
from emotion_recognition.face_tracking import FaceTracker
from emotion_recognition.labels import EMOTIONS
from emotion_recognition.media import IMAGE_SUFFIXES, iter_video_frames, read_image

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
FACE_COLUMNS = ["file", "frame", "time_s", "face", "track_id", "x", "y", "w", "h", "confidence", "landmarks",
                "emotion", *EMOTIONS]
FILE_COLUMNS = ["file", "frames", "faces", "status", "error"]
FLUSH_SECONDS = 10.0  # a part is written at least this often (and every FLUSH_FILES files): a kill loses less


@dataclass(frozen=True)
class BatchSettings:
    """What decides the rows; a resumed run must use the same (checked against OUTPUT.parts/settings.json)."""

    model: str | None = None  # a .keras file; None: the bundled model
    detector: str = DetectionConfig.detector
    min_face_size: int = DetectionConfig.min_face_size
    tta: str = "flip"
    every: int = 1
    batch: int = 16  # video frames per model call


def load_recognizer(settings: BatchSettings):
    from emotion_recognition.inference import EmotionRecognizer
    from emotion_recognition.model_files import resolve_model_file
    from emotion_recognition.tta import from_preset

    detection = DetectionConfig(detector=settings.detector, min_face_size=settings.min_face_size)
    return EmotionRecognizer.from_file(resolve_model_file(settings.model).path, detection, from_preset(settings.tta))


def expand_inputs(inputs: Iterable[str | Path]) -> list[str]:
    """Folders (recursive: photo and video suffixes), globs, ``@list.txt`` (one path a line) and files;
    in order, each once. A named file is kept whatever its suffix (a bad one becomes an error row)."""
    found: list[str] = []
    for item in map(str, inputs):
        if item.startswith("@"):
            lines = Path(item[1:]).read_text().splitlines()
            found += expand_inputs(line.strip() for line in lines if line.strip() and not line.startswith("#"))
        elif os.path.isdir(item):
            for root, dirs, files in os.walk(item):
                dirs.sort()
                found += [os.path.join(root, f) for f in sorted(files)
                          if f.lower().endswith(IMAGE_SUFFIXES + VIDEO_SUFFIXES)]
        elif glob.has_magic(item):
            found += sorted(p for p in glob.glob(item, recursive=True) if os.path.isfile(p))
        elif os.path.exists(item):
            found.append(item)
        else:
            raise FileNotFoundError(f"no file or folder at {item}")
    return list(dict.fromkeys(found))


def face_rows(file: str, frame: int, time_s: float, faces: Sequence[dict], track: bool) -> list[dict]:
    """``FaceResult.to_dict()``/``TrackedFace.to_dict()`` dicts -> flat rows (FACE_COLUMNS)."""
    return [{"file": file, "frame": frame, "time_s": round(time_s, 4), "face": i,
             "track_id": face["track_id"] if track else None, **face["box"], "confidence": face["confidence"],
             "landmarks": json.dumps(face["landmarks"]) if face["landmarks"] is not None else None,
             "emotion": face["emotion"], **face["probabilities"]} for i, face in enumerate(faces)]


def analyze_file(recognizer, path: str, settings: BatchSettings) -> tuple[list[dict], dict]:
    """One photo or video -> (face rows, file row); any failure becomes the file row's error."""
    rows: list[dict] = []
    frames = 0
    try:
        if path.lower().endswith(IMAGE_SUFFIXES):
            rows = face_rows(path, 0, 0.0, [f.to_dict() for f in recognizer.analyze(read_image(path))], False)
            frames = 1
        else:
            tracker, chunk = FaceTracker(), []
            for frame in iter_video_frames(path, every=settings.every):
                chunk.append(frame)
                if len(chunk) == settings.batch:
                    rows += _video_rows(recognizer, tracker, path, chunk)
                    frames, chunk = frames + len(chunk), []
            rows += _video_rows(recognizer, tracker, path, chunk)
            frames += len(chunk)
    except Exception as error:  # hostile files raise anything (cv2.error, MemoryError...): record, go on
        return [], {"file": path, "frames": frames, "faces": 0, "status": "error",
                    "error": f"{type(error).__name__}: {error}"}
    return rows, {"file": path, "frames": frames, "faces": len(rows), "status": "ok", "error": None}


def _video_rows(recognizer, tracker: FaceTracker, path: str, chunk: list) -> list[dict]:
    rows = []
    for frame, faces in zip(chunk, recognizer.analyze_frames([f.rgb for f in chunk]) if chunk else []):
        rows += face_rows(path, frame.index, frame.time_s, [t.to_dict() for t in tracker.update(faces)], True)
    return rows


# ---------------------------------------------------------------- notebook API


def analyze_image(rgb: np.ndarray, model: str | None = None, recognizer=None):
    """Faces of one RGB image array as a pandas DataFrame (FACE_COLUMNS, ``file`` empty)."""
    import pandas as pd

    recognizer = recognizer or load_recognizer(BatchSettings(model=model))
    return pd.DataFrame(face_rows("", 0, 0.0, [f.to_dict() for f in recognizer.analyze(rgb)], False),
                        columns=FACE_COLUMNS)


def analyze_paths(paths: Iterable[str | Path], workers: int = 1, **settings: Any):
    """Faces of photos/videos/folders/globs as a DataFrame (errors in ``.attrs["files"]``).
    ``settings``: the fields of BatchSettings (model, detector, every, ...)."""
    import pandas as pd

    faces, files = [], []
    for rows, file_row in _analyze_all(expand_inputs(paths), BatchSettings(**settings), workers):
        faces += rows
        files.append(file_row)
    table = pd.DataFrame(faces, columns=FACE_COLUMNS)
    table.attrs["files"] = pd.DataFrame(files, columns=FILE_COLUMNS)
    return table


# ---------------------------------------------------------------- local engine

_worker: dict[str, Any] = {}


def _init_worker(settings: BatchSettings, threads: int) -> None:
    if threads:  # one share of the cores per process: N processes x all cores thrash
        import cv2

        for name in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
            os.environ[name] = str(threads)
        cv2.setNumThreads(threads)
    _worker.update(settings=settings, recognizer=load_recognizer(settings))


def _analyze_one(path: str) -> tuple[list[dict], dict]:
    return analyze_file(_worker["recognizer"], path, _worker["settings"])


def _analyze_all(paths: list[str], settings: BatchSettings, workers: int):
    """(face rows, file row) per path, in order; ``workers`` > 1: that many spawned processes."""
    if workers <= 1:
        _init_worker(settings, 0)
        yield from map(_analyze_one, paths)
        return
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    threads = max(1, (os.cpu_count() or 1) // workers)
    with ProcessPoolExecutor(workers, get_context("spawn"), _init_worker, (settings, threads)) as pool:
        yield from pool.map(_analyze_one, paths)


def files_table_path(output: str) -> str:
    """Where the per-file table goes: results.parquet -> results.files.parquet."""
    stem, dot, suffix = output.rpartition(".")
    return f"{stem}.files.{suffix}" if dot and "/" not in suffix else f"{output}.files"


def _write_atomic(frame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    if path.suffix == ".csv":
        frame.to_csv(tmp, index=False)
    else:
        frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def run_local(inputs: Sequence[str], output: str, settings: BatchSettings, workers: int = 1,
              progress=sys.stderr, flush_files: int = 64) -> tuple[int, int, int]:
    """Analyse ``inputs`` into ``output`` (.parquet or .csv), resuming from ``output``.parts/.
    Returns (files, faces, errors)."""
    import pandas as pd

    paths = expand_inputs(inputs)
    parts = Path(f"{output}.parts")
    parts.mkdir(parents=True, exist_ok=True)
    marker, wanted = parts / "settings.json", json.dumps(asdict(settings), sort_keys=True)
    if marker.exists() and marker.read_text() != wanted:
        raise ValueError(f"{parts} holds a run with other settings ({marker.read_text()}): use the same "
                         f"options, or delete {parts} to start over")
    marker.write_text(wanted)
    done_parts = sorted(parts.glob("*.files.parquet"))
    done = set(pd.concat([pd.read_parquet(p) for p in done_parts])["file"]) if done_parts else set()
    todo = [p for p in paths if p not in done]
    meter = Progress(len(paths), len(paths) - len(todo), progress)
    faces, files, last_flush = [], [], time.monotonic()

    def flush() -> None:
        name = uuid.uuid4().hex
        _write_atomic(pd.DataFrame(faces, columns=FACE_COLUMNS), parts / f"{name}.faces.parquet")
        _write_atomic(pd.DataFrame(files, columns=FILE_COLUMNS), parts / f"{name}.files.parquet")
        faces.clear(), files.clear()

    for rows, file_row in _analyze_all(todo, settings, workers):
        faces += rows
        files.append(file_row)
        meter.update(len(rows))
        if len(files) >= flush_files or time.monotonic() - last_flush > FLUSH_SECONDS:
            flush()
            last_flush = time.monotonic()
    if files:
        flush()
    meter.close()
    order = {path: i for i, path in enumerate(paths)}
    names = [p.name.removesuffix(".files.parquet") for p in sorted(parts.glob("*.files.parquet"))]
    file_table = _ordered(pd.concat([pd.read_parquet(parts / f"{n}.files.parquet") for n in names]), order, ["file"])
    face_table = _ordered(pd.concat([pd.read_parquet(parts / f"{n}.faces.parquet") for n in names]), order,
                          ["file", "frame", "face"])
    _write_atomic(face_table, Path(output))
    _write_atomic(file_table, Path(files_table_path(output)))
    shutil.rmtree(parts)
    return len(file_table), len(face_table), int((file_table["status"] == "error").sum())


def _ordered(table, order: dict[str, int], keys: list[str]):
    """Rows of the files asked for, each file once (its latest part), in input order."""
    table = table[table["file"].isin(order)].drop_duplicates(keys, keep="last")
    return table.sort_values(keys, key=lambda c: c.map(order) if c.name == "file" else c).reset_index(drop=True)


# ---------------------------------------------------------------- Ray engine


def _arrow_schema():
    import pyarrow as pa

    types = {"file": pa.string(), "time_s": pa.float64(), "confidence": pa.float64(), "landmarks": pa.string(),
             "emotion": pa.string(), "status": pa.string(), "error": pa.string(), "table": pa.string(),
             **{name: pa.float64() for name in EMOTIONS}}
    names = dict.fromkeys([*FACE_COLUMNS, *FILE_COLUMNS, "table"])
    return pa.schema([(name, types.get(name, pa.int64())) for name in names])


class RayAnalyzer:
    """A Ray Data actor: one recognizer, loaded from the model bytes the driver sent (no shared disk)."""

    def __init__(self, settings: BatchSettings, model_bytes: bytes):
        import tempfile
        from dataclasses import replace

        model = Path(tempfile.mkdtemp(prefix="emotion-model-")) / "model.keras"
        model.write_bytes(model_bytes)
        self.settings = replace(settings, model=str(model))
        self.recognizer = load_recognizer(self.settings)

    def __call__(self, batch: dict[str, np.ndarray]):
        import pyarrow as pa

        rows = []
        for path in batch["file"]:
            faces, file_row = analyze_file(self.recognizer, str(path), self.settings)
            rows += [{**row, "table": "face"} for row in faces] + [{**file_row, "table": "file"}]
        return pa.Table.from_pylist(rows, schema=_arrow_schema())


def run_ray(inputs: Sequence[str], output: str, settings: BatchSettings, workers: int,
            address: str | None = None) -> tuple[int, int, int]:
    """The same rows with Ray Data: ``workers`` actors (one CPU each; leave a CPU of the cluster for the
    read tasks, or the job waits forever); Parquet datasets at OUTPUT and files_table_path(OUTPUT)
    (local paths or object-store URIs). ``address``: None reads RAY_ADDRESS, else starts Ray locally."""
    import pyarrow.compute as pc
    import ray

    from emotion_recognition.model_files import resolve_model_file

    paths = expand_inputs(inputs)
    model_bytes = resolve_model_file(settings.model).path.read_bytes()
    ray.init(address=address, log_to_driver=False, ignore_reinit_error=True)
    try:
        results = ray.data.from_items([{"file": p} for p in paths]).map_batches(
            RayAnalyzer, fn_constructor_args=(settings, model_bytes), concurrency=workers, num_cpus=1,
            batch_size=1, batch_format="numpy").materialize()

        def table(name: str, columns: list[str]):
            return results.map_batches(lambda t: t.filter(pc.equal(t["table"], name)).select(columns),
                                       batch_format="pyarrow")

        table("face", FACE_COLUMNS).write_parquet(output)
        files = table("file", FILE_COLUMNS)
        files.write_parquet(files_table_path(output))
        file_table = files.to_pandas()
    finally:
        ray.shutdown()
    return len(file_table), int(file_table["faces"].sum()), int((file_table["status"] == "error").sum())


class Progress:
    """Files done / total, faces, rate and ETA: tqdm on a terminal, a plain line every 10 s otherwise."""

    def __init__(self, total: int, done: int, stream):
        self.total, self.done, self.faces, self.stream = total, done, 0, stream
        self.start, self.first, self.last = time.monotonic(), done, 0.0
        self.bar = None
        if stream is not None and stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, unit="file", file=stream)

    def update(self, faces: int) -> None:
        self.done, self.faces = self.done + 1, self.faces + faces
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(faces=self.faces, refresh=False)
        elif self.stream is not None and (time.monotonic() - self.last > 10 or self.done == self.total):
            self.last = time.monotonic()
            rate = (self.done - self.first) / max(self.last - self.start, 1e-9)
            eta = (self.total - self.done) / rate if rate else float("nan")
            self.stream.write(f"batch: {self.done}/{self.total} files, {self.faces} faces, "
                              f"{rate:.2f} files/s, ETA {eta:.0f} s\n")
            self.stream.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
