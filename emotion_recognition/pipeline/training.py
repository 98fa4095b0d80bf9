"""Training: the in-memory tf.data pipeline, optimiser and schedule, callbacks, one run (``fit_run``)
and its history and curves."""

from __future__ import annotations

import csv
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import keras
import matplotlib

matplotlib.use("Agg")  # plots are written to files; no display on a training machine
import matplotlib.pyplot as plt
import numpy as np
import tensorflow as tf

from emotion_recognition.pipeline.data import Split
from emotion_recognition.labels import NUM_CLASSES
from emotion_recognition.pipeline.model import build_model
from emotion_recognition.model_files import load_model, ModelNotFoundError, resolve_model_file
from emotion_recognition.pipeline.params import ModelParams, ParamsError, TrainParams, flat_params
from emotion_recognition.pipeline.stage_io import atomic_path, save_figure


# CPU instructions that make Keras' mixed_bfloat16 policy fast. Without them bf16 is emulated:
# measured on a 2-core AMD EPYC (AVX2 only), 5 images/s against 73 in float32 (batch 32).
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_info(path: str | Path = "/proc/cpuinfo") -> tuple[str, set[str] | None]:
    """(CPU model name, feature flags) from ``/proc/cpuinfo``; flags are None where unreadable
    (macOS, Windows, containers that hide it)."""
    name, flags = platform.processor() or platform.machine(), None
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return name, flags
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            name = value.strip()
        elif key.strip() == "flags" and flags is None:
            flags = set(value.split())
    return name, flags


# The instructions that set training speed on a CPU, named with every timing (run.json, the card).
SPEED_CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def describe_cpu(name: str, flags: set[str] | None) -> str:
    """``'AMD EPYC, 2 cores, avx2 fma'``: the model, core count and speed-relevant flags."""
    shown = "flags unknown" if flags is None else " ".join(f for f in SPEED_CPU_FLAGS if f in flags) or "no AVX2"
    return f"{name}, {os.cpu_count() or '?'} cores, {shown}"


def resolve_precision(requested: str, flags: set[str] | None) -> tuple[str, str]:
    """The Keras dtype policy to train with, and why (for the log).

    'auto' picks mixed_bfloat16 only where the CPU has bf16 instructions, float32 everywhere else.
    An explicit 'mixed_bfloat16' is kept, with a warning when the CPU is known to lack them.
    """
    has_bf16 = flags is not None and any(flag in flags for flag in BF16_CPU_FLAGS)
    if requested == "auto":
        if has_bf16:
            return "mixed_bfloat16", "auto: the CPU has bf16 instructions"
        return "float32", f"auto: the CPU has none of {', '.join(BF16_CPU_FLAGS)}, so bf16 would be emulated"
    if requested == "mixed_bfloat16" and flags is not None and not has_bf16:
        return requested, (f"WARNING: train.precision is mixed_bfloat16 but the CPU has none of "
                           f"{', '.join(BF16_CPU_FLAGS)}: bf16 is emulated and trains about 14x slower "
                           f"than float32; set train.precision to auto or float32")
    return requested, "set in params.yaml"


def limit_per_class(split: Split, limit: int, seed: int) -> Split:
    """At most ``limit`` images of each class (0: all), for quick smoke runs."""
    if limit <= 0:
        return split
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(np.flatnonzero(split.labels == c))[:limit] for c in range(NUM_CLASSES)]
    return split.subset(np.sort(np.concatenate(keep)))


