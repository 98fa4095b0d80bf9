"""Shared by the serving benchmarks: the test frame, a model, and a `bentoml serve` process.

Not a test: each bench script prints its own numbers. Run from the repository root.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
from tests.testkit import free_port, start_bentoml_serve, stop_process_group, wait_ready  # noqa: F401
SHARED = REPO_ROOT.parent / "shared"
FER_ZIP = SHARED / "data" / "fer2013.zip"
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def three_face_frame() -> np.ndarray:
    """640x480 RGB with 3 FER2013 faces (needs ../shared/data/fer2013.zip)."""
    from emotion_recognition.detection import detect_faces
    from tests.testkit import face_canvas

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
    from emotion_recognition.pipeline.model import build_model
    from emotion_recognition.pipeline.params import load_params

    model = build_model(load_params(REPO_ROOT / "params.yaml").model)
    out = workdir / "untrained.keras"
    model.save(out)
    return out, f"untrained model of params.yaml's network ({model.count_params():,} parameters)"


def import_into(home: Path, model: Path) -> None:
    env = {**os.environ, "BENTOML_HOME": str(home)}
    subprocess.run(
        [sys.executable, "-m", "serving.import_model", "--model-file", str(model)],
        cwd=REPO_ROOT, env=env, check=True, stdout=subprocess.DEVNULL,
    )


@contextmanager
def bentoml_server(home: Path, target: str = "serving.service:EmotionService", cwd: Path = REPO_ROOT, env: dict | None = None):
    """Start `bentoml serve` (own process group); yields (url, seconds until /readyz answered)."""
    port = free_port()
    log_path = Path(tempfile.gettempdir()) / f"fer-bench-serve-{port}.log"
    log = open(log_path, "w")
    print(f"server log: {log_path}")
    start = time.perf_counter()
    process = start_bentoml_serve(home, port, target, cwd=cwd, stdout=log, **(env or {}))
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process, timeout=180.0)
        yield url, time.perf_counter() - start
    finally:
        stop_process_group(process, timeout=20.0)
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
