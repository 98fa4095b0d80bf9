"""DVC stage `train`: build the model from params, train it, log the run to MLflow.

Outputs data/model/model.keras (float32, raw 48x48 grayscale 0-255 in, 7 probabilities out),
data/model/run.json (the MLflow run for `evaluate`), metrics/train.json,
plots/train_history.csv and plots/train_curves.png. Checkpoints go to data/train/
(checkpoint.keras, or checkpoint-runN.keras for each run of a soup, ``train.soup_runs``).
"""

from __future__ import annotations

import csv
import hashlib
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
import tensorflow as tf
from mlflow.models import infer_signature

from emotion_recognition.data import Split, load_split, sha256_file
from emotion_recognition.evaluation import classification_metrics
from emotion_recognition.labels import NUM_CLASSES
from emotion_recognition.model import build_model, load_model
from emotion_recognition.params import ModelParams, TrainParams, flat_params, load_params
from emotion_recognition.stage_io import atomic_path, run_stage, write_json
from emotion_recognition.tracking import configure_mlflow
from emotion_recognition.training import (
    EpochTimer,
    LearningRateLogger,
    MLflowEpochLogger,
    PreciseBatchNorm,
    TeacherWeightDecay,
    TimeBudget,
    WeightAverage,
    average_weights,
    check_teacher_shapes,
    cpu_info,
    distill_online,
    distillation_targets,
    early_stopping,
    ensemble_model,
    float32_copy,
    initial_model_path,
    limit_per_class,
    load_initial_weights,
    make_dataset,
    make_optimizer,
    model_options,
    recalibrate_batch_norm,
    resolve_precision,
    steps_per_epoch,
    teacher_model_paths,
    teacher_probabilities,
    with_policy,
)
from emotion_recognition.tta import TestTimeAugmentation, from_preset

TRAIN_PATH = Path("data/augmented/train.npz")
VAL_PATH = Path("data/split/val.npz")
MODEL_PATH = Path("data/model/model.keras")
RUN_PATH = Path("data/model/run.json")
CHECKPOINT = Path("data/train/checkpoint.keras")
TEACHER_CACHE = Path("data/cache/teacher")  # not a DVC output: `dvc repro` would delete it before each run
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
        self.run: dict = {}  # {"run": N} for the runs of a soup, whose epochs are numbered on
        self.offset = 0

    def start_run(self, number: int) -> None:
        self.run, self.offset = {"run": number}, len(self.rows)

    def on_epoch_end(self, epoch, logs=None):
        self.rows.append({"epoch": self.offset + epoch + 1, **self.run,
                          **{k: round(float(v), 6) for k, v in (logs or {}).items()}})
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
    if with_rate:  # a time budget refits the schedule mid-run: this shows the rate each epoch ended at
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
    shape = f"{m.architecture}{m.widths[0]}" if m.architecture in ("vgg", "resnet") else f"{m.architecture}-{m.input_size}px"
    return f"{shape}-e{p.epochs}-{time.strftime('%Y%m%d-%H%M')}"


def keep_better_average(model, averager, train, val_ds, seed: int) -> dict:
    """Swap in the average of the last epochs' weights if it beats the best epoch on validation.

    ``model`` holds the best epoch's weights (restored by early stopping) on entry and the
    better of the two on exit."""
    if averager.count == 0:  # early stopping ended the run before the averaging window
        return {"averaged_epochs": 0, "averaged_val_accuracy": 0.0, "model_is_average": 0}
    best = model.get_weights()
    best_accuracy = model.evaluate(val_ds, verbose=0, return_dict=True)["accuracy"]
    model.set_weights(averager.weights())
    recalibrate_batch_norm(model, train.images, batches=50, seed=seed)
    average_accuracy = model.evaluate(val_ds, verbose=0, return_dict=True)["accuracy"]
    keep = average_accuracy > best_accuracy
    if not keep:
        model.set_weights(best)
    print(f"train: average of the last {averager.count} epochs: val_accuracy {average_accuracy:.4f} "
          f"against {best_accuracy:.4f} for the best epoch; keeping {'the average' if keep else 'the best epoch'}",
          flush=True)
    mlflow.log_metrics({"averaged_val_accuracy": average_accuracy, "model_is_average": int(keep)})
    return {"averaged_epochs": averager.count, "averaged_val_accuracy": round(float(average_accuracy), 6),
            "model_is_average": int(keep)}


