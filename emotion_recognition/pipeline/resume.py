"""Resume a training run after a kill: the full state is backed up after every epoch.

DVC deletes a stage's outputs before running it, so the backup lives outside them, in
``data/train_backup/`` (in data/.gitignore, not a DVC output). It holds Keras'
``BackupAndRestore`` files (model and optimizer weights, the epoch), the best epoch's model so
far, the history rows and the MLflow run id. When ``dvc repro`` starts the stage again with the
same plan (params, and the sha256 of the stage's data and code: ``inputs``), training continues
after the last finished epoch in the same MLflow run; another plan, or a damaged backup, starts
afresh and says why. A finished run removes the backup.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import keras
import yaml

from emotion_recognition.model_files import sha256_file

BACKUP_DIR = Path("data/train_backup")
log = logging.getLogger(__name__)


def stage_inputs(stage: str = "train", dvc_file: Path = Path("dvc.yaml")) -> dict[str, str]:
    """sha256 of every file under the stage's deps in dvc.yaml (what DVC checks): a killed run
    resumes only with the same data and code."""
    deps = yaml.safe_load(dvc_file.read_text())["stages"][stage]["deps"]
    hashes = {}
    for dep in deps:
        path = Path(dep)
        for file in sorted(path.rglob("*")) if path.is_dir() else [path]:
            if file.is_file():
                hashes[file.as_posix()] = sha256_file(file)
            elif file == path:
                hashes[file.as_posix()] = "missing"
    return hashes


class TrainingBackup:
    def __init__(self, plan: dict, folder: Path = BACKUP_DIR, inputs: dict[str, str] | None = None):
        self.folder = Path(folder)
        self.inputs = inputs or {}  # file -> sha256: a backup of other data or code is not resumed
        self.plan = hashlib.sha256(json.dumps({**plan, "inputs": self.inputs}, sort_keys=True, default=str).encode()).hexdigest()
        self.state_path = self.folder / "state.json"
        self.best_model = self.folder / "best.keras"
        self.keras_dir = self.folder / "keras"

    def load(self) -> dict | None:
        """The state of an interrupted run of this plan, or None (and no backup) to start afresh."""
        if not self.folder.exists():
            return None
        try:
            return self._resumable()
        except (OSError, ValueError, KeyError, TypeError) as error:  # another plan, or a partial or damaged copy
            log.warning("train: not resuming from %s (%s); starting afresh", self.folder, error)
            shutil.rmtree(self.folder, ignore_errors=True)
            return None

    def _resumable(self) -> dict:
        state = json.loads(self.state_path.read_text())
        old = state.get("inputs", {})
        if state.get("plan") != self.plan:
            changed = sorted(f for f in {*self.inputs, *old} if self.inputs.get(f) != old.get(f))
            raise ValueError(f"another plan: changed {', '.join(changed) or 'params'}")
        metadata = self.keras_dir / "training_metadata.json"
        try:
            epoch = int(json.loads(metadata.read_text())["epoch"])
        except (ValueError, KeyError):  # killed while writing it: the previous epoch's copy
            shutil.copyfile(f"{metadata}.bkp", metadata)
            epoch = int(json.loads(metadata.read_text())["epoch"])
        if not (self.keras_dir / "latest.weights.h5").is_file() or not self.best_model.is_file():
            raise FileNotFoundError("no weights backed up")
        # a kill between writing the rows and the weights: keep the rows the weights cover
        state["rows"] = [row for row in state["rows"] if row["epoch"] <= epoch]
        state["epoch"] = epoch
        state["best_val_accuracy"] = max((row["val_accuracy"] for row in state["rows"]), default=None)
        return state

    def start(self, run_id: str) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._write({"plan": self.plan, "inputs": self.inputs, "run_id": run_id, "rows": []})

    def _write(self, state: dict) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        tmp.replace(self.state_path)

    def callbacks(self, history) -> list[keras.callbacks.Callback]:
        """After ``history`` (a HistoryWriter) in the callback list: rows first, then the weights."""
        return [_SaveRows(self, history), keras.callbacks.BackupAndRestore(
            # double: a kill while the weights are written falls back to the previous epoch's
            str(self.keras_dir), double_checkpoint=True, delete_checkpoint=False)]

    @contextmanager
    def mlflow_run(self, run_name: str, history) -> Iterator[tuple[object, dict | None]]:
        """(run, resumed state): the interrupted run of this plan, reopened with its history rows,
        else a new run named ``run_name``."""
        import mlflow

        resumed = self.load()
        with mlflow.start_run(**({"run_id": resumed["run_id"]} if resumed else {"run_name": run_name})) as run:
            if resumed:
                history.rows = resumed["rows"]
            else:
                self.start(run.info.run_id)
            yield run, resumed

    def keep_best(self, checkpoint: Path) -> None:
        """Copy the best epoch's model (kept here across kills) to the stage's ``checkpoint`` output."""
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.best_model, checkpoint)

    def finish(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


class _SaveRows(keras.callbacks.Callback):
    def __init__(self, backup: TrainingBackup, history):
        super().__init__()
        self.backup, self.history = backup, history

    def on_epoch_end(self, epoch, logs=None):
        state = json.loads(self.backup.state_path.read_text())
        state["rows"] = self.history.rows
        self.backup._write(state)
