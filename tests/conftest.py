"""Shared fixtures for the tests.

Pipeline tests never touch the project's own ``data/``, ``metrics/``, ``plots/``, ``mlflow.db`` or
``dvc.lock``: they use the ``isolated`` fixture (working directory = the test's ``tmp_path``,
``MLFLOW_TRACKING_URI`` = a SQLite file there) and build what they need inside ``tmp_path``:

- ``fer``: tiny generated FER2013 look-alikes, written as the image-folder zip
  (``train/<label>/*.jpg``, ``test/<label>/*.jpg``) or as ``fer2013.csv`` (``emotion,pixels,Usage``
  in the CSV's own label order);
- ``mlflow_store``: a real MLflow SQLite store, migrated once per session and copied per test;
- ``project``: a copy of dvc.yaml, params.yaml, stages/ and the package's sources to run stages in;
- ``shared_fer2013``: ``../shared/data/fer2013.zip`` when present, else the test is skipped.
"""

from __future__ import annotations

import csv
import importlib.util
import os
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np
import pytest
import yaml

from emotion_recognition.labels import EMOTIONS

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_FER2013 = REPO_ROOT.parent / "shared" / "data" / "fer2013.zip"
TRAIN_PER_CLASS = 6
TEST_PER_CLASS = 3
# fer2013.csv's own codes, written out here rather than taken from the package under test
CSV_CODE = {"angry": 0, "disgust": 1, "fear": 2, "happy": 3, "sad": 4, "surprise": 5, "neutral": 6}

# MLflow 3 sends usage telemetry from a background thread and flushes it at exit; CI has no
# internet, and a stage stopped by SIGTERM once took over 60 s to exit there. Tests (and the stage
# processes they start, which inherit this) do not phone home.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# OpenVINO copies of test models go to a session folder, never the user's cache (runtime.cache_dir)
os.environ.setdefault("EMOTION_CACHE_DIR", tempfile.mkdtemp(prefix="fer-test-cache-"))


# %% Isolation


def outside_repo(folder: Path) -> Path:
    """Refuse to work in the project itself (a training run may be using data/, mlflow.db ...)."""
    folder = Path(folder).resolve()
    assert folder != REPO_ROOT and REPO_ROOT not in folder.parents, f"tests must not write in {REPO_ROOT}"
    return folder