def teacher_cache_path(teacher_sha256: str, tta: TestTimeAugmentation, train: Split, val: Split) -> Path:
    """Where the teacher's probabilities for these exact images and views are kept between runs:
    a sweep over ``train.teacher_weight`` or the student's params should not repeat a pass that
    takes 23 minutes with 16 views on a 2-core AVX2 CPU."""
    digest = hashlib.sha256(f"{teacher_sha256}\n{tta.describe()}\n".encode())
    for images in (train.images, val.images):
        digest.update(np.ascontiguousarray(images).tobytes())
    return TEACHER_CACHE / f"{digest.hexdigest()[:32]}.npz"


def teacher_pass(teacher: keras.Model, path: Path, tta: TestTimeAugmentation, train: Split | None,
                 val: Split) -> tuple[np.ndarray, np.ndarray, str]:
    """One teacher's probabilities for the training and validation images (from the cache when
    this teacher already saw these images with these views) and its file's sha256. With ``train``
    None (an online teacher, which scores them during training) only validation's, not cached."""
    sha256 = sha256_file(path)
    if train is None:
        return np.zeros((0, NUM_CLASSES), np.float32), teacher_probabilities(teacher, val.images, tta), sha256
    cache = teacher_cache_path(sha256, tta, train, val)
    if cache.is_file():
        with np.load(cache) as stored:
            probabilities, val_probabilities = stored["train"], stored["val"]
        print(f"train: teacher probabilities of {path} read from {cache} (delete it to recompute)", flush=True)
    else:
        probabilities = teacher_probabilities(teacher, train.images, tta)
        val_probabilities = teacher_probabilities(teacher, val.images, tta)
        with atomic_path(cache, suffix=".npz") as tmp:
            np.savez(tmp, train=probabilities, val=val_probabilities)
    return probabilities, val_probabilities, sha256


def distill_from_teacher(p: TrainParams, train: Split, val: Split, precision: str) -> dict | None:
    """With ``train.teacher_model`` set: the teacher's probabilities for every training image and
    its accuracy (with ``train.teacher_tta``) on the training and validation images, for the log.
    A list of teachers is one ensemble teacher: the average of their probabilities. With
    ``train.teacher_views: augmented`` the training images are left to the online teacher (under
    the training ``precision``, returned as ``model``), so only validation is scored here."""
    paths = teacher_model_paths(p.teacher_model)
    if not paths:
        return None
    tta = from_preset(p.teacher_tta)
    teachers = [load_model(path) for path in paths]
    for teacher, path in zip(teachers, paths):  # all checked before the first (long) pass
        check_teacher_shapes(teacher, path)
    share = (f"teacher_weight {p.teacher_weight}" if p.teacher_weight_end is None else
             f"teacher_weight {p.teacher_weight} falling to {p.teacher_weight_end} at the last planned epoch")
    online = p.teacher_views == "augmented"
    views = "every augmented view, during training" if online else tta.describe()
    print(f"train: distilling from {', '.join(map(str, paths))} with {views}, {share}", flush=True)
    started = time.perf_counter()
    passes = [teacher_pass(teacher, path, tta, None if online else train, val) for teacher, path in zip(teachers, paths)]
    probabilities = np.mean([train_p for train_p, _, _ in passes], axis=0)
    val_probabilities = np.mean([val_p for _, val_p, _ in passes], axis=0)
    if len(paths) > 1:
        for path, (_, val_p, _) in zip(paths, passes):
            print(f"train: teacher {path}: {classification_metrics(val.labels, val_p.argmax(1))['accuracy']:.4f} "
                  "on validation", flush=True)
    metrics = {
        "teacher_val_accuracy": classification_metrics(val.labels, val_probabilities.argmax(1))["accuracy"],
        "teacher_seconds": time.perf_counter() - started,
    }
    on_train = ""
    if not online:
        metrics["teacher_train_accuracy"] = classification_metrics(train.labels, probabilities.argmax(1))["accuracy"]
        on_train = f"{metrics['teacher_train_accuracy']:.4f} on the training images, "
    print(f"train: {'ensemble ' if len(paths) > 1 else ''}teacher accuracy {on_train}"
          f"{metrics['teacher_val_accuracy']:.4f} on validation ({metrics['teacher_seconds']:.0f} s)", flush=True)
    metrics = {k: round(float(v), 6 if "accuracy" in k else 1) for k, v in metrics.items()}
    model = (ensemble_model([with_policy(teacher, precision, f"teacher_{i}") for i, teacher in enumerate(teachers, 1)])
             if online else None)
    return {"probabilities": None if online else probabilities, "model": model,
            "sha256": ",".join(sha256 for _, _, sha256 in passes), "metrics": metrics}


