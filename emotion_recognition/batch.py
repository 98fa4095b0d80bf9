"""Many photos and videos -> a row per face and a row per file (``emotion batch``, ``analyze_paths``).

Rows come from ``FaceResult.to_dict``, as ``emotion photo``'s JSON and ``emotion video``'s CSV do; a
file that cannot be read is a file row with its error, never a stopped run. ``run_local``: worker
processes, one file at a time; finished files go to OUTPUT.parts/ in parts renamed into place (the
files part after its faces part), so a re-run skips them. ``run_ray``: the same in Ray Data actors.
"""

from __future__ import annotations

import functools
import glob
import json
import os
import shutil
import sys
import time
import uuid
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

from emotion_recognition.detection import DetectionConfig
from emotion_recognition.face_tracking import FaceTracker, track_frames
from emotion_recognition.media import iter_video_frames, read_image
from emotion_recognition.preprocessing import IMAGE_SUFFIXES
from emotion_recognition.timeline import TIMELINE_COLUMNS, timeline_rows

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
FACE_COLUMNS = ["file", *TIMELINE_COLUMNS, "landmarks"]
FILE_COLUMNS = ["file", "frames", "faces", "status", "error"]
FLUSH_SECONDS = 10.0  # a part at least this often: what a kill can lose


@dataclass(frozen=True)
class BatchSettings:
    """What decides the rows: a resumed run must have the same (OUTPUT.parts/settings.json)."""

    model: str | None = None  # a .keras file; None: the bundled model
    detector: str = DetectionConfig.detector
    min_face_size: int = DetectionConfig.min_face_size
    tta: str = "flip"
    every: int = 1
    batch: int = 16  # video frames per model call
    runtime: str = "openvino"  # emotion_recognition.runtime.RUNTIMES


def load_recognizer(settings: BatchSettings, threads: int = 0):
    """One recognizer per (model file as it is now, settings, threads): ``analyze_image`` reuses it."""
    from emotion_recognition.model_files import resolve_model_file

    path = resolve_model_file(settings.model).path
    return _load_recognizer(settings, threads, path, path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=2)
def _load_recognizer(settings: BatchSettings, threads: int, path: Path, mtime_ns: int):
    from emotion_recognition.inference import EmotionRecognizer
    from emotion_recognition.tta import from_preset

    detection = DetectionConfig(detector=settings.detector, min_face_size=settings.min_face_size, threads=threads)
    return EmotionRecognizer.from_file(path, detection, from_preset(settings.tta), runtime=settings.runtime, threads=threads)


def expand_inputs(inputs: Iterable[str | Path]) -> list[str]:
    """Folders (recursive, photo and video suffixes), globs, ``@list.txt`` (a path a line, ``@`` lists
    too: each list read once, so one naming itself ends there) and files (any suffix: a bad one
    becomes an error row); in order, each once."""
    inputs, lists = [str(item) for item in inputs], set()

    def expand(items: Iterable[str]) -> Iterable[str]:
        for item in items:
            if item.startswith("@"):
                if (listed := os.path.realpath(item[1:])) not in lists:
                    lists.add(listed)
                    lines = [line.strip() for line in Path(item[1:]).read_text().splitlines()]
                    yield from expand(line for line in lines if line and not line.startswith("#"))
            elif os.path.isdir(item):
                for root, dirs, files in os.walk(item):
                    dirs.sort()
                    yield from (os.path.join(root, f) for f in sorted(files) if f.lower().endswith(IMAGE_SUFFIXES + VIDEO_SUFFIXES))
            elif glob.has_magic(item):
                yield from sorted(p for p in glob.glob(item, recursive=True) if os.path.isfile(p))
            elif os.path.exists(item):
                yield item
            else:
                raise FileNotFoundError(f"no file or folder at {item}")

    found = list(dict.fromkeys(expand(inputs)))
    if not found:
        raise FileNotFoundError(f"no photo or video in {' '.join(inputs)}")
    return found


