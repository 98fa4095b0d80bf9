"""The pipeline against hostile or broken inputs (issue 41): a registry carrying a pickle payload,
concurrent promotions, an unreachable tracking server, damaged or stale training backups, and zip
bombs. Every input is generated here; each test bounds the time (and, for bombs, the memory)."""

import json
import signal
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
import zipfile
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from emotion_recognition.pipeline import data, registry
from emotion_recognition.pipeline.data import DatasetError, Split, read_fer2013, save_split
from emotion_recognition.labels import EMOTIONS
from emotion_recognition.pipeline.registry import load_registered_model, promotion_lock, register_and_promote
from emotion_recognition.pipeline.resume import TrainingBackup
from emotion_recognition.pipeline.stage_io import StageInputError
from emotion_recognition.pipeline.tracking import configure_mlflow
from emotion_recognition.model_files import CHAMPION_ALIAS
from emotion_recognition.tta import TestTimeAugmentation
from testkit import promote_concurrently, stage_args

REPO_ROOT = Path(__file__).resolve().parents[1]
HAPPY, FEAR, ANGRY, SAD = (EMOTIONS.index(e) for e in ("happy", "fear", "angry", "sad"))
# 6 happy, 4 fear, 3 angry, 2 sad, 1 of each other class: constant models score 6, 4, 3 and 2 of 18
COUNTS = {HAPPY: 6, FEAR: 4, ANGRY: 3, SAD: 2}
LABELS = np.array([c for c in range(7) for _ in range(COUNTS.get(c, 1))])
IMAGES = np.random.default_rng(0).integers(0, 256, (len(LABELS), 48, 48)).astype(np.uint8)
MLFLOW_HTTP = ("MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR")


def closed_port() -> int:
    with socket.socket() as probe:  # bound then closed: nothing listens there
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# %% Pickle off: a registered model is read as its .keras file in safe mode