def make_dataset(split: Split, batch_size: int, training: bool, params: TrainParams,
                 repeat: bool = False) -> tf.data.Dataset:
    """Decoded arrays in memory -> batches of ((N,48,48,1) float 0-255, one-hot labels).

    Training batches get cheap random flips and shifts on the fly (on top of the offline
    copies from the augment stage), then the rotation, zoom and contrast of
    ``online_augmentation``, so no two epochs see identical pixels.

    ``repeat=True`` yields epoch after epoch (reshuffled each time) from one iterator, for
    ``fit(steps_per_epoch=...)``: Keras rebuilds a finite dataset's iterator every epoch, and
    destroying the old one waits for tf.data's autotuning thread, which on this CPU stalled
    training for about 30 s every 4-5 epochs.
    """
    images = split.images[..., np.newaxis]
    ds = tf.data.Dataset.from_tensor_slices((images, tf.one_hot(split.labels, NUM_CLASSES)))
    if training:
        ds = ds.shuffle(len(split), seed=params.seed, reshuffle_each_iteration=True)
    shift = int(round(params.online_shift * images.shape[1]))

    def prepare(x, y):
        x = tf.cast(x, tf.float32)
        if training and params.online_flip:
            x = tf.image.random_flip_left_right(x)
        if training and shift > 0:
            padded = tf.pad(x, [[shift, shift], [shift, shift], [0, 0]], mode="REFLECT")
            x = tf.image.random_crop(padded, tf.shape(x))
        return x, y

    ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size)
    augment = online_augmentation(params) if training else None
    if augment is not None:
        ds = ds.map(lambda x, y: (augment(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
    if repeat:
        ds = ds.repeat()
    return ds.prefetch(tf.data.AUTOTUNE)


def online_augmentation(params: TrainParams) -> keras.Sequential | None:
    """Per-batch random rotation, zoom and contrast, drawn afresh every epoch (None if all off).

    Float32 on purpose: these layers run in tf.data, not in the (possibly bf16) model.
    """
    steps = []
    if params.online_rotation > 0:
        steps.append(keras.layers.RandomRotation(params.online_rotation / 360.0, fill_mode="reflect",
                                                 seed=params.seed, dtype="float32"))
    if params.online_zoom > 0:
        steps.append(keras.layers.RandomZoom((-params.online_zoom, params.online_zoom), fill_mode="reflect",
                                             seed=params.seed + 1, dtype="float32"))
    if params.online_contrast > 0:
        steps.append(keras.layers.RandomContrast(params.online_contrast, value_range=(0, 255),
                                                 seed=params.seed + 2, dtype="float32"))
    return keras.Sequential(steps, name="online_augmentation") if steps else None


def learning_rate_schedule(params: TrainParams, steps_per_epoch: int) -> keras.optimizers.schedules.CosineDecay:
    """Keras' own schedule, fixed by the params alone (so the plan does not depend on the machine):
    a linear warm-up from 0 to ``learning_rate`` over ``warmup_epochs``, then cosine decay to 0 at
    the end of ``epochs``."""
    total = max(1, params.epochs * steps_per_epoch)
    warmup = min(total - 1, int(params.warmup_epochs * steps_per_epoch))
    if warmup == 0:
        return keras.optimizers.schedules.CosineDecay(params.learning_rate, decay_steps=total)
    return keras.optimizers.schedules.CosineDecay(0.0, decay_steps=total - warmup, warmup_target=params.learning_rate,
                                                  warmup_steps=warmup)


def make_optimizer(params: TrainParams, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """AdamW (decoupled weight decay: weight x decay x learning rate per step) on ``learning_rate_schedule``."""
    return keras.optimizers.AdamW(learning_rate_schedule(params, steps_per_epoch), weight_decay=params.weight_decay)


def initial_model_path(initial_model: str) -> Path | None:
    """The ``train.initial_model`` param as a model file: None for 'none', the bundled default
    model for 'default', else the given .keras path (errors name the param and the file)."""
    if initial_model in ("none", ""):
        return None
    try:
        return resolve_model_file(None if initial_model == "default" else initial_model).path
    except ModelNotFoundError as error:
        raise ParamsError(f"train.initial_model is {initial_model!r}: {error}") from None


def load_initial_weights(model: keras.Model, path: Path) -> None:
    """Copy a trained model's weights into ``model``, whose architecture (from params) must match."""
    trained = load_model(path)
    expected = [tuple(w.shape) for w in model.weights]
    found = [tuple(w.shape) for w in trained.weights]
    if expected != found:
        raise ParamsError(
            f"train.initial_model {path}: its weights do not fit the model built from params.yaml "
            f"({len(found)} weight tensors, {trained.count_params():,} parameters; the params build "
            f"{len(expected)} tensors, {model.count_params():,} parameters): set model.* to the "
            f"architecture it was trained with"
        )
    model.set_weights(trained.get_weights())


def float32_copy(model: keras.Model, model_params: ModelParams) -> keras.Model:
    """Rebuild ``model`` under the float32 policy with the trained weights, so the saved file
    runs at full speed on CPUs without bf16 support and loads with no policy set."""
    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy("float32")
    try:
        copy = build_model(model_params)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    copy.set_weights(model.get_weights())
    return copy


def recalibrate_batch_norm(model: keras.Model, images: np.ndarray, batches: int = 50, batch_size: int = 128,
                           seed: int = 0) -> None:
    """Replace every BatchNormalization layer's moving mean/variance by their average over
    ``batches`` random training batches ("precise BN").

    Measured here: during training, the moving averages lag the fast-changing weights so far
    that validation accuracy read 39% where recalibrated statistics gave 58% (same weights).
    """
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    if not norms or len(images) == 0:
        return
    rng = np.random.default_rng(seed)
    original = [layer.momentum for layer in norms]
    try:
        for step in range(batches):
            for layer in norms:  # momentum step/(step+1): a running mean of the batch statistics
                layer.momentum = step / (step + 1)
            index = rng.choice(len(images), size=min(batch_size, len(images)), replace=False)
            model(tf.cast(images[index][..., np.newaxis], tf.float32), training=True)
    finally:
        for layer, momentum in zip(norms, original):
            layer.momentum = momentum


class PreciseBatchNorm(keras.callbacks.Callback):
    """Recalibrates batch-norm statistics on training images before every validation pass, so
    early stopping and checkpoints judge the weights, not stale moving averages."""

    def __init__(self, images: np.ndarray, batches: int = 30, seed: int = 0):
        super().__init__()
        self.images = images
        self.batches = batches
        self.seed = seed
        self.calls = 0

    def on_test_begin(self, logs=None):
        self.calls += 1
        recalibrate_batch_norm(self.model, self.images, self.batches, seed=self.seed + self.calls)


class EpochTimer(keras.callbacks.Callback):
    """Adds ``seconds`` and ``images_per_second`` of each epoch's training to the logs."""

    def __init__(self, images_per_epoch: int):
        super().__init__()
        self.images_per_epoch = images_per_epoch
        self.started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self.started
        if logs is not None:
            logs["epoch_seconds"] = seconds
            logs["images_per_second"] = self.images_per_epoch / seconds


def early_stopping(params: TrainParams) -> keras.callbacks.EarlyStopping:
    """Stops training after ``early_stopping_patience`` epochs without a better validation accuracy
    and, at the end of training either way, restores the best epoch's weights. Patience 0 never
    stops: the count of epochs without improvement cannot reach ``epochs``."""
    return keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", restore_best_weights=True,
                                         patience=params.early_stopping_patience or params.epochs)


class LearningRateLogger(keras.callbacks.Callback):
    """Adds ``learning_rate``, the rate the schedule gives at the end of each epoch, to the logs
    (history CSV, MLflow, the learning-rate panel of plots/train_curves.png)."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            lr = self.model.optimizer.learning_rate
            logs["learning_rate"] = float(lr.numpy() if hasattr(lr, "numpy") else lr)


class MLflowEpochLogger(keras.callbacks.Callback):
    """Logs every epoch's metrics to the active MLflow run (NaN values are left out)."""

    def on_epoch_end(self, epoch, logs=None):
        import mlflow

        metrics = {k: float(v) for k, v in (logs or {}).items() if np.isfinite(v)}
        mlflow.log_metrics(metrics, step=epoch + 1)


def steps_per_epoch(n_images: int, batch_size: int) -> int:
    return math.ceil(n_images / batch_size)


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


class HistoryWriter(keras.callbacks.Callback):
    """Rewrites ``path`` (plots/train_history.csv) after every epoch: a DVC plot, readable mid-run."""

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
    save_figure(fig, path)


def run_name(m: ModelParams, p: TrainParams) -> str:
    """e.g. 'vgg48-e70-20261125-0650' (architecture, width or input size, epochs, start time)."""
    shape = f"{m.architecture}{m.widths[0]}" if m.architecture == "vgg" else f"{m.architecture}-{m.input_size}px"
    return f"{shape}-e{p.epochs}-{time.strftime('%Y%m%d-%H%M')}"


class BestModelSaver(keras.callbacks.Callback):
    """Saves the model at each new best validation accuracy (above ``best``, the best of the epochs
    before a resume). Written to a temporary file, then renamed: a kill mid-write leaves the
    previous best intact (Keras' ModelCheckpoint writes in place)."""

    def __init__(self, path: Path, best: float | None = None):
        super().__init__()
        self.path, self.best = Path(path), best

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get("val_accuracy")
        if value is None or (self.best is not None and value <= self.best):
            return
        self.best = float(value)
        with atomic_path(self.path) as tmp:
            self.model.save(tmp)


def log_new_run(params, cpu: str, precision: str, train_images: int, val_images: int, parameters: int,
                initial_sha256: str | None) -> None:
    """Tags and params of a new training run in the active MLflow run."""
    import mlflow

    mlflow.set_tags({"git_commit": git_commit(), "stage": "train", "cpu": cpu})
    mlflow.log_params(flat_params(params))
    mlflow.log_params({"train.images": train_images, "val.images": val_images, "model.parameters": parameters,
                       "train.precision_used": precision})
    if initial_sha256:  # DVC tracks the param, not the file: record which file it was
        mlflow.log_params({"train.initial_model_sha256": initial_sha256})


def fit_run(model, p: TrainParams, train: Split, val_ds, history: HistoryWriter, checkpoint: Path,
            backup=None, resumed: dict | None = None) -> float:
    """Compile and train ``model`` with ``p`` (its seed drives shuffling and augmentation); on
    return it holds the best epoch's weights (also saved to ``checkpoint``). Returns the training time in seconds.

    ``backup`` (a resume.TrainingBackup) saves the full state every epoch; ``resumed`` (its state
    of a killed run) continues that run after its last finished epoch. Call inside the
    tf.distribute strategy's scope, if any (the model too must be built there)."""
    steps = steps_per_epoch(len(train), p.batch_size)
    train_ds = make_dataset(train, p.batch_size, True, p, repeat=True)  # one iterator: no per-epoch stalls
    model.compile(
        optimizer=make_optimizer(p, steps),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=p.label_smoothing),
        metrics=["accuracy"],
    )
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    callbacks = [
        EpochTimer(len(train)),
        LearningRateLogger(),
        PreciseBatchNorm(train.images, seed=p.seed),
        early_stopping(p),
        BestModelSaver(checkpoint, (resumed or {}).get("best_val_accuracy")),
        MLflowEpochLogger(),
        history,
        *(backup.callbacks(history) if backup is not None else []),  # after history: its rows are saved
    ]
    started = time.perf_counter()
    model.fit(train_ds, validation_data=val_ds, epochs=p.epochs, steps_per_epoch=steps, callbacks=callbacks,
              verbose=1 if sys.stdout.isatty() else 2)
    if resumed and checkpoint.is_file():  # the best epoch may precede the kill: EarlyStopping only saw the rest
        model.load_weights(checkpoint)
    return time.perf_counter() - started + sum(row.get("epoch_seconds", 0) for row in (resumed or {}).get("rows", []))
