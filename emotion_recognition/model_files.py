"""Where a trained model comes from: an explicit .keras file, the bundled default, or MLflow.

- ``bundled_model_path()``: ``emotion_recognition/default_model/model.keras`` shipped as package
  data (absent until a trained default model is bundled);
- ``resolve_model_file(path)``: the file to use for local inference (explicit path, else bundled);
- ``load_model(path)``: a ``.keras`` file in Keras' safe mode; ``sha256_file``: the hash that
  names a model's converted copies.
(The MLflow registry's champion is exported by ``pipeline.registry.export_champion``.)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The MLflow registry's name for this project's models, its best one's alias, and the BentoML store's name.
REGISTERED_MODEL_NAME = "fer-emotion"
CHAMPION_ALIAS = "champion"
BUNDLED_MODEL = Path(__file__).resolve().parent / "default_model" / "model.keras"


class ModelNotFoundError(RuntimeError):
    """No model to use; the message says how to get one."""


@dataclass
class ModelSource:
    path: Path
    origin: str  # "file", "bundled" or "mlflow"
    metadata: dict[str, Any] = field(default_factory=dict)


def bundled_model_path() -> Path | None:
    return BUNDLED_MODEL if BUNDLED_MODEL.is_file() else None


def resolve_model_file(path: str | Path | None = None) -> ModelSource:
    """An explicit ``.keras`` file if given, else the bundled default model."""
    if path is not None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise ModelNotFoundError(f"no model file at {path}")
        if path.suffix != ".keras":
            raise ModelNotFoundError(f"{path} is not a Keras 3 model file: expected a .keras file")
        return ModelSource(path.resolve(), "file")
    bundled = bundled_model_path()
    if bundled is None:
        raise ModelNotFoundError(
            "no model given and no bundled default model in this installation "
            f"({BUNDLED_MODEL} is missing): pass --model PATH/TO/model.keras "
            "(e.g. one exported by the training pipeline)"
        )
    return ModelSource(bundled, "bundled")

def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def load_model(path: str | Path) -> keras.Model:
    """Load a saved ``.keras`` model for inference."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no model file at {path}")
    import keras  # here: the OpenVINO path never imports TensorFlow

    return keras.models.load_model(path, compile=False)
