"""Atomic writes and the stages' one-line error exit."""

import json
import signal
import subprocess
import sys

import mlflow
import numpy as np
import pytest

from emotion_recognition.pipeline.data import DatasetError, Split, save_split
from emotion_recognition.pipeline.params import ParamsError
from emotion_recognition.pipeline.stage_io import atomic_path, run_stage, write_json


def test_atomic_path_publishes_the_file_only_when_the_block_succeeds(tmp_path):
    target = tmp_path / "deep" / "out.json"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp != target
        tmp.write_text("complete")
        assert not target.exists()
    assert target.read_text() == "complete"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.json"]


def test_a_failing_writer_leaves_no_partial_file(tmp_path):
    target = tmp_path / "out.csv"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half a fi")
            raise RuntimeError("writer died")
    assert list(tmp_path.iterdir()) == []


def test_a_failing_writer_keeps_the_previous_version(tmp_path):
    target = tmp_path / "metrics.json"
    write_json(target, {"accuracy": 0.5})

    class Unserialisable:
        pass

    with pytest.raises(TypeError):
        write_json(target, {"accuracy": Unserialisable()})
    assert json.loads(target.read_text()) == {"accuracy": 0.5}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_save_split_failure_leaves_no_npz(tmp_path):
    target = tmp_path / "train.npz"
    broken = Split(np.zeros((2, 48, 48), np.uint8), np.zeros(2, np.int64), names=None)

    class Boom:
        def __array__(self, *args, **kwargs):
            raise RuntimeError("cannot serialise")

    broken.names = Boom()
    with pytest.raises(RuntimeError):
        save_split(broken, target)
    assert list(tmp_path.iterdir()) == []


def test_atomic_outputs_get_ordinary_permissions(tmp_path):
    """Outputs are read by the service, MLflow and other users: not the 0600 of a temp file."""
    import os

    umask = os.umask(0)
    os.umask(umask)
    target = tmp_path / "model.bin"
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"x")
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.parametrize("error", [DatasetError("bad data in x.zip"), ParamsError("params.yaml: train.epochs: ..."),
                                   FileNotFoundError("no model file at data/model/model.keras")])
def test_run_stage_turns_known_problems_into_a_message_and_exit_2(error, capsys):
    def main():
        raise error

    with pytest.raises(SystemExit) as exit_info:
        run_stage(main, [])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == f"error: {error}\n"


def test_run_stage_lets_bugs_raise():
    def main():
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        run_stage(main, [])


STOPPABLE_STAGE = """
import sys, time
import mlflow
from emotion_recognition.pipeline.stage_io import atomic_path, run_stage

def main(tracking_uri):  # a stage's paths and settings come from its command line
    mlflow.set_tracking_uri(tracking_uri)
    with mlflow.start_run() as run, atomic_path("out.txt") as tmp:
        tmp.write_text("half")
        print(run.info.run_id, flush=True)
        time.sleep(60)

run_stage(main)
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_stage_marks_its_mlflow_run_killed_and_leaves_no_partial_output(signum, mlflow_store, isolated):
    """`kill` or Ctrl+C on `dvc repro` must not leave a run RUNNING in the store forever."""
    script = isolated / "stage.py"
    script.write_text(STOPPABLE_STAGE)
    stage = subprocess.Popen([sys.executable, str(script), mlflow_store], cwd=isolated,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run_id = stage.stdout.readline().strip()
    assert run_id, stage.stderr.read()
    stage.send_signal(signum)
    _, err = stage.communicate(timeout=60)

    assert stage.returncode == 128 + signum
    assert f"MLflow run {run_id} marked KILLED" in err and "Traceback" not in err
    assert mlflow.MlflowClient(mlflow_store).get_run(run_id).info.status == "KILLED"
    assert sorted(p.name for p in isolated.iterdir() if not p.name.startswith("mlflow")) == ["stage.py"]


def test_run_stage_passes_the_command_line_and_refuses_a_wrong_one(capsys):
    seen = []
    run_stage(lambda in_dir, out_dir: seen.append((in_dir, out_dir)), ["data/a", "data/b"])
    assert seen == [("data/a", "data/b")]
    with pytest.raises(SystemExit) as exit_info:
        run_stage(lambda in_dir, out_dir: None, ["data/a"])
    assert exit_info.value.code == 2 and "IN_DIR OUT_DIR (dvc.yaml's cmd)" in capsys.readouterr().err


def test_run_stage_restores_the_callers_signal_handlers():
    before = signal.getsignal(signal.SIGTERM)
    run_stage(lambda: None, [])
    assert signal.getsignal(signal.SIGTERM) is before