def fit_run(model, p: TrainParams, train: Split, val_ds, teacher: np.ndarray | keras.Model | None, checkpoint: Path,
            history: HistoryWriter, budget_seconds: float | None, budget_started: float) -> dict:
    """Compile and train ``model`` with ``p`` (its seed drives shuffling and augmentation), with
    ``teacher``'s probabilities mixed into the targets where given (stored per face, or a model
    that scores every augmented batch); on return it holds the best epoch's weights, or the
    average of the last epochs if better."""
    steps = steps_per_epoch(len(train), p.batch_size)
    online = isinstance(teacher, keras.Model)
    decaying = teacher is not None and p.teacher_weight_end is not None
    teacher_weight = (tf.Variable(p.teacher_weight, trainable=False, dtype=tf.float32)
                      if decaying or online else None)
    if online:
        distill_online(model, teacher, teacher_weight)
        train_ds = make_dataset(train, p.batch_size, True, p, repeat=True)  # one iterator: no per-epoch stalls
    else:
        targets = (None if teacher is None else teacher if decaying else
                   distillation_targets(teacher, train.labels, p.teacher_weight))
        train_ds = make_dataset(train, p.batch_size, True, p, repeat=True, targets=targets,
                                teacher_weight=teacher_weight)
    model.compile(
        optimizer=make_optimizer(p, steps),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=p.label_smoothing),
        metrics=["accuracy"],
    )
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    averager = WeightAverage(p.average_last_epochs, p.epochs) if p.average_last_epochs else None
    budget = TimeBudget(budget_seconds, budget_started, steps, averager) if budget_seconds is not None else None
    decay = [TeacherWeightDecay(teacher_weight, p.teacher_weight, p.teacher_weight_end, p.epochs, budget)] if decaying else []
    callbacks = decay + [  # the decay first: it sets the share before the epoch and logs it after
        EpochTimer(len(train)),
        LearningRateLogger(),
        PreciseBatchNorm(train.images, seed=p.seed),
        early_stopping(p),
        keras.callbacks.ModelCheckpoint(checkpoint, monitor="val_accuracy", mode="max", save_best_only=True),
        MLflowEpochLogger(),
        history,
    ] + ([budget] if budget else []) + ([averager] if averager else [])  # budget first: it plans the window
    started = time.perf_counter()
    model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=p.epochs,
        steps_per_epoch=steps,
        callbacks=callbacks,
        verbose=1 if sys.stdout.isatty() else 2,
    )
    seconds = time.perf_counter() - started
    averaged = keep_better_average(model, averager, train, val_ds, p.seed) if averager else None
    return {"seconds": seconds, "planned_epochs": budget.planned_epochs if budget else None, "averaged": averaged}


def keep_better_soup(model, runs: list[list[np.ndarray]], accuracies: list[float], val_ds) -> dict:
    """Swap in the average of the runs' weights (batch-norm statistics averaged too) if it beats
    every run on validation, else the best run's weights."""
    best = int(np.argmax(accuracies))
    model.set_weights(average_weights(runs))
    soup_accuracy = model.evaluate(val_ds, verbose=0, return_dict=True)["accuracy"]
    keep = soup_accuracy > accuracies[best]
    if not keep:
        model.set_weights(runs[best])
    print(f"train: soup of {len(runs)} runs: val_accuracy {soup_accuracy:.4f} against "
          f"{', '.join(f'{a:.4f}' for a in accuracies)} for the runs; keeping "
          f"{'the soup' if keep else f'run {best + 1}'}", flush=True)
    mlflow.log_metrics({"soup_val_accuracy": soup_accuracy, "model_is_soup": int(keep)})
    return {"soup_runs": len(runs), "soup_val_accuracy": round(float(soup_accuracy), 6),
            "best_run_val_accuracy": round(float(accuracies[best]), 6), "model_is_soup": int(keep)}


