"""``emotion batch --engine ray`` on a real Ray cluster (a head and one worker node on 127.0.0.1):
the same rows as the local engine, from the same (bundled INT8) OpenVINO copy."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

from emotion_recognition import batch
from emotion_recognition.media import write_image
from emotion_recognition.runtime import CACHE_DIR_VARIABLE
from testkit import FER_ZIP, REPO_ROOT, face_canvas, free_port, media, require_shared

pytestmark = pytest.mark.scaleout
RAY = Path(sys.executable).parent / "ray"


def start_node(arguments: list[str], log: Path, env: dict) -> subprocess.Popen:
    """``ray start --block`` in its own process group (stopped with it: no ``ray stop``, which
    would stop every Ray on the machine), once it says it has started."""
    out = open(log, "w")
    process = subprocess.Popen([str(RAY), "start", "--block", "--node-ip-address=127.0.0.1",
                                "--disable-usage-stats", *arguments], env=env, stdout=out,
                               stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    while "Ray runtime started" not in log.read_text():
        assert process.poll() is None and time.monotonic() < deadline, f"ray start failed:\n{log.read_text()}"
        time.sleep(0.2)
    return process


@pytest.fixture(scope="module")
def ray_cluster():
    """A head (1 CPU: the read and write tasks) and a worker node (2 CPUs: the actors). An actor
    pool holding every CPU would leave none for reading and the job would wait forever."""
    pytest.importorskip("ray", reason="ray is not installed: pip install '.[ray]'")
    temp = Path(tempfile.mkdtemp(prefix="ray-"))  # short: Ray's socket paths must fit 107 bytes
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    env["PYTHONPATH"] = f"{REPO_ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"  # the actors import it
    env[CACHE_DIR_VARIABLE] = str(temp / "cache")  # an actor converting its own copy would write there
    port = free_port()
    nodes = []
    try:
        nodes.append(start_node(["--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false",
                                 f"--temp-dir={temp}"], temp / "head.log", env))
        nodes.append(start_node([f"--address=127.0.0.1:{port}", "--num-cpus=2"], temp / "worker.log", env))
        yield f"127.0.0.1:{port}", temp / "cache"
    finally:
        for node in reversed(nodes):
            os.killpg(node.pid, signal.SIGKILL)
            node.wait()
        shutil.rmtree(temp, ignore_errors=True)


def test_ray_engine_gives_the_local_engines_rows(ray_cluster, tmp_path):
    """The bundled model: its INT8 copy beside it goes to the actors, which convert nothing."""
    address, actor_cache = ray_cluster
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("angry_girl.jpg", "messi5.jpg", "Megamind.avi"):
        shutil.copy(media(name), folder / name)
    write_image(face_canvas(require_shared(FER_ZIP), n_faces=2, size=(320, 240))[0], folder / "canvas.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    out = tmp_path / "ray" / "r.parquet"
    result = subprocess.run(
        [sys.executable, "-m", "emotion_recognition.cli", "batch", str(folder), "-o", str(out), "--engine", "ray",
         "--ray-address", address, "--workers", "2", "--every", "90"],
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "5 file(s)" in result.stdout and "1 error(s)" in result.stdout
    assert not list(actor_cache.glob("**/*.xml"))
    local = batch.analyze_paths([folder], every=90)
    remote = pd.read_parquet(out).sort_values(["file", "frame", "face"]).reset_index(drop=True)
    assert len(local) >= 6 and local["track_id"].notna().any()
    pd.testing.assert_frame_equal(remote, local, check_dtype=False)
    files = pd.read_parquet(tmp_path / "ray" / "r.files.parquet").sort_values("file").reset_index(drop=True)
    pd.testing.assert_frame_equal(files, local.attrs["files"], check_dtype=False)