@contextmanager
def isolated_in(folder: Path) -> Iterator[Path]:
    """Work in ``folder`` with MLflow pointed at ``folder``/mlflow.db (never the project's store)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.chdir(outside_repo(folder))
        # mlflow.set_tracking_uri/set_registry_uri/set_experiment also write these variables;
        # setting each through monkeypatch first makes the exit restore what was there before.
        for name in ("MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
            monkeypatch.setenv(name, "")
            monkeypatch.delenv(name)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
        try:
            yield folder
        finally:
            if "mlflow" in sys.modules:  # no active run, experiment or URI left for the next test
                import mlflow
                import mlflow.tracking.fluent

                while mlflow.active_run():
                    mlflow.end_run()
                mlflow.set_tracking_uri(None)
                mlflow.set_registry_uri(None)
                mlflow.tracking.fluent._active_experiment_id = None


@pytest.fixture
def isolated(tmp_path: Path) -> Iterator[Path]:
    """Run the test in ``tmp_path`` with MLflow pointed at a SQLite file there."""
    with isolated_in(tmp_path):
        yield tmp_path


# %% FER2013 look-alikes


@dataclass(frozen=True)
class Face:
    split: str  # train | test
    label: str  # a name in EMOTIONS
    filename: str
    jpeg: bytes
    pixels: np.ndarray = field(compare=False)  # the 48x48 uint8 image a reader must return for `jpeg`

    @property
    def entry(self) -> str:
        return f"{self.split}/{self.label}/{self.filename}"


def make_face(label_index: int, rng: np.random.Generator) -> np.ndarray:
    """A noisy 48x48 face-sized image with a bright patch whose place depends on the class."""
    image = rng.integers(30, 120, (48, 48)).astype(np.uint8)
    row, col = divmod(label_index, 3)
    image[4 + 14 * row : 16 + 14 * row, 4 + 14 * col : 16 + 14 * col] = 230
    return image


def encode_jpeg(image: np.ndarray) -> tuple[bytes, np.ndarray]:
    ok, buffer = cv2.imencode(".jpg", image)
    assert ok
    data = buffer.tobytes()
    return data, cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)


class FerFactory:
    """Generated faces and writers for both FER2013 formats."""

    def __init__(self, train_per_class: int = TRAIN_PER_CLASS, test_per_class: int = TEST_PER_CLASS, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.faces: list[Face] = []
        for split, per_class, prefix in (("train", train_per_class, "Training"), ("test", test_per_class, "PublicTest")):
            for label_index, label in enumerate(EMOTIONS):
                for i in range(per_class):
                    jpeg, pixels = encode_jpeg(make_face(label_index, rng))
                    self.faces.append(Face(split, label, f"{prefix}_{label_index}{i:03d}.jpg", jpeg, pixels))

    def select(self, split: str | None = None, label: str | None = None) -> list[Face]:
        return [f for f in self.faces if (split is None or f.split == split) and (label is None or f.label == label)]

    def write_zip(self, path: Path, faces: Iterable[Face] | None = None, extra: dict[str, bytes] | None = None,
                  top_folder: str = "") -> Path:
        """The Kaggle layout; ``extra`` adds raw entries (name -> bytes) after the faces."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(path, "w") as archive:
            for face in self.faces if faces is None else faces:
                archive.writestr(top_folder + face.entry, face.jpeg)
            for name, data in (extra or {}).items():
                archive.writestr(name, data)
        return path

    def write_csv(self, path: Path, faces: Iterable[Face] | None = None, extra_rows: Iterable[tuple] = (),
                  encoding: str = "utf-8") -> Path:
        """The original fer2013.csv: ``emotion`` codes in the CSV's own order, decoded pixels."""
        path.parent.mkdir(parents=True, exist_ok=True)
        usage = {"train": "Training", "test": "PublicTest"}
        with open(path, "w", newline="", encoding=encoding) as f:
            writer = csv.writer(f)
            writer.writerow(["emotion", "pixels", "Usage"])
            for face in self.faces if faces is None else faces:
                writer.writerow([CSV_CODE[face.label], " ".join(map(str, face.pixels.ravel())), usage[face.split]])
            writer.writerows(extra_rows)
        return path


@pytest.fixture(scope="session")
def fer() -> FerFactory:
    return FerFactory()


@pytest.fixture
def fer_zip(fer: FerFactory, tmp_path: Path) -> Path:
    return fer.write_zip(tmp_path / "inputs" / "fer2013.zip")


@pytest.fixture
def fer_csv(fer: FerFactory, tmp_path: Path) -> Path:
    return fer.write_csv(tmp_path / "inputs" / "fer2013.csv")


# %% MLflow


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite MLflow store with every migration applied, created once per session."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    folder = tmp_path_factory.mktemp("mlflow-template")
    database = folder / "mlflow.db"
    store = SqlAlchemyStore(f"sqlite:///{database}", (folder / "mlruns").as_uri())
    store.engine.dispose()
    return database


@pytest.fixture
def mlflow_store(isolated: Path, mlflow_template: Path) -> str:
    """A fresh copy of the migrated store in ``tmp_path``; MLFLOW_TRACKING_URI points at it."""
    shutil.copy(mlflow_template, isolated / "mlflow.db")
    return f"sqlite:///{isolated / 'mlflow.db'}"


# %% Models whose predictions the tests control


def constant_model(label_index: int):
    """A tiny model of the project's architecture that always predicts ``label_index``."""
    from emotion_recognition.pipeline.model import build_model
    from testkit import model_params

    model = build_model(model_params(widths=[8, 16], dense_units=16))
    head = model.get_layer("emotion")
    kernel, bias = head.get_weights()
    bias = np.zeros_like(bias)
    bias[label_index] = 10.0
    head.set_weights([np.zeros_like(kernel), bias])
    return model


