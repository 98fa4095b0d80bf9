"""Small helpers every stage uses: atomic writes, JSON metrics, user-facing errors."""

from __future__ import annotations

import inspect
import json
import os
import signal
import sys
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


class StageInputError(ValueError):
    """A problem with what a stage was given (params, data) that the user can fix: the stage stops
    with this one-line message and exit code 2, not a traceback. ``DatasetError`` and
    ``ParamsError`` are such errors; defined here so this module imports nothing of the package."""


@contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix or path.suffix)
    os.close(fd)
    umask = os.umask(0o022)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs get the usual permissions
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def save_figure(figure, path: str | Path) -> None:
    """A matplotlib figure as a PNG that appears only once complete; the figure is closed."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=100, format="png")
    plt.close(figure)


def write_json(path: str | Path, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def stop_on_signal(signum: int, frame=None) -> None:
    """SIGTERM/SIGINT handler: mark the active MLflow run KILLED, then exit 128+signum.

    Without it a killed `dvc repro` (SIGTERM) left its MLflow run RUNNING forever. Exiting with
    SystemExit unwinds the stage, so ``atomic_path`` still removes its half-written temp files.
    """
    name = signal.Signals(signum).name
    mlflow = sys.modules.get("mlflow")  # only stages that imported MLflow have a run to close
    run = mlflow.active_run() if mlflow is not None else None
    if run is not None:
        # one quick try: a stopped stage must not wait out retries against a dead tracking server
        os.environ.update(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="3")
        try:
            mlflow.end_run("KILLED")
            print(f"stopped by {name}: MLflow run {run.info.run_id} marked KILLED", file=sys.stderr)
        except Exception as error:  # e.g. the store is locked mid-write: still stop promptly
            print(f"stopped by {name}: could not mark MLflow run {run.info.run_id} KILLED ({error})",
                  file=sys.stderr)
    else:
        print(f"stopped by {name}", file=sys.stderr)
    sys.exit(128 + signum)


def run_stage(main: Callable[..., None], argv: list[str] | None = None) -> None:
    """Run a stage's ``main(*paths)`` with the paths dvc.yaml's ``cmd`` gives it; known problems
    (bad params, bad data, a wrong command line) exit with a one-line message.

    SIGTERM and SIGINT (Ctrl+C, `kill`, DVC stopping the stage) end the MLflow run as KILLED.
    """
    argv = sys.argv[1:] if argv is None else argv
    names = list(inspect.signature(main).parameters)
    if len(argv) != len(names):
        print(f"usage: python {sys.argv[0]} {' '.join(name.upper() for name in names)} (dvc.yaml's cmd)", file=sys.stderr)
        sys.exit(2)
    previous = {signum: signal.signal(signum, stop_on_signal) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        main(*argv)
    except (StageInputError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    finally:  # stages also run inside tests and notebooks: leave their handlers as they were
        for signum, handler in previous.items():
            signal.signal(signum, handler)
