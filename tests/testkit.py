"""Test and benchmark helpers, in one place (kept out of the shipped package; the benchmarks,
run from the repository root as ``python -m bench.NAME``, import it as ``tests.testkit``): images with several real faces at known places, a
`bentoml serve` process on a free port (start, wait until ready, stop), the test media and the
tiny model with its fixtures.

``face_canvas`` pastes FER2013 faces (read from the image-folder zip, upscaled) onto one
canvas and returns the image and where each face went. Faces are picked, in a fixed order,
among those the Haar detector finds on their own, so a test built on the canvas checks the
detector's behaviour with several faces and the framing/cropping, not the detector's recall on
FER2013 (about 3 in 4 faces).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import pytest

from emotion_recognition.detection import Box, DetectionConfig, detect_faces
from emotion_recognition.face_tracking import box_iou as iou  # noqa: F401 (the tests' and benchmarks' name)
from emotion_recognition.inference import FaceResult
from emotion_recognition.labels import EMOTIONS


@dataclass
class PastedFace:
    box: Box  # where the (upscaled) FER image was pasted
    label: str
    name: str


def read_zip_faces(zip_path: str | Path, split: str = "test", limit: int = 200) -> list[tuple[str, str, np.ndarray]]:
    """(name, label, 48x48 uint8) for the first ``limit`` images of a split, in name order."""
    faces = []
    with zipfile.ZipFile(zip_path) as archive:
        names = sorted(n for n in archive.namelist() if n.startswith(f"{split}/") and n.endswith(".jpg"))
        # interleave labels so a small limit still covers several emotions
        by_label: dict[str, list[str]] = {}
        for n in names:
            by_label.setdefault(n.split("/")[1], []).append(n)
        ordered = [n for group in zip(*by_label.values()) for n in group]
        for name in ordered[:limit]:
            image = cv2.imdecode(np.frombuffer(archive.read(name), np.uint8), cv2.IMREAD_GRAYSCALE)
            faces.append((name, name.split("/")[1], image))
    return faces


def detectable_faces(
    zip_path: str | Path, count: int, face_px: int = 120, config: DetectionConfig | None = None
) -> list[tuple[str, str, np.ndarray]]:
    """The first ``count`` FER faces that the detector (Haar unless given) finds alone on a plain
    canvas: the same faces whichever detector is the default."""
    config = config or DetectionConfig(detector="haar")
    chosen = []
    for name, label, face in read_zip_faces(zip_path, limit=max(60, count * 8)):
        big = cv2.resize(face, (face_px, face_px), interpolation=cv2.INTER_CUBIC)
        canvas = np.full((face_px * 2, face_px * 2), 128, np.uint8)
        canvas[face_px // 2 : face_px // 2 + face_px, face_px // 2 : face_px // 2 + face_px] = big
        if len(detect_faces(canvas, config)) == 1:
            chosen.append((name, label, big))
            if len(chosen) == count:
                return chosen
    raise RuntimeError(f"only {len(chosen)} detectable faces found in {zip_path}")


def face_canvas(
    zip_path: str | Path,
    n_faces: int = 3,
    size: tuple[int, int] = (640, 480),
    face_px: int = 120,
    seed: int = 0,
) -> tuple[np.ndarray, list[PastedFace]]:
    """An RGB ``size`` (w, h) image with ``n_faces`` FER faces on a textured background."""
    width, height = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    background = 90 + 60 * np.sin(xx / 37.0) * np.cos(yy / 53.0) + rng.normal(0, 6, (height, width))
    gray = np.clip(background, 0, 255).astype(np.uint8)
    cols = max(1, width // (face_px + 40))
    if n_faces > cols * max(1, height // (face_px + 40)):
        raise ValueError(f"{n_faces} faces of {face_px}px do not fit in {width}x{height}")
    pasted = []
    for i, (name, label, face) in enumerate(detectable_faces(zip_path, n_faces, face_px)):
        row, col = divmod(i, cols)
        cell_w, cell_h = width // cols, height // max(1, (n_faces + cols - 1) // cols)
        x = col * cell_w + (cell_w - face_px) // 2 + int(rng.integers(-10, 11))
        y = row * cell_h + (cell_h - face_px) // 2 + int(rng.integers(-10, 11))
        x, y = min(max(x, 0), width - face_px), min(max(y, 0), height - face_px)
        gray[y : y + face_px, x : x + face_px] = face
        pasted.append(PastedFace(Box(x, y, face_px, face_px), label, name))
    return cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB), pasted


# %% A `bentoml serve` process (used by the serving tests and benchmarks)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_env(bentoml_home: Path, **extra: str) -> dict[str, str]:
    """The environment for a server with its own BentoML home (model store) and quiet logs."""
    return {**os.environ, "BENTOML_HOME": str(bentoml_home), "BENTOML_DO_NOT_TRACK": "True",
            "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1", **extra}


def start_bentoml_serve(bentoml_home: Path, port: int, target: str = "serving.service:EmotionService",
                        cwd: Path | None = None, stdout=subprocess.PIPE, **extra: str) -> subprocess.Popen:
    """`bentoml serve target` on 127.0.0.1:port in its own process group (so it can be stopped
    with its workers). Output goes to ``stdout``: a pipe (text) by default, or an open file."""
    bentoml = Path(sys.executable).parent / "bentoml"
    return subprocess.Popen(
        [str(bentoml), "serve", target, "--host", "127.0.0.1", "--port", str(port)],
        cwd=cwd or Path(__file__).resolve().parents[1],
        env=serve_env(bentoml_home, **extra),
        stdout=stdout, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )


def wait_ready(url: str, process: subprocess.Popen, timeout: float = 120.0, poll: float = 0.05) -> float:
    """Seconds until GET url/readyz answers 200; raises with the server's output if it exits."""
    import httpx

    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if process.poll() is not None:
            out = process.stdout.read() if process.stdout and process.stdout.readable() else ""
            raise RuntimeError(f"server exited with {process.returncode}:\n{out[-4000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return time.perf_counter() - start
        except httpx.HTTPError:
            pass
        time.sleep(poll)
    raise RuntimeError(f"{url} not ready after {timeout}s")


def stop_process_group(process: subprocess.Popen, timeout: float = 15.0) -> None:
    """SIGINT the server's process group, then SIGKILL if it has not exited within ``timeout``."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=timeout)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=10)


@contextmanager
def running_server(bentoml_home: Path, log_path: Path, **extra: str) -> Iterator[str]:
    """`bentoml serve` (logging to a file, not a pipe nobody reads: BentoML logs a traceback for
    every 4xx, and a full pipe blocks the server mid-request) until the block ends; yields its URL."""
    port = free_port()
    with open(log_path, "w") as log:
        process = start_bentoml_serve(bentoml_home, port, stdout=log, **extra)
        try:
            wait_ready(f"http://127.0.0.1:{port}", process)
            yield f"http://127.0.0.1:{port}"
        finally:
            stop_process_group(process)


def server_processes(url: str) -> list[int]:
    """The `bentoml serve` listening on url's port and its descendants (workers run in their own sessions)."""
    port, parents, family = url.rsplit(":", 1)[1].encode(), {}, set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            parents[int(pid)] = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        if b"serve" in argv and b"--port" in argv and argv[argv.index(b"--port") + 1] == port:
            family = {int(pid)}
    assert family, f"no bentoml serve process for {url}"
    while True:
        children = {pid for pid, parent in parents.items() if parent in family} - family
        if not children:
            return sorted(family)
        family |= children


def _usage(pids: list[int]) -> tuple[float, int]:
    """CPU seconds used and peak memory (sum of VmHWM, bytes) of the processes so far."""
    ticks, peak = 0, 0
    for pid in pids:
        try:
            ticks += sum(int(v) for v in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[11:13])
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        peak += int(next((line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")), 0)) * 1024
    return ticks / os.sysconf("SC_CLK_TCK"), peak


def own_peak_memory(reset: bool = False) -> int:
    """This process's peak resident memory (VmHWM, bytes); ``reset`` first sets it to the current
    memory (Linux 4.0+), so that the next reading is the peak of what runs in between."""
    if reset:
        Path("/proc/self/clear_refs").write_text("5")
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) * 1024


def server_cost(url: str, call):
    """(call()'s result, CPU seconds the server at url spent meanwhile, bytes its peak memory rose):
    the peak is the sum of its processes' VmHWM, first reset to their current memory (so an earlier,
    higher peak cannot hide this call's), sampled by the kernel, not by polling."""
    pids = server_processes(url)
    assert len(pids) >= 3, pids  # the supervisor, the HTTP service and the classifier
    for pid in pids:
        try:
            Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux 4.0+)
        except OSError:
            pass
    cpu, peak = _usage(pids)
    result = call()
    cpu_after, peak_after = _usage(pids)
    return result, cpu_after - cpu, peak_after - peak


def promote_concurrently(logged: dict[tuple[str, str], float], name: str, images, labels, baseline) -> str:
    """Run the evaluate stage's ``register_and_promote`` for every logged ``(run_id, model_uri):
    accuracy`` at the same moment (threads released together) against the current MLflow store;
    returns the run id of the version ``name@champion`` ends on, after checking the versions."""
    import threading

    from mlflow import MlflowClient

    from emotion_recognition.pipeline.registry import register_and_promote
    from emotion_recognition.tta import TestTimeAugmentation

    start, errors = threading.Barrier(len(logged)), []

    def promote(run_id: str, model_uri: str, accuracy: float) -> None:
        try:
            start.wait()
            register_and_promote(model_uri, run_id, accuracy, images, labels, TestTimeAugmentation(), name=name,
                                 baseline=baseline)
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=promote, args=(*key, accuracy)) for key, accuracy in logged.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert not errors, errors
    client = MlflowClient()
    versions = client.search_model_versions(f"name='{name}'")
    assert len(versions) - len(logged) in (0, 1), "the bundled model was registered more than once"
    return client.get_model_version_by_alias(name, "champion").run_id


# ---------------------------------------------------------------- FaceResults without a model


def face(x: int, y: int, size: int = 60, probabilities=None) -> FaceResult:
    p = np.full(len(EMOTIONS), 1 / len(EMOTIONS)) if probabilities is None else np.asarray(probabilities, float)
    return FaceResult(Box(x, y, size, size, 0.9), EMOTIONS[int(np.argmax(p))], p)


def one_hot(emotion: str, weight: float = 0.7) -> np.ndarray:
    p = np.full(len(EMOTIONS), (1 - weight) / (len(EMOTIONS) - 1))
    p[EMOTIONS.index(emotion)] = weight
    return p


# %% The test media and the tiny model (imported by the inference and serving tests)
#
# The tiny model follows the model contract (the VGG net with widths 8, 16 and 16 dense units)
# with random weights plus a bias of +3 on "happy" in its last layer: every face comes out
# "happy" with probability about 0.77 and the other six probabilities still differ from face to
# face, so tests can check both the label order end to end and that batching keeps faces apart.

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
MEDIA = SHARED / "media"
FER_ZIP = SHARED / "data" / "fer2013.zip"
HAPPY_BIAS = 3.0
HAPPY_P = float(np.exp(HAPPY_BIAS) / (np.exp(HAPPY_BIAS) + 6))  # 0.770 with a zero kernel

os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def require_shared(path: Path = SHARED) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is not present (../shared beside the repository root holds the test media)")
    return path


def media(name: str) -> Path:
    return require_shared(MEDIA / name)


def rgb(name: str) -> np.ndarray:
    """A test photo from the shared media folder as an RGB array."""
    return cv2.cvtColor(cv2.imread(str(media(name))), cv2.COLOR_BGR2RGB)


def model_params(**changes):
    """params.yaml's ``model`` group with ``changes``: e.g. ``model_params(widths=[8, 16], dense_units=16)``."""
    from emotion_recognition.pipeline.params import load_params

    return load_params(REPO_ROOT / "params.yaml").model.model_copy(update=changes)


def make_tiny_model(path: Path, seed: int = 0) -> Path:
    import keras

    from emotion_recognition.labels import EMOTION_INDEX
    from emotion_recognition.pipeline.model import build_model

    keras.utils.set_random_seed(seed)
    model = build_model(model_params(widths=[8, 16], dense_units=16))
    layer = model.get_layer("emotion")
    kernel, bias = layer.get_weights()
    bias = np.zeros_like(bias)
    bias[EMOTION_INDEX["happy"]] = HAPPY_BIAS
    layer.set_weights([kernel * 0.2, bias])
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return path


@pytest.fixture(scope="module")
def tiny_model_file(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("model") / "model.keras")


@pytest.fixture(scope="module")
def recognizer(tiny_model_file):
    """An EmotionRecognizer on the tiny model, default detection and views."""
    from emotion_recognition.inference import EmotionRecognizer

    return EmotionRecognizer.from_file(tiny_model_file)


def png_bomb(width: int = 30_000, height: int = 30_000) -> bytes:
    """A valid 1-bit PNG of width x height black pixels: ~110 KB for 30,000 x 30,000."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" * (1 + (width + 7) // 8)
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def copy_media_to(tmp: Path, *names: str) -> list[Path]:
    out = []
    for name in names:
        target = tmp / name
        shutil.copyfile(media(name), target)
        out.append(target)
    return out


def stage_args(name: str) -> list[str]:
    """The paths dvc.yaml's ``cmd`` passes to stages/<name>.py: ``main(*stage_args(name))`` runs it as DVC does."""
    import shlex

    import yaml

    cmd = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"][name]["cmd"]
    return shlex.split(cmd)[2:]
