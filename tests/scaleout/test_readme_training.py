"""README's "Changing params and comparing runs" commands, pasted as written into a fresh shell
after ``make setup``: a clean environment (no venv on PATH, no MLFLOW_*/DVC_* variables), the
project's ``.venv``, and the tiny pipeline of ``scaleout_project``. Only the epoch count and the
MLflow UI's port are changed, so that the run is short and the port free."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from testkit import free_port, stop_process_group

pytestmark = pytest.mark.scaleout

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV = Path(sys.executable).parent.parent  # what `make setup` made (.venv)


def readme_block(heading: str) -> list[str]:
    """The command lines of the first bash block under ``heading`` (comments stripped)."""
    text = (REPO_ROOT / "README.md").read_text()
    section = text[text.index(heading):]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1)
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


def fresh_shell(root: Path, home: Path, command: str, **popen) -> subprocess.Popen | subprocess.CompletedProcess:
    env = {"HOME": str(home), "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
           "MLFLOW_DISABLE_TELEMETRY": "true", "DVC_NO_ANALYTICS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    args = ["bash", "-c", command]
    if popen:
        return subprocess.Popen(args, cwd=root, env=env, start_new_session=True, **popen)
    return subprocess.run(args, cwd=root, env=env, capture_output=True, text=True, timeout=900)


def test_readme_training_commands_work_in_a_fresh_shell(scaleout_project, tmp_path):
    lines = readme_block("### Changing params and comparing runs")
    assert lines[0] == "source .venv/bin/activate", lines  # the step that makes the rest work
    project = scaleout_project("readme", None)
    (project.root / ".venv").symlink_to(VENV)
    port = free_port()
    activate, commands = lines[0], lines[1:]
    *batch, ui = commands
    assert ui.startswith("mlflow ui") and "--port 5000" in ui, ui
    for command in batch:
        command = re.sub(r"train\.epochs=\d+", "train.epochs=1", command)  # a short run; params as written otherwise
        result = fresh_shell(project.root, tmp_path, f"{activate} && {command}")
        assert result.returncode == 0, f"{command}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        if command.startswith("dvc exp run"):
            assert "Running stage 'train'" in result.stdout and "Running stage 'evaluate'" in result.stdout
        if command == "dvc exp show":
            assert re.search(r"\[\w+-\w+\]", result.stdout), result.stdout[-2000:]  # the experiment's row
    assert (project.root / "dvc_plots" / "index.html").is_file()

    server = fresh_shell(project.root, tmp_path, f"{activate} && exec {ui.replace('--port 5000', f'--port {port}')}",
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, answered = time.monotonic() + 120, None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                answered = httpx.get(f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=10",
                                     timeout=2)
                break
            except httpx.HTTPError:
                time.sleep(1)
        assert answered is not None and answered.status_code == 200, "mlflow ui did not answer"
        assert "fer-emotion" in answered.text  # the experiment the run logged into ./mlflow.db
    finally:
        stop_process_group(server)
