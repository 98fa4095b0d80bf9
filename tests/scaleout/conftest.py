"""Servers and a tiny DVC project for the scale-out tests (marker ``scaleout``, docs/scaleout.md).

- ``postgres``: a real PostgreSQL server (Debian's ``postgresql`` package, installed by .ci/run)
  in a temporary data directory on a free loopback port. initdb refuses to run as root, so as
  root the server runs as the ``postgres`` system user the package creates (else ``nobody``).
- ``mlflow_server``: ``mlflow server`` on that database with served artifacts
  (``--artifacts-destination``), the same command as ``make mlflow-server``.
- ``team_project``: a git + DVC repository in tmp with the project's pipeline on generated faces
  and tiny settings, reproduced once against the tracking server.
Every process is started in its own session and stopped (SIGKILL as a last resort) at teardown.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from testkit import free_port, stop_process_group

BIN = Path(sys.executable).parent
REPO_ROOT = Path(__file__).resolve().parents[2]
DATASET = "data/fer2013.zip"  # where the project keeps FER2013 (untracked: each checkout brings it)
STAGES = ("fetch", "split", "augment", "train", "evaluate")


def postgres_bin() -> Path:
    """The folder holding initdb/pg_ctl: PATH first, then Debian's /usr/lib/postgresql/<v>/bin."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if not versions:
        raise RuntimeError("PostgreSQL server not installed: apt-get install postgresql (.ci/run does)")
    return Path(versions[-1]).parent


def as_server_user(command: list[str]) -> list[str]:
    """Run ``command`` as an unprivileged user when we are root (initdb and postgres refuse root)."""
    if os.geteuid() != 0:
        return command
    user = "postgres" if _user_exists("postgres") else "nobody"
    return ["runuser", "-u", user, "--", *command]


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def run_checked(command: list[str], timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, **kwargs)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server on 127.0.0.1:<free port> with an empty database ``mlflow``; yields its URI."""
    bin_dir = postgres_bin()
    # Not under pytest's tmp dir: that is private to root, and the server user must own its folder.
    base = Path(tempfile.mkdtemp(prefix="fer-pg-"))
    data, socket_dir = base / "data", base / "socket"
    socket_dir.mkdir()
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres" if _user_exists("postgres") else "nobody")
        for path in (base, socket_dir):
            os.chown(path, user.pw_uid, user.pw_gid)
    port = free_port()
    run_checked(as_server_user([str(bin_dir / "initdb"), "-D", str(data), "-U", "mlflow", "--auth=trust",
                                "-E", "UTF8", "--no-sync"]), cwd=base)
    options = f"-p {port} -k {socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off"
    run_checked(as_server_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l",
                                str(base / "server.log"), "-w", "-t", "60", "start"]), cwd=base)
    try:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=port, user="mlflow", dbname="postgres", autocommit=True) as db:
            db.execute("CREATE DATABASE mlflow")
        yield f"postgresql://mlflow@127.0.0.1:{port}/mlflow"
    finally:
        subprocess.run(as_server_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
                       capture_output=True, timeout=60, cwd=base)
        shutil.rmtree(base, ignore_errors=True)


def mlflow_server_command(backend_uri: str, artifacts: Path, port: int) -> list[str]:
    """What ``make mlflow-server`` runs (Makefile), with this test's store, folder and port."""
    return [str(BIN / "mlflow"), "server", "--backend-store-uri", backend_uri,
            "--artifacts-destination", artifacts.as_uri(), "--host", "127.0.0.1", "--port", str(port),
            "--workers", "1"]


def wait_for_mlflow(url: str, process: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"mlflow server not ready after {timeout}s:\n{log.read_text()[-4000:]}")


@pytest.fixture(scope="session")
def mlflow_server(postgres, tmp_path_factory):
    """``mlflow server`` on the PostgreSQL store with served artifacts; yields its http URL."""


    folder = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log = folder / "server.log"
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    with open(log, "w") as out:
        process = subprocess.Popen(mlflow_server_command(postgres, folder / "artifacts", port), cwd=folder,
                                   env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_mlflow(url, process, log)
        yield url
    finally:
        stop_process_group(process)


class Project:
    """A git + DVC checkout of the pipeline; ``run`` runs a command there with ``env``."""

    def __init__(self, root: Path, tracking_uri: str | None):
        self.root = root
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
        env["MLFLOW_DISABLE_TELEMETRY"] = "true"
        env["DVC_NO_ANALYTICS"] = "1"
        env["TF_CPP_MIN_LOG_LEVEL"] = "2"
        if tracking_uri:
            env["MLFLOW_TRACKING_URI"] = tracking_uri
        self.env = env

    def run(self, *command: str, timeout: float = 600, cwd: Path | None = None) -> subprocess.CompletedProcess:
        result = subprocess.run(command, cwd=cwd or self.root, env=self.env, capture_output=True, text=True,
                                timeout=timeout)
        assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        return result

    @staticmethod
    def ran(result: subprocess.CompletedProcess) -> set[str]:
        return {stage for stage in STAGES if f"Running stage '{stage}'" in result.stdout}


def init_repository(project: Project) -> None:
    project.run("git", "init", "-q", "-b", "main")
    project.run("git", "config", "user.email", "ci@example.invalid")
    project.run("git", "config", "user.name", "ci")
    project.run("dvc", "init", "-q")
    for name in (".gitignore", "data/.gitignore"):  # the project's own: data/ is in git, its contents not
        shutil.copy(REPO_ROOT / name, project.root / name)
    project.run("git", "add", "-A")
    project.run("git", "commit", "-q", "-m", "pipeline")


@pytest.fixture(scope="session")
def scaleout_project(tmp_path_factory, make_project, set_params, fer):
    """Build a tiny project: generated faces in inputs/, tiny params, git + DVC initialised."""

    def build(name: str, tracking_uri: str | None) -> Project:
        root = make_project(tmp_path_factory.mktemp(name))
        (root / "data").mkdir()
        fer.write_zip(root / DATASET)
        set_params(root, data={"source": DATASET, "sha256": None})
        project = Project(root, tracking_uri)
        init_repository(project)
        return project

    return build


@pytest.fixture(scope="session")
def team_project(scaleout_project, mlflow_server):
    """The tiny pipeline reproduced once against the tracking server (PostgreSQL + served artifacts)."""
    project = scaleout_project("team", mlflow_server)
    project.first = project.run("dvc", "repro")
    project.run("git", "add", "-A")
    project.run("git", "commit", "-q", "-m", "repro")
    project.tracking_uri = mlflow_server
    return project
