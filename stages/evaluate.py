"""DVC stage `evaluate`: test-set metrics, confusion matrix, MLflow logging and registration.

Registers the trained model as a new version of the registry's model and moves the alias
`champion` to it only if it beats the current champion on this same test set.
`python stages/evaluate.py MODEL_DIR SPLIT_DIR` (dvc.yaml: data/model data/split) reads MODEL_DIR/model.keras
and run.json and SPLIT_DIR/{test,val}.npz; writes metrics/evaluate.json, plots/confusion.csv, plots/confusion_matrix.png, plots/per_class.csv.
Logs the model's INT8 OpenVINO copy (emotion_recognition/runtime.py) as the run's `openvino/` and
its accuracy with the mirror (what the service runs) as `accuracy_flip_int8`; a copy that fails its
check is left out with a warning (serving.import_model then makes an fp32 one).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

import mlflow
import numpy as np

from emotion_recognition.pipeline.data import Split, load_split
from emotion_recognition.model_files import sha256_file, load_model
from emotion_recognition.pipeline.evaluation import (
    accuracy_with_fewer_views,
    classification_metrics,
    confusion_matrix,
    plot_confusion,
    predict_view_probabilities,
    write_csv,
)
from emotion_recognition.labels import EMOTIONS
from emotion_recognition.pipeline.params import load_params
from emotion_recognition.pipeline.registry import register_and_promote
from emotion_recognition.runtime import CALIBRATION_FACES, Classifier, convert
from emotion_recognition.pipeline.stage_io import atomic_path, run_stage, write_json
from emotion_recognition.pipeline.tracking import configure_mlflow
from emotion_recognition.tta import TestTimeAugmentation

METRICS = Path("metrics/evaluate.json")
CONFUSION_CSV = Path("plots/confusion.csv")
CONFUSION_PNG = Path("plots/confusion_matrix.png")
PER_CLASS_CSV = Path("plots/per_class.csv")
OUTPUTS = (METRICS, CONFUSION_CSV, CONFUSION_PNG, PER_CLASS_CSV)


def progress(message: str) -> None:
    """One line per long step (each takes seconds to minutes on a 2-core CPU): not a silent stage."""
    print(f"evaluate: {message}", flush=True)


def int8_copy(model, model_path: Path, dest: str, test: Split, val_path: Path) -> dict[str, float]:
    """Write the model's INT8 OpenVINO copy into ``dest``; its test accuracy with the mirror, or {}
    with a warning when OpenVINO/NNCF fail or the copy fails its check (nothing is written then)."""
    calibration = load_split(val_path).images[:CALIBRATION_FACES]
    progress(f"INT8 OpenVINO copy: calibrating on {len(calibration)} validation faces, checking on {len(test)} PublicTest faces")
    try:
        xml = convert(model, dest, sha256_file(model_path), test.images, "PublicTest faces", calibration)
    except (ValueError, RuntimeError) as error:
        print(f"evaluate: warning: no INT8 OpenVINO copy logged: {error}", file=sys.stderr)
        return {}
    probabilities = TestTimeAugmentation(flip=True).predict(Classifier.from_openvino(xml).predict_faces, test.images)
    return {"accuracy_flip_int8": classification_metrics(test.labels, probabilities.argmax(axis=1))["accuracy"]}


def main(model_dir: str, split_dir: str) -> None:
    params = load_params().evaluate
    model_path, split = Path(model_dir) / "model.keras", Path(split_dir)
    run = json.loads((Path(model_dir) / "run.json").read_text())
    configure_mlflow()  # an unreachable store stops the stage here, before any work
    test = load_split(split / "test.npz")
    model = load_model(model_path)
    tta = params.tta()
    progress(f"classifying {len(test)} PublicTest faces, {tta.describe()}")
    views = predict_view_probabilities(model, test.images, tta)
    predictions = views.mean(axis=0).argmax(axis=1)
    result = classification_metrics(test.labels, predictions)
    fewer_views = accuracy_with_fewer_views(views, test.labels, tta)
    matrix = confusion_matrix(test.labels, predictions)

    # Every output is written beside its place and moved there only once MLflow has logged and the
    # registry decided: a failure or kill on the way leaves the previous outputs as they were.
    with ExitStack() as outputs, tempfile.TemporaryDirectory(prefix="fer-evaluate-") as named:
        copy = outputs.enter_context(tempfile.TemporaryDirectory(prefix="fer-openvino-"))
        fewer_views.update(int8_copy(model, model_path, copy, test, split / "val.npz"))
        metrics = {"test_set": "FER2013 PublicTest", "images": len(test), "flip_tta": params.flip_tta,
                   "tta": tta.describe(), "tta_views": tta.view_count, **fewer_views, **result}
        staged = {path: outputs.enter_context(atomic_path(path)) for path in OUTPUTS}
        write_csv(staged[CONFUSION_CSV], ["actual", "predicted"],
                  [[EMOTIONS[a], EMOTIONS[b]] for a, b in zip(test.labels, predictions)])
        write_csv(staged[PER_CLASS_CSV], ["emotion", "precision", "recall", "f1", "support"],
                  [[name, *values.values()] for name, values in result["per_class"].items()])
        plot_confusion(matrix, staged[CONFUSION_PNG], f"FER2013 PublicTest, accuracy {result['accuracy']:.1%}")
        write_json(staged[METRICS], metrics)
        for path in (METRICS, CONFUSION_PNG, PER_CLASS_CSV):  # logged under their own names
            shutil.copyfile(staged[path], Path(named) / path.name)
        with mlflow.start_run(run_id=run["run_id"]):
            mlflow.log_metrics({"test_accuracy": result["accuracy"], "test_macro_f1": result["macro_f1"]})
            mlflow.log_metrics({f"test_{name}": value for name, value in fewer_views.items()})
            mlflow.log_metrics({f"test_f1_{name}": v["f1"] for name, v in result["per_class"].items()})
            mlflow.log_artifacts(named, "evaluation")
            if "accuracy_flip_int8" in fewer_views:
                mlflow.log_artifacts(copy, "openvino")
        print(f"evaluate: PublicTest accuracy {result['accuracy']:.4f} with {tta.describe()}, macro-F1 {result['macro_f1']:.4f}; "
              + ", ".join(f"{name} {value:.4f}" for name, value in fewer_views.items()))
        if params.register_model:
            progress("registering the model; the champion (or the bundled model) is the yardstick")
            decision = register_and_promote(run["model_uri"], run["run_id"], result["accuracy"], test.images, test.labels, tta)
            print(f"evaluate: {decision}")


if __name__ == "__main__":
    run_stage(main)