class WritesMarker:
    """Unpickling this creates ``path``: what an attacker's custom_objects.cloudpickle would do."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def test_a_pickle_payload_in_the_registry_is_never_unpickled(mlflow_store, make_constant_model, log_keras_model, tmp_path):
    from emotion_recognition.pipeline.registry import export_champion

    configure_mlflow()
    marker = tmp_path / "payload-ran"
    with mlflow.start_run():
        info = mlflow.tensorflow.log_model(make_constant_model(SAD), name="model", pip_requirements=["tensorflow-cpu"],
                                           custom_objects={"evil": WritesMarker(marker)})
    hostile = mlflow.register_model(info.model_uri, "fer-emotion")
    client = MlflowClient()
    client.set_registered_model_alias("fer-emotion", CHAMPION_ALIAS, hostile.version)
    # precondition: MLflow's own loader runs the payload (what the project used to call)
    mlflow.tensorflow.load_model(f"models:/fer-emotion/{hostile.version}")
    assert marker.exists()
    marker.unlink()

    run_id, model_uri = log_keras_model(make_constant_model(HAPPY))
    decision = register_and_promote(model_uri, run_id, 6 / 18, IMAGES, LABELS, TestTimeAugmentation(), baseline=None)
    assert f"beats champion v{hostile.version} (0.1111)" in decision  # the champion was loaded and re-measured
    client.set_registered_model_alias("fer-emotion", CHAMPION_ALIAS, hostile.version)
    source = export_champion(tmp_path / "export")  # what serving.import_model stores
    assert source.path.name == "model.keras" and source.metadata["mlflow_version"] == str(hostile.version)
    assert list(source.path.parent.iterdir()) == [source.path]  # no cloudpickle file beside it
    assert not marker.exists()


def test_a_lambda_layer_in_the_registry_is_refused(mlflow_store, log_keras_model):
    """Keras' safe mode: a Lambda layer's marshalled bytecode is code, not weights."""
    import keras

    configure_mlflow()
    inputs = keras.Input((48, 48, 1))
    model = keras.Model(inputs, keras.layers.Lambda(lambda x: x[:, 0, 0, :1] * 0 + keras.ops.ones((1, 7)) / 7)(inputs))
    _, model_uri = log_keras_model(model)
    version = mlflow.register_model(model_uri, "fer-emotion").version
    with pytest.raises(StageInputError, match=f"fer-emotion v{version}: no safely loadable model.keras"):
        load_registered_model("fer-emotion", version)


# %% Atomic promotion


def test_the_promotion_lock_excludes_waits_and_breaks_a_stale_holder(mlflow_store):
    configure_mlflow()
    client = MlflowClient()
    inside, most = [0], [0]

    def promote():
        with promotion_lock(client, "locked"):
            inside[0] += 1
            most[0] = max(most[0], inside[0])
            time.sleep(0.05)
            inside[0] -= 1

    threads = [threading.Thread(target=promote) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert most[0] == 1 and inside[0] == 0
    assert not client.search_registered_models("name = 'locked-promotion-lock'")  # released

    client.create_registered_model("locked-promotion-lock", tags={"holder": "host:4242:dead"})
    started = time.monotonic()
    with pytest.raises(StageInputError, match="held by host:4242:dead"):
        with promotion_lock(client, "locked", wait=0.5):
            pass
    assert time.monotonic() - started < 10
    with promotion_lock(client, "locked", stale_after=0.0):  # a killed holder's lock is broken
        assert client.get_registered_model("locked-promotion-lock").tags["holder"] != "host:4242:dead"


@pytest.fixture
def slow_champion_read(monkeypatch):
    """Slow the champion read so that, without the lock, concurrent runs interleave between reading
    and setting the alias (the race tests then fail)."""
    read = registry.current_champion

    def slow_read(*args, **kwargs):
        champion = read(*args, **kwargs)
        time.sleep(0.3)
        return champion

    monkeypatch.setattr(registry, "current_champion", slow_read)


@pytest.mark.slow
def test_concurrent_promotions_leave_the_best_model_champion_every_time(mlflow_store, make_constant_model,
                                                                         log_keras_model, slow_champion_read, tmp_path):
    """Three runs evaluated at once in a fresh store with a bundled model scoring 3/18: two beat it
    (6/18, 4/18), one loses (2/18). Whatever the order, the 6/18 model ends champion and the loser
    never re-registers the bundled model over it."""
    configure_mlflow()
    baseline = tmp_path / "bundled.keras"
    make_constant_model(ANGRY).save(baseline)
    logged = {log_keras_model(make_constant_model(label)): COUNTS[label] / 18 for label in (HAPPY, FEAR, SAD)}
    for round_ in range(3):
        champion = promote_concurrently(logged, f"race-{round_}", IMAGES, LABELS, baseline)
        assert champion == next(iter(logged))[0], f"round {round_}: the champion is not the best run"


# %% Unreachable tracking server


@pytest.fixture
def evaluate_inputs(project, monkeypatch):
    """What `evaluate` reads, and previous outputs it must leave alone; MLflow's HTTP variables unset
    so the project's defaults apply (monkeypatch restores them)."""
    for name in MLFLOW_HTTP:
        monkeypatch.delenv(name, raising=False)
    save_split(Split(IMAGES, LABELS, np.array([f"{i}.jpg" for i in range(len(LABELS))])), project / "data/split/test.npz")
    (project / "data/model").mkdir(parents=True)
    (project / "data/model/run.json").write_text(json.dumps({"run_id": "0" * 32, "model_uri": "models:/m-0"}))
    previous = {project / name: f"previous {name}" for name in
                ("metrics/evaluate.json", "plots/confusion.csv", "plots/per_class.csv", "plots/confusion_matrix.png")}
    for path, text in previous.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return previous


def test_an_unreachable_tracking_server_fails_fast_with_one_line_and_outputs_intact(
        evaluate_inputs, load_stage, monkeypatch, capsys):
    from emotion_recognition.pipeline.stage_io import run_stage

    uri = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    started = time.monotonic()
    with pytest.raises(SystemExit) as stopped:
        run_stage(load_stage("evaluate").main, stage_args("evaluate"))
    elapsed = time.monotonic() - started
    error = capsys.readouterr().err.strip()
    assert stopped.value.code == 2 and elapsed < 30, elapsed  # MLflow's own defaults retry for minutes
    assert error.startswith(f"error: MLflow tracking store {uri} is not usable") and "\n" not in error
    assert all(path.read_text() == text for path, text in evaluate_inputs.items())