def fit_soup(model, p: TrainParams, m: ModelParams, initial: Path, train: Split, val_ds, teacher,
             history: HistoryWriter, budget_seconds: float | None, stage_started: float,
             parent_name: str) -> tuple[keras.Model, list[dict], dict]:
    """``train.soup_runs`` runs from the ``initial`` weights with seeds ``p.seed``, ``p.seed + 1``, ...,
    each an MLflow run nested in the active one with its checkpoint in data/train/. ``model`` holds
    the initial weights on entry; returns the model that holds what ``keep_better_soup`` kept."""
    fitted, runs, accuracies = [], [], []
    for index in range(p.soup_runs):
        run_params = p.model_copy(update={"seed": p.seed + index})
        if index > 0:  # a fresh copy of the starting weights
            keras.utils.set_random_seed(run_params.seed)
            model = build_model(m.architecture, **model_options(m))
            load_initial_weights(model, initial)
        share = None
        if budget_seconds is not None:  # what is left, split evenly between the runs still to come
            share = (budget_seconds - (time.perf_counter() - stage_started)) / (p.soup_runs - index)
        print(f"train: soup run {index + 1} of {p.soup_runs} (seed {run_params.seed})", flush=True)
        history.start_run(index + 1)
        with mlflow.start_run(run_name=f"{parent_name}-run{index + 1}", nested=True):
            mlflow.log_params({"train.seed": run_params.seed, "soup_run": index + 1})
            fitted.append(fit_run(model, run_params, train, val_ds, teacher,
                                  CHECKPOINT.with_name(f"checkpoint-run{index + 1}.keras"), history,
                                  share, time.perf_counter()))
            accuracies.append(model.evaluate(val_ds, verbose=0, return_dict=True)["accuracy"])
            mlflow.log_metric("kept_val_accuracy", accuracies[-1])
        runs.append(model.get_weights())
    return model, fitted, keep_better_soup(model, runs, accuracies, val_ds)


def main() -> None:
    stage_started = time.perf_counter()  # a time budget counts data loading and a teacher's pass too
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

    # The student first: its bad settings fail before the long teacher pass, and loading the
    # teacher (which draws from the seeded RNG) cannot change the student's initial weights.
    model = build_model(m.architecture, **model_options(m))
    initial = initial_model_path(p.initial_model)
    if initial is not None:
        load_initial_weights(model, initial)
        print(f"train: starting from the weights of {initial}", flush=True)
    distillation = distill_from_teacher(p, train, val, precision)
    teacher = (distillation["model"] if p.teacher_views == "augmented" else distillation["probabilities"]) \
        if distillation else None
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
        if distillation:
            mlflow.log_params({"train.teacher_model_sha256": distillation["sha256"]})
            mlflow.log_metrics(distillation["metrics"])
        budget_seconds = p.time_budget_minutes * 60 if p.time_budget_minutes else None
        if p.soup_runs == 1:
            fitted = [fit_run(model, p, train, val_ds, teacher, CHECKPOINT, history, budget_seconds, stage_started)]
            soup = None
        else:
            model, fitted, soup = fit_soup(model, p, m, initial, train, val_ds, teacher, history, budget_seconds,
                                           stage_started, run.info.run_name)
        seconds = sum(f["seconds"] for f in fitted)

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
        planned = [f["planned_epochs"] for f in fitted if f["planned_epochs"]]
        if planned:
            metrics["planned_epochs"] = sum(planned)
            mlflow.log_metric("planned_epochs", metrics["planned_epochs"])
        if soup is None and fitted[0]["averaged"] is not None:  # already logged by keep_better_average;
            metrics.update(fitted[0]["averaged"])  # a soup's runs keep theirs in their nested MLflow runs
        if soup is not None:
            metrics.update(soup)
        if distillation:
            metrics.update(distillation["metrics"])
        write_json(METRICS, metrics)
        plot_curves(rows, CURVES)
        mlflow.log_artifact(str(HISTORY), "plots")
        mlflow.log_artifact(str(CURVES), "plots")

        example = val.images[:4, ..., np.newaxis].astype(np.float32)
        signature = infer_signature(example, final.predict(example, verbose=0))
        info = mlflow.tensorflow.log_model(final, name="model", signature=signature, input_example=example)
        write_json(RUN_PATH, {"run_id": run.info.run_id, "model_uri": info.model_uri, "precision": precision,
                              "cpu": cpu, "initial_model_sha256": initial_sha256})  # for the model card
    kept = f"; kept {'the soup' if soup['model_is_soup'] else 'the best run'}" if soup else ""
    print(f"train: best val_accuracy {best['val_accuracy']:.4f} at epoch {best['epoch']}, {seconds / 60:.1f} min{kept}")


if __name__ == "__main__":
    run_stage(main)