def face_rows(file: str, frame: int, time_s: float, faces: Sequence[dict]) -> list[dict]:
    """Face dicts (``FaceResult.to_dict``, + ``track_id`` in video) -> rows of FACE_COLUMNS."""
    return [{"file": file, **row, "landmarks": None if face["landmarks"] is None else json.dumps(face["landmarks"])}
            for row, face in zip(timeline_rows(frame, time_s, faces), faces)]


def analyze_file(recognizer, path: str, settings: BatchSettings) -> tuple[list[dict], dict]:
    """One photo or video -> (face rows, file row); any failure is the file row's error."""
    rows, frames = [], 0
    try:
        if path.lower().endswith(IMAGE_SUFFIXES):
            rows, frames = face_rows(path, 0, 0.0, [f.to_dict() for f in recognizer.analyze(read_image(path))]), 1
        else:  # as `emotion video`: `batch` frames per model call, track ids from a FaceTracker
            video = iter_video_frames(path, every=settings.every)
            for frame, tracked in track_frames(video, recognizer.analyze_frames, FaceTracker(), settings.batch):
                rows, frames = rows + face_rows(path, frame.index, frame.time_s, [t.to_dict() for t in tracked]), frames + 1
    except Exception as error:  # hostile files raise anything (cv2.error, MemoryError...): record it, go on
        return [], {"file": path, "frames": frames, "faces": 0, "status": "error", "error": f"{type(error).__name__}: {error}"}
    return rows, {"file": path, "frames": frames, "faces": len(rows), "status": "ok", "error": None}


def analyze_image(rgb, model: str | None = None):
    """The faces of one RGB image array as a pandas DataFrame (FACE_COLUMNS, ``file`` empty)."""
    import pandas as pd

    faces = load_recognizer(BatchSettings(model=model)).analyze(rgb)
    return pd.DataFrame(face_rows("", 0, 0.0, [f.to_dict() for f in faces]), columns=FACE_COLUMNS)


def analyze_paths(paths: Iterable[str | Path], workers: int = 1, **settings: Any):
    """Photos/videos/folders/globs -> DataFrame of face rows; the file rows in ``.attrs["files"]``.
    ``settings``: BatchSettings' fields (model, detector, every, ...)."""
    import pandas as pd

    order = {path: i for i, path in enumerate(expand_inputs(paths))}
    results = sorted(_analyze_all(list(order), BatchSettings(**settings), workers), key=lambda r: order[r[1]["file"]])
    table = pd.DataFrame([row for rows, _ in results for row in rows], columns=FACE_COLUMNS)
    table.attrs["files"] = pd.DataFrame([file_row for _, file_row in results], columns=FILE_COLUMNS)
    return table


_worker: dict[str, Any] = {}


def _init_worker(settings: BatchSettings, threads: int) -> None:
    if threads:  # a share of the cores per process: N processes each using every core thrash
        import cv2

        os.environ.update(dict.fromkeys(("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"), str(threads)))
        cv2.setNumThreads(threads)
    _worker.update(settings=settings, recognizer=load_recognizer(settings, threads))


def _analyze_one(path: str) -> tuple[list[dict], dict]:
    return analyze_file(_worker["recognizer"], path, _worker["settings"])


