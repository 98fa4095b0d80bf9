"""DVC stage `train`: build the model from params, train it, log the run to MLflow.

Outputs data/model/model.keras (float32, raw 48x48 grayscale 0-255 in, 7 probabilities out),
data/model/run.json (the MLflow run for `evaluate`), metrics/train.json,
plots/train_history.csv and plots/train_curves.png. The best epoch's checkpoint goes to
data/train/checkpoint.keras.
"""

from __future__ import annotations

import csv
import subprocess
import sys
import time
from pathlib import Path

import keras
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import mlflow
import numpy as np
from mlflow.models import infer_signature

from emotion_recognition.data import Split, load_split, sha256_file
from emotion_recognition.model import build_model
from emotion_recognition.params import TrainParams, flat_params, load_params
from emotion_recognition.stage_io import atomic_path, run_stage, write_json
from emotion_recognition.tracking import configure_mlflow
from emotion_recognition.training import (
    EpochTimer,
    LearningRateLogger,
    MLflowEpochLogger,
    PreciseBatchNorm,
    cpu_info,
    early_stopping,
    float32_copy,
    initial_model_path,
    limit_per_class,
    load_initial_weights,
    make_dataset,
    make_optimizer,
    model_options,
    resolve_precision,
    steps_per_epoch,
)

TRAIN_PATH = Path("data/augmented/train.npz")
VAL_PATH = Path("data/split/val.npz")
MODEL_PATH = Path("data/model/model.keras")
RUN_PATH = Path("data/model/run.json")
CHECKPOINT = Path("data/train/checkpoint.keras")
METRICS = Path("metrics/train.json")
HISTORY = Path("plots/train_history.csv")
CURVES = Path("plots/train_curves.png")


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


class HistoryWriter(keras.callbacks.Callback):
    """Rewrites plots/train_history.csv after every epoch (a DVC plot, readable mid-run)."""

    def __init__(self, path: Path):
        super().__init__()
        self.path = path
        self.rows: list[dict] = []

    def on_epoch_end(self, epoch, logs=None):
        self.rows.append({"epoch": epoch + 1, **{k: round(float(v), 6) for k, v in (logs or {}).items()}})
        with atomic_path(self.path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(self.rows[0]))
            writer.writeheader()
            writer.writerows(self.rows)


def plot_curves(rows: list[dict], path: Path) -> None:
    """Loss, accuracy and (where logged) the learning rate per epoch, side by side."""
    epochs = [r["epoch"] for r in rows]
    with_rate = all("learning_rate" in r for r in rows)
    fig, axes = plt.subplots(1, 3 if with_rate else 2, figsize=(15 if with_rate else 10, 3.5))
    panels = [("loss", ("loss", "val_loss")), ("accuracy", ("accuracy", "val_accuracy"))]
    if with_rate:
        panels.append(("learning rate", ("learning_rate",)))
    for axis, (title, keys) in zip(axes, panels):
        for key in keys:
            axis.plot(epochs, [r[key] for r in rows], label=key)
        axis.set_xlabel("epoch"), axis.set_title(title), axis.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def run_name(m, p) -> str:
    """e.g. 'vgg48-e70-20261125-0650' (architecture, width or input size, epochs, start time)."""
    shape = f"{m.architecture}{m.widths[0]}" if m.architecture == "vgg" else f"{m.architecture}-{m.input_size}px"
    return f"{shape}-e{p.epochs}-{time.strftime('%Y%m%d-%H%M')}"


def fit_run(model, p: TrainParams, train: Split, val_ds, history: HistoryWriter) -> float:
    """Compile and train ``model`` with ``p`` (its seed drives shuffling and augmentation); on
    return it holds the best epoch's weights. Returns the training time in seconds."""
    steps = steps_per_epoch(len(train), p.batch_size)
    train_ds = make_dataset(train, p.batch_size, True, p, repeat=True)  # one iterator: no per-epoch stalls
    model.compile(
        optimizer=make_optimizer(p, steps),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=p.label_smoothing),
        metrics=["accuracy"],
    )
    CHECKPOINT.parent.mkdir(parents=True, exist_ok=True)
    callbacks = [
        EpochTimer(len(train)),
        LearningRateLogger(),
        PreciseBatchNorm(train.images, seed=p.seed),
        early_stopping(p),
        keras.callbacks.ModelCheckpoint(CHECKPOINT, monitor="val_accuracy", mode="max", save_best_only=True),
        MLflowEpochLogger(),
        history,
    ]
    started = time.perf_counter()
    model.fit(train_ds, validation_data=val_ds, epochs=p.epochs, steps_per_epoch=steps, callbacks=callbacks,
              verbose=1 if sys.stdout.isatty() else 2)
    return time.perf_counter() - started


def main() -> None:
    params = load_params()
    p, m = params.train, params.model
    keras.utils.set_random_seed(p.seed)
    cpu, flags = cpu_info()
    precision, why = resolve_precision(p.precision, flags)
    print(f"train: precision {precision} ({why}); CPU {cpu}", file=sys.stderr if why.startswith("WARNING") else sys.stdout,
          flush=True)
    keras.mixed_precision.set_global_policy(precision)

    train = limit_per_class(load_split(TRAIN_PATH), p.limit_per_class, p.seed)
    val = load_split(VAL_PATH)
    model = build_model(m.architecture, **model_options(m))
    initial = initial_model_path(p.initial_model)
    if initial is not None:
        load_initial_weights(model, initial)
        print(f"train: starting from the weights of {initial}", flush=True)
    val_ds = make_dataset(val, 256, False, p)
    history = HistoryWriter(HISTORY)

    configure_mlflow()
    # A descriptive name: MLflow's random names repeat here because the seed is fixed above.
    with mlflow.start_run(run_name=run_name(m, p)) as run:
        mlflow.set_tags({"git_commit": git_commit(), "stage": "train", "cpu": cpu})
        mlflow.log_params(flat_params(params))
        mlflow.log_params({"train.images": len(train), "val.images": len(val), "model.parameters": model.count_params(),
                           "train.precision_used": precision})
        initial_sha256 = sha256_file(initial) if initial is not None else None
        if initial_sha256:  # DVC tracks the param, not the file: record which file it was
            mlflow.log_params({"train.initial_model_sha256": initial_sha256})
        seconds = fit_run(model, p, train, val_ds, history)

        final = float32_copy(model, m)
        with atomic_path(MODEL_PATH) as tmp:
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
        write_json(RUN_PATH, {"run_id": run.info.run_id, "model_uri": info.model_uri, "precision": precision,
                              "cpu": cpu, "initial_model_sha256": initial_sha256})  # for the model card
    print(f"train: best val_accuracy {best['val_accuracy']:.4f} at epoch {best['epoch']}, {seconds / 60:.1f} min")


if __name__ == "__main__":
    run_stage(main)
