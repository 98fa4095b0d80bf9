"""DVC stage `train`: build the model from params, train it, log the run to MLflow.

`python stages/train.py TRAIN_NPZ VAL_NPZ MODEL_DIR CHECKPOINT_DIR` (dvc.yaml: data/augmented/train.npz
data/split/val.npz data/model data/train) writes MODEL_DIR/model.keras (float32, raw 48x48 grayscale
0-255 in, 7 probabilities out), MODEL_DIR/run.json (the MLflow run for `evaluate`), metrics/train.json,
plots/train_history.csv and plots/train_curves.png. The best epoch's checkpoint goes to
CHECKPOINT_DIR/checkpoint.keras.
"""

from __future__ import annotations

import sys
from pathlib import Path

import keras
import mlflow
import numpy as np
from mlflow.models import infer_signature

from emotion_recognition.pipeline.data import load_split
from emotion_recognition.model_files import sha256_file
from emotion_recognition.pipeline.distribute import make_strategy
from emotion_recognition.pipeline.model import build_model
from emotion_recognition.pipeline.params import flat_params, load_params
from emotion_recognition.pipeline.resume import BACKUP_DIR, TrainingBackup, stage_inputs
from emotion_recognition.pipeline.stage_io import atomic_path, run_stage, write_json
from emotion_recognition.pipeline.tracking import configure_mlflow
from emotion_recognition.pipeline.training import (
    HistoryWriter,
    cpu_info,
    describe_cpu,
    fit_run,
    float32_copy,
    initial_model_path,
    log_new_run,
    limit_per_class,
    load_initial_weights,
    make_dataset,
    plot_curves,
    resolve_precision,
    run_name,
)

METRICS = Path("metrics/train.json")
HISTORY = Path("plots/train_history.csv")
CURVES = Path("plots/train_curves.png")


def main(train_path: str, val_path: str, model_dir: str, checkpoint_dir: str) -> None:
    params = load_params()
    p, m = params.train, params.model
    strategy = make_strategy(p.distribute)  # before any other TensorFlow work
    keras.utils.set_random_seed(p.seed)
    name, flags = cpu_info()
    cpu = describe_cpu(name, flags)
    precision, why = resolve_precision(p.precision, flags)
    print(f"train: precision {precision} ({why}); CPU {cpu}", file=sys.stderr if why.startswith("WARNING") else sys.stdout,
          flush=True)
    keras.mixed_precision.set_global_policy(precision)

    train = limit_per_class(load_split(train_path), p.limit_per_class, p.seed)
    val = load_split(val_path)
    with strategy.scope():  # the model's variables are mirrored on every replica
        model = build_model(m)
        initial = initial_model_path(p.initial_model)
        if initial is not None:
            load_initial_weights(model, initial)
            print(f"train: starting from the weights of {initial}", flush=True)
    print(f"train: {p.distribute}, {strategy.num_replicas_in_sync} replica(s), global batch {p.batch_size}", flush=True)
    val_ds = make_dataset(val, 256, False, p)
    history = HistoryWriter(HISTORY)

    backup = TrainingBackup({"params": flat_params(params), "train_images": len(train), "val_images": len(val)},
                            inputs=stage_inputs("train"))
    configure_mlflow()
    initial_sha256 = sha256_file(initial) if initial is not None else None
    # A descriptive name: MLflow's random names repeat here because the seed is fixed above.
    with backup.mlflow_run(run_name(m, p), history) as (run, resumed):  # a killed run of this plan continues
        if resumed:
            print(f"train: resuming MLflow run {run.info.run_id} after epoch {resumed['epoch']} of {p.epochs} "
                  f"(state in {BACKUP_DIR})", flush=True)
        else:
            log_new_run(params, cpu, precision, len(train), len(val), model.count_params(), initial_sha256)
        with strategy.scope():
            seconds = fit_run(model, p, train, val_ds, history, backup.best_model, backup, resumed)
        backup.keep_best(Path(checkpoint_dir) / "checkpoint.keras")

        final = float32_copy(model, m)
        with atomic_path(Path(model_dir) / "model.keras") as tmp:
            final.save(tmp)
        rows = history.rows
        best = max(rows, key=lambda r: r["val_accuracy"])
        metrics = {
            "best_epoch": best["epoch"],
            "epochs_run": len(rows),
            "val_accuracy": best["val_accuracy"],
            "val_loss": best["val_loss"],
            "train_seconds": round(seconds, 1),
            "images_per_second": round(float(np.median([r["images_per_second"] for r in rows])), 1),
            "parameters": int(model.count_params()),
        }
        mlflow.log_metrics({f"best_{k}": v for k, v in metrics.items() if k != "parameters"})
        write_json(METRICS, metrics)
        plot_curves(rows, CURVES)
        mlflow.log_artifact(str(HISTORY), "plots")
        mlflow.log_artifact(str(CURVES), "plots")

        example = val.images[:4, ..., np.newaxis].astype(np.float32)
        signature = infer_signature(example, final.predict(example, verbose=0))
        info = mlflow.tensorflow.log_model(final, name="model", signature=signature, input_example=example)
        write_json(Path(model_dir) / "run.json", {"run_id": run.info.run_id, "model_uri": info.model_uri, "precision": precision,
                              "cpu": cpu, "initial_model_sha256": initial_sha256})  # for the model card
    backup.finish()
    print(f"train: best val_accuracy {best['val_accuracy']:.4f} at epoch {best['epoch']}, {seconds / 60:.1f} min")


if __name__ == "__main__":
    run_stage(main)