def _analyze_all(paths: list[str], settings: BatchSettings, workers: int):
    """(face rows, file row) per path: here in order, or as ``workers`` spawned processes finish them
    (so a long video does not hold back the parts of the files after it)."""
    if workers <= 1:
        _init_worker(settings, 0)
        yield from map(_analyze_one, paths)
        return
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    threads = max(1, (os.cpu_count() or 1) // workers)
    with ProcessPoolExecutor(workers, get_context("spawn"), _init_worker, (settings, threads)) as pool:
        yield from (done.result() for done in as_completed([pool.submit(_analyze_one, p) for p in paths]))


def files_table_path(output: str) -> str:
    """results.parquet -> results.files.parquet; s3://b/results -> s3://b/results.files"""
    stem, dot, suffix = output.rpartition(".")
    return f"{stem}.files.{suffix}" if dot and "/" not in suffix else f"{output}.files"


def _write_atomic(frame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    frame.to_csv(tmp, index=False) if path.suffix == ".csv" else frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def run_local(inputs: Sequence[str], output: str, settings: BatchSettings, workers: int = 1,
              progress=sys.stderr) -> tuple[int, int, int]:
    """Analyse ``inputs`` into ``output`` (.parquet/.csv), resuming from OUTPUT.parts/; (files, faces, errors)."""
    import pandas as pd

    paths = expand_inputs(inputs)
    parts = Path(f"{output}.parts")
    parts.mkdir(parents=True, exist_ok=True)
    marker, wanted = parts / "settings.json", json.dumps(asdict(settings), sort_keys=True)
    if marker.exists() and marker.read_text() != wanted:
        raise ValueError(f"{parts} holds a run with other settings ({marker.read_text()}): use the same "
                         f"options, or delete {parts} to start over")
    marker.write_text(wanted)

    def read(kind: str):
        return pd.concat([pd.read_parquet(p.with_name(p.name.replace(".files.", kind)))
                          for p in sorted(parts.glob("*.files.parquet"))] or [pd.DataFrame(columns=["file"])])

    done = set(read(".files.")["file"])
    todo = [p for p in paths if p not in done]
    faces, files, last, meter = [], [], time.monotonic(), _Progress(progress, len(paths), len(paths) - len(todo))
    for n, (rows, file_row) in enumerate(_analyze_all(todo, settings, workers), 1):
        faces += rows
        files.append(file_row)
        if time.monotonic() - last > FLUSH_SECONDS or n == len(todo):
            name, last = uuid.uuid4().hex, time.monotonic()
            _write_atomic(pd.DataFrame(faces, columns=FACE_COLUMNS), parts / f"{name}.faces.parquet")
            _write_atomic(pd.DataFrame(files, columns=FILE_COLUMNS), parts / f"{name}.files.parquet")
            faces, files = [], []
        meter.step(file_row["faces"], n)
    order = {path: i for i, path in enumerate(paths)}
    file_table, face_table = (_ordered(read(kind), order, keys) for kind, keys in
                              ((".files.", ["file"]), (".faces.", ["file", "frame", "face"])))
    _write_atomic(face_table, Path(output))
    _write_atomic(file_table, Path(files_table_path(output)))
    shutil.rmtree(parts)
    return len(file_table), len(face_table), int((file_table["status"] == "error").sum())


def _ordered(table, order: dict[str, int], keys: list[str]):
    table = table[table["file"].isin(order)].drop_duplicates(keys, keep="last")
    return table.sort_values(keys, key=lambda c: c.map(order) if c.name == "file" else c).reset_index(drop=True)


class _Progress:
    """Files done/total, faces, rate, ETA: a tqdm bar on a terminal, a plain line every 10 s otherwise."""

    def __init__(self, stream, total: int, done: int):
        from tqdm import tqdm

        self.stream, self.total, self.done, self.faces, self.start, self.last = stream, total, done, 0, time.monotonic(), 0.0
        self.bar = tqdm(total=total, initial=done, unit="file", file=stream) if stream and stream.isatty() else None

    def step(self, faces: int, new: int) -> None:
        self.done, self.faces = self.done + 1, self.faces + faces
        if self.bar is not None:
            self.bar.set_postfix(faces=self.faces, refresh=False)
            self.bar.update()
            if self.done == self.total:
                self.bar.close()
        elif self.stream and (self.done == self.total or time.monotonic() - self.last > 10):
            self.last, rate = time.monotonic(), new / (time.monotonic() - self.start)
            self.stream.write(f"batch: {self.done}/{self.total} files, {self.faces} faces, {rate:.2f} files/s, "
                              f"ETA {(self.total - self.done) / rate:.0f} s\n")
            self.stream.flush()


class RayAnalyzer:
    """A Ray Data actor holding one recognizer, loaded from the files the driver sent (``model_files``)."""

    def __init__(self, settings: BatchSettings, files: dict[str, bytes], threads: int):
        import tempfile

        folder = Path(tempfile.mkdtemp(prefix="emotion-model-"))
        for name, data in files.items():
            (folder / name).parent.mkdir(exist_ok=True)
            (folder / name).write_bytes(data)
        _init_worker(replace(settings, model=str(folder / "model.keras")), threads)
        self.settings, self.recognizer = _worker["settings"], _worker["recognizer"]

    def __call__(self, batch: dict):
        import pyarrow as pa

        rows = []
        for path in batch["file"]:
            faces, file_row = analyze_file(self.recognizer, str(path), self.settings)
            rows += [{**row, "table": "face"} for row in faces] + [{**file_row, "table": "file"}]
        text = {"file", "landmarks", "emotion", "status", "error", "table"}
        return pa.Table.from_pylist(rows, schema=pa.schema(
            [(c, pa.string() if c in text else pa.int64() if c in ("frame", "face", "track_id", "x", "y", "w", "h",
                                                                   "frames", "faces") else pa.float64())
             for c in dict.fromkeys([*FACE_COLUMNS, *FILE_COLUMNS, "table"])]))


def model_files(settings: BatchSettings) -> dict[str, bytes]:
    """Name in a folder -> bytes: the model and, for openvino, its copy as found or made here (so every actor
    runs local batch's copy, e.g. the bundled INT8 one, not its own fp32 one; none if it fails: Keras)."""
    from emotion_recognition.model_files import resolve_model_file

    path = resolve_model_file(settings.model).path
    files = {"model.keras": path.read_bytes()}
    if settings.runtime == "openvino":
        try:
            from emotion_recognition.runtime import openvino_copy

            copy = openvino_copy(path)
        except (ImportError, ValueError, RuntimeError, OSError):  # as load_classifier, which logs it
            return files
        files.update({f"openvino/{copy.stem}{suffix}": copy.with_suffix(suffix).read_bytes()
                      for suffix in (".xml", ".bin", ".json") if copy.with_suffix(suffix).is_file()})
    return files


def run_ray(inputs: Sequence[str], output: str, settings: BatchSettings, workers: int,
            address: str | None = None) -> tuple[int, int, int]:
    """The same rows with Ray Data, written at OUTPUT and files_table_path(OUTPUT) (paths or URIs).
    The ``workers`` actors share the cluster's CPUs but one (at most one each): an actor pool holding
    every CPU leaves none to the read tasks and the job never ends."""
    import pyarrow.compute as pc
    import ray

    paths, files = expand_inputs(inputs), model_files(settings)
    ray.init(address=address, log_to_driver=False)  # address None: RAY_ADDRESS, else a local Ray
    try:
        cpus = ray.cluster_resources().get("CPU", 0)
        if cpus < 2:
            raise ValueError(f"the Ray cluster has {cpus:g} CPU(s): batch needs 2 or more (actors + read tasks)")
        num_cpus = min(1.0, (cpus - 1) / workers)
        results = ray.data.from_items([{"file": p} for p in paths]).map_batches(
            RayAnalyzer, fn_constructor_args=(settings, files, max(1, int(num_cpus))), num_cpus=num_cpus,
            compute=ray.data.ActorPoolStrategy(size=workers), batch_size=1).materialize()
        for name, columns, where in (("face", FACE_COLUMNS, output), ("file", FILE_COLUMNS, files_table_path(output))):
            table = results.map_batches(lambda t, name=name, columns=columns: t.filter(
                pc.equal(t["table"], name)).select(columns), batch_format="pyarrow")
            table.write_parquet(where)
        file_table = table.to_pandas()
    finally:
        ray.shutdown()
    return len(file_table), int(file_table["faces"].sum()), int((file_table["status"] == "error").sum())