def test_sigterm_stops_a_stage_waiting_on_a_silent_server_in_seconds(evaluate_inputs, project):
    with socket.socket() as server:  # accepts connections and never answers
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        connected = threading.Event()

        def hold():
            held = []
            while True:
                try:
                    held.append(server.accept()[0])
                except OSError:  # closed at the end of the test
                    return
                connected.set()

        threading.Thread(target=hold, daemon=True).start()
        env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("MLFLOW_HTTP")}
        env.update(MLFLOW_TRACKING_URI=f"http://127.0.0.1:{server.getsockname()[1]}",
                   PYTHONPATH=str(REPO_ROOT), MLFLOW_HTTP_REQUEST_TIMEOUT="120")  # a patient client
        stage = subprocess.Popen([sys.executable, "stages/evaluate.py", *stage_args("evaluate")], cwd=project, env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert connected.wait(180), "the stage never contacted the tracking server"
            time.sleep(0.5)
            stage.send_signal(signal.SIGTERM)
            started = time.monotonic()
            _, err = stage.communicate(timeout=60)
            elapsed = time.monotonic() - started
        finally:
            if stage.poll() is None:
                stage.kill()
    assert stage.returncode == 128 + signal.SIGTERM and elapsed < 5, (stage.returncode, elapsed, err[-2000:])
    assert "Traceback" not in err and "stopped by SIGTERM" in err
    assert all(path.read_text() == text for path, text in evaluate_inputs.items())


# %% Resume after a kill


def write_backup(folder: Path, backup: TrainingBackup, epoch: int = 2) -> None:
    """The files a run killed after ``epoch`` leaves (Keras' weights are not read by load())."""
    backup.start("run-1")
    state = json.loads(backup.state_path.read_text())
    state["rows"] = [{"epoch": e, "val_accuracy": e / 10} for e in range(1, epoch + 1)]
    backup.state_path.write_text(json.dumps(state))
    (folder / "keras").mkdir()
    (folder / "keras/training_metadata.json").write_text(json.dumps({"epoch": epoch}))
    (folder / "keras/latest.weights.h5").write_bytes(b"weights")
    backup.best_model.write_bytes(b"model")


@pytest.fixture
def stage_inputs():
    from emotion_recognition.pipeline.resume import stage_inputs

    return stage_inputs


@pytest.fixture
def train_inputs(isolated):
    (isolated / "dvc.yaml").write_text("stages:\n  train:\n    cmd: x\n    deps: [code.py, data/augmented, absent.npz]\n")
    (isolated / "code.py").write_text("x = 1\n")
    (isolated / "data/augmented").mkdir(parents=True)
    (isolated / "data/augmented/train.npz").write_bytes(b"faces")
    return isolated


def test_the_fingerprint_covers_the_stages_data_and_code(train_inputs, stage_inputs):
    hashes = stage_inputs()
    assert sorted(hashes) == ["absent.npz", "code.py", "data/augmented/train.npz"] and hashes["absent.npz"] == "missing"
    (train_inputs / "data/augmented/train.npz").write_bytes(b"other faces")
    assert stage_inputs()["data/augmented/train.npz"] != hashes["data/augmented/train.npz"]
    assert stage_inputs(dvc_file=REPO_ROOT / "dvc.yaml").keys() >= {"emotion_recognition/pipeline/model.py", "stages/train.py"}


def test_a_backup_resumes_only_with_the_same_data_code_and_params(train_inputs, stage_inputs, caplog):
    folder = Path("data/train_backup")  # relative, as the stage uses it
    write_backup(folder, TrainingBackup({"epochs": 5}, folder, stage_inputs()))
    state = TrainingBackup({"epochs": 5}, folder, stage_inputs()).load()
    assert state["epoch"] == 2 and state["run_id"] == "run-1" and not caplog.text

    (train_inputs / "code.py").write_text("x = 2\n")
    assert TrainingBackup({"epochs": 5}, folder, stage_inputs()).load() is None
    assert "(another plan: changed code.py); starting afresh" in caplog.text and not folder.exists()

    write_backup(folder, TrainingBackup({"epochs": 5}, folder, stage_inputs()))
    caplog.clear()
    assert TrainingBackup({"epochs": 6}, folder, stage_inputs()).load() is None
    assert "changed params" in caplog.text


@pytest.mark.parametrize("damage", ["state.json", "keras/training_metadata.json", "keras/latest.weights.h5"])
def test_a_damaged_backup_starts_afresh_once_with_a_message(train_inputs, stage_inputs, caplog, damage):
    folder = Path("data/train_backup")  # relative, as the stage uses it
    backup = TrainingBackup({"epochs": 5}, folder, stage_inputs())
    write_backup(folder, backup)
    if damage.endswith(".json"):
        (folder / damage).write_text('{"epo')  # killed mid-write, and no .bkp beside it
    else:
        (folder / damage).unlink()
    assert backup.load() is None
    assert "train: not resuming from data/train_backup (" in caplog.text and not folder.exists()
    caplog.clear()
    assert backup.load() is None and not caplog.text  # the next run is not stuck on it


def test_a_half_written_keras_metadata_falls_back_to_its_bkp(train_inputs, stage_inputs):
    folder = Path("data/train_backup")  # relative, as the stage uses it
    backup = TrainingBackup({"epochs": 5}, folder, stage_inputs())
    write_backup(folder, backup, epoch=3)
    metadata = folder / "keras/training_metadata.json"
    Path(f"{metadata}.bkp").write_text(json.dumps({"epoch": 2}))
    metadata.write_text("{")
    state = backup.load()
    assert state["epoch"] == 2 and [row["epoch"] for row in state["rows"]] == [1, 2]


# %% fetch: zip bombs and downloads


def bomb(path: Path, members: dict[str, int]) -> Path:
    """A zip of ``name: size`` members of zeros, deflated: megabytes declared, kilobytes on disk."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, size in members.items():
            archive.writestr(name, bytes(size))
    return path


def read_bounded(path: Path) -> str:
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(DatasetError) as error:
            read_fer2013(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.monotonic() - started < 5 and peak < 20 << 20, peak
    return str(error.value)


def test_a_zip_bomb_member_is_refused_before_it_is_decompressed(tmp_path):
    path = bomb(tmp_path / "bomb.zip", {"train/happy/0.jpg": 200 << 20})
    assert path.stat().st_size < 300_000
    assert "entry 'train/happy/0.jpg' unpacks" in read_bounded(path)


def test_a_high_ratio_member_under_the_size_cap_is_refused(tmp_path):
    assert "ratio 100" in read_bounded(bomb(tmp_path / "ratio.zip", {"train/happy/0.jpg": 5 << 20}))


def test_a_member_larger_than_its_header_says_is_refused(tmp_path):
    path = bomb(tmp_path / "liar.zip", {"train/happy/0.jpg": 4 << 20})
    raw = bytearray(path.read_bytes())
    declared = (4 << 20).to_bytes(4, "little")
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):  # local header, central directory
        at = raw.index(signature) + offset
        assert raw[at:at + 4] == declared
        raw[at:at + 4] = (1000).to_bytes(4, "little")
    path.write_bytes(bytes(raw))
    message = read_bounded(path)
    assert "train/happy/0.jpg" in message


def test_member_count_and_total_size_are_capped(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "MAX_ZIP_MEMBERS", 5)
    many = bomb(tmp_path / "many.zip", {f"train/happy/{i}.jpg": 10 for i in range(6)})
    assert "6 zip entries, more than the limit of 5" in read_bounded(many)
    monkeypatch.setattr(data, "MAX_TOTAL_BYTES", 100)
    assert "more than the limit of 100" in read_bounded(bomb(tmp_path / "big.zip", {"train/happy/0.jpg": 101}))
