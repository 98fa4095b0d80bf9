"""Put the emotion model into BentoML's model store, so ``bentoml serve``/``bentoml build`` use it.

    python -m serving.import_model                      # MLflow registry: fer-emotion@champion
    python -m serving.import_model --model-file model.keras
    python -m serving.import_model --bundled            # emotion_recognition/default_model/model.keras

The stored model is one ``model.keras`` file, its checked OpenVINO copy (``openvino/``,
emotion_recognition/runtime.py) and metadata (source, MLflow version and run id, input/output contract). ``bentoml models list fer-emotion`` shows what was imported.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import serving  # noqa: F401  (sets BENTOML_DO_NOT_TRACK before bentoml is imported)
from emotion_recognition.model_files import sha256_file, ModelNotFoundError, ModelSource, bundled_model_path, resolve_model_file
from emotion_recognition.labels import EMOTIONS
from emotion_recognition.pipeline.registry import export_champion
from emotion_recognition.runtime import convert, install_copy, probe_faces
from emotion_recognition.pipeline.stage_io import StageInputError
from serving.model_store import MODEL_FILE, MODEL_NAME


def check_loads(path: Path):
    """Load the model once and check the contract, so a broken file never reaches the store;
    returns (the Keras model, its details)."""
    from emotion_recognition.inference import check_model_contract
    from emotion_recognition.model_files import load_model

    try:
        model = load_model(path)
    except Exception as error:  # noqa: BLE001 - any load failure is a user-facing error here
        raise ModelNotFoundError(f"{path} could not be loaded as a Keras model: {error}") from None
    try:
        check_model_contract(model)
    except ValueError as error:
        raise ModelNotFoundError(f"{path}: {error}") from None
    return model, {"params": int(model.count_params()), "keras_name": model.name}


def store_model(source: ModelSource, name: str = MODEL_NAME):
    """Copy ``source.path`` into a new BentoML model version with its metadata."""
    import bentoml

    keras_model, details = check_loads(source.path)
    metadata = {
        **source.metadata,
        "source": source.metadata.get("source", source.origin),
        "source_file": str(source.path) if source.origin != "mlflow" else source.metadata.get("mlflow_model_uri", ""),
        "input": "(N, 48, 48, 1) float32 grayscale 0-255",
        "output": "(N, 7) softmax",
        "labels": ",".join(EMOTIONS),
        **details,
    }
    labels = {"source": source.origin}
    if "mlflow_version" in source.metadata:
        labels["mlflow_version"] = source.metadata["mlflow_version"]
    with bentoml.models.create(name, labels=labels, metadata=metadata) as model:
        shutil.copyfile(source.path, model.path_of(MODEL_FILE))
        # the OpenVINO copy travels with the model (and into a built Bento): the source's own
        # (bundled or logged by the evaluate stage: INT8), else an fp32 one checked on probe faces
        sha, dest = sha256_file(source.path), model.path_of("openvino")
        try:
            if not install_copy(source.path.parent / "openvino", keras_model, sha, dest):
                convert(keras_model, dest, sha, probe_faces(), "probe faces")
        except ImportError:
            print("openvino is not installed: the service will run Keras", file=sys.stderr)
        except (ValueError, RuntimeError) as error:  # the service then falls back to Keras too
            print(f"warning: no OpenVINO copy ({error}): the service will run Keras", file=sys.stderr)
    return model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.import_model", description=__doc__.split("\n")[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--model-file", type=Path, help="a Keras 3 .keras file in the model contract")
    group.add_argument("--bundled", action="store_true", help="the default model shipped in the package")
    parser.add_argument("--alias", default="champion", help="MLflow alias to import (default: champion)")
    parser.add_argument("--name", default=MODEL_NAME, help=f"BentoML model name (default: {MODEL_NAME})")
    args = parser.parse_args(argv)
    try:
        with tempfile.TemporaryDirectory(prefix="fer-import-") as tmp:
            if args.model_file is not None:
                source = resolve_model_file(args.model_file)
            elif args.bundled:
                path = bundled_model_path()
                if path is None:
                    raise ModelNotFoundError(
                        "this installation has no bundled default model "
                        "(emotion_recognition/default_model/model.keras): import MLflow's champion (no option) or --model-file PATH"
                    )
                source = ModelSource(path, "bundled")
            else:
                source = export_champion(tmp, alias=args.alias)
            model = store_model(source, args.name)
    except (ModelNotFoundError, StageInputError) as error:  # e.g. the tracking store is unreachable
        print(f"error: {error}", file=sys.stderr)
        return 1
    version = model.info.metadata.get("mlflow_version")
    origin = f"MLflow version {version}" if version else str(source.path)
    print(f"imported {model.tag} from {origin}")
    print("serve it with: bentoml serve serving.service:EmotionService")
    return 0


if __name__ == "__main__":
    sys.exit(main())