def log_model(model, name: str = "model") -> tuple[str, str]:
    """Log ``model`` in a new run of the current experiment; returns (run_id, model_uri).

    Explicit pip requirements skip MLflow's requirement inference (a subprocess), which only the
    train stage's own test needs to exercise.
    """
    import mlflow

    with mlflow.start_run() as run:
        info = mlflow.tensorflow.log_model(model, name=name, pip_requirements=["tensorflow-cpu"])
    return run.info.run_id, info.model_uri


# %% Project copies to run stages (and DVC) in


PROJECT_FILES = ("dvc.yaml", "params.yaml", ".dvcignore")


def copy_project(target: Path) -> Path:
    """dvc.yaml, params.yaml, stages/ and the package's sources (the stages' DVC deps)."""
    outside_repo(target)
    target.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        if (REPO_ROOT / name).is_file():
            shutil.copy(REPO_ROOT / name, target / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO_ROOT / "stages", target / "stages", ignore=ignore, dirs_exist_ok=True)
    for source in (REPO_ROOT / "emotion_recognition").rglob("*.py"):  # the core and pipeline/
        (target / source.relative_to(REPO_ROOT)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, target / source.relative_to(REPO_ROOT))
    return target


def update_params(project: Path, **groups: dict) -> dict:
    """Overwrite keys of ``project``/params.yaml, group by group; returns the new params."""
    path = outside_repo(project) / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for group, values in groups.items():
        params.setdefault(group, {}).update(values)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return params


# Fast settings for stage runs on tiny data.
TINY_PARAMS = {
    "split": {"val_fraction": 0.2, "seed": 42, "drop_duplicates": True},
    "augment": {"copies": 1, "min_per_class": 0, "preview_images": 4},
    "model": {"architecture": "vgg", "widths": [8, 16], "convs_per_block": 1, "dense_units": 16},
    "train": {"epochs": 1, "batch_size": 32, "precision": "float32", "early_stopping_patience": 1},
    "evaluate": {"flip_tta": True, "register_model": True},
}


def tiny_project(target: Path) -> Path:
    """A project copy with the tiny-run params, reading FER2013 from inputs/fer2013.zip."""
    copy_project(target)
    update_params(target, data={"source": "inputs/fer2013.zip", "sha256": None}, **TINY_PARAMS)
    return target


@pytest.fixture
def project(isolated: Path) -> Path:
    """A tiny project in ``tmp_path``, which is the working directory."""
    return tiny_project(isolated)


_STAGES: dict[str, ModuleType] = {}


def import_stage(name: str) -> ModuleType:
    """Import stages/<name>.py of the repository (its paths are relative to the working directory)."""
    if name not in _STAGES:
        spec = importlib.util.spec_from_file_location(f"stage_{name}", REPO_ROOT / "stages" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _STAGES[name] = module
    return _STAGES[name]


# Helpers as fixtures (test modules use fixtures, not `import conftest`: with several
# conftest.py files in the tree, which one is `conftest` in sys.modules depends on collection).


@pytest.fixture(scope="session")
def isolate():
    """``isolated_in`` for module-scoped fixtures."""
    return isolated_in


@pytest.fixture(scope="session")
def load_stage():
    return import_stage


@pytest.fixture(scope="session")
def set_params():
    return update_params


@pytest.fixture(scope="session")
def make_project():
    return tiny_project


@pytest.fixture(scope="session")
def make_constant_model():
    return constant_model


@pytest.fixture(scope="session")
def log_keras_model():
    return log_model


# %% The real dataset, when this machine has it


@pytest.fixture(scope="session")
def shared_fer2013() -> Path:
    if not SHARED_FER2013.is_file():
        pytest.skip(
            f"../shared/data/fer2013.zip not present: no {SHARED_FER2013} beside the project root "
            "(development machines and CI have it; users need not)"
        )
    return SHARED_FER2013
