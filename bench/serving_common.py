"""Shared by the serving benchmarks: the test frame, a model, and a `bentoml serve` process.

Not a test: each bench script prints its own numbers. Run from the repository root.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
SHARED = REPO_ROOT.parent / "shared"
FER_ZIP = SHARED / "data" / "fer2013.zip"
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def three_face_frame() -> np.ndarray:
    """640x480 RGB with 3 FER2013 faces (needs ../shared/data/fer2013.zip)."""
    from emotion_recognition.detection import detect_faces
    from emotion_recognition.testing import face_canvas

    if not FER_ZIP.is_file():
        sys.exit(f"{FER_ZIP} is missing: the benchmark frame is made of FER2013 faces from it")
    frame, _ = face_canvas(FER_ZIP, 3, size=(640, 480))
    assert len(detect_faces(frame)) == 3
    return frame


def model_file(path: str | None, workdir: Path) -> tuple[Path, str]:
    """The model to benchmark: --model, else the bundled one, else an untrained model of the
    pipeline's default VGG architecture (same compute as a trained one)."""
    from emotion_recognition.model_files import bundled_model_path

    if path:
        return Path(path), f"model file {path}"
    bundled = bundled_model_path()
    if bundled:
        return bundled, f"bundled model {bundled}"
    from emotion_recognition.model import build_model

    model = build_model("vgg")
    out = workdir / "vgg-default-untrained.keras"
    model.save(out)
    return out, f"untrained build_model('vgg') (default widths, {model.count_params():,} parameters)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def import_into(home: Path, model: Path) -> None:
    env = {**os.environ, "BENTOML_HOME": str(home)}
    subprocess.run(
        [sys.executable, "-m", "serving.import_model", "--model-file", str(model)],
        cwd=REPO_ROOT, env=env, check=True, stdout=subprocess.DEVNULL,
    )


def wait_ready(url: str, process: subprocess.Popen, timeout: float = 180.0) -> float:
    import httpx

    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return time.perf_counter() - start
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} not ready after {timeout}s")


@contextmanager
def bentoml_server(home: Path, target: str = "serving.service:EmotionService", cwd: Path = REPO_ROOT, env: dict | None = None):
    """Start `bentoml serve` (own process group); yields (url, seconds until /readyz answered)."""
    port = free_port()
    log_path = Path(tempfile.gettempdir()) / f"fer-bench-serve-{port}.log"
    log = open(log_path, "w")
    print(f"server log: {log_path}")
    start = time.perf_counter()
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "bentoml"), "serve", target, "--host", "127.0.0.1", "--port", str(port)],
        cwd=cwd, env={**os.environ, "BENTOML_HOME": str(home), **(env or {})},
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process)
        yield url, time.perf_counter() - start
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        log.close()


def percentiles(seconds: list[float]) -> str:
    ms = np.asarray(seconds) * 1000
    return f"p50 {np.percentile(ms, 50):.1f} ms, p95 {np.percentile(ms, 95):.1f} ms, p99 {np.percentile(ms, 99):.1f} ms (n={len(ms)})"


def machine_note() -> str:
    load = os.getloadavg()
    return f"{os.cpu_count()} CPUs, load average {load[0]:.2f} (1 min) at the start"


@contextmanager
def temp_home():
    with tempfile.TemporaryDirectory(prefix="fer-bench-") as tmp:
        yield Path(tmp)
