"""Training loop pieces: the in-memory tf.data pipeline, optimiser/schedule, callbacks."""

from __future__ import annotations

import math
import platform
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from emotion_recognition.data import Split
from emotion_recognition.evaluation import predict_probabilities
from emotion_recognition.labels import NUM_CLASSES
from emotion_recognition.model import build_model, load_model
from emotion_recognition.model_files import ModelNotFoundError, resolve_model_file
from emotion_recognition.params import ModelParams, ParamsError, TrainParams
from emotion_recognition.preprocessing import FACE_SIZE
from emotion_recognition.tta import TestTimeAugmentation


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
                 repeat: bool = False, targets: np.ndarray | None = None,
                 teacher_weight: tf.Variable | None = None) -> tf.data.Dataset:
    """Decoded arrays in memory -> batches of ((N,48,48,1) float 0-255, one-hot labels), or of
    (faces, ``targets``) where given: (N, 7) soft targets, e.g. from ``distillation_targets``.
    With ``teacher_weight`` (a variable, so a callback can change it while the iterator runs),
    ``targets`` are a teacher's probabilities and each batch's targets are mixed from them and
    the one-hot labels at the variable's current value (``TeacherWeightDecay``).

    Training batches get cheap random flips and shifts on the fly (on top of the offline
    copies from the augment stage), so no two epochs see identical pixels; with
    ``mixup_alpha``/``cutmix_alpha`` set, their faces and targets are then mixed pairwise (``mix_batch``).

    ``repeat=True`` yields epoch after epoch (reshuffled each time) from one iterator, for
    ``fit(steps_per_epoch=...)``: Keras rebuilds a finite dataset's iterator every epoch, and
    destroying the old one waits for tf.data's autotuning thread, which on this CPU stalled
    training for about 30 s every 4-5 epochs.
    """
    images = split.images[..., np.newaxis]
    labels = tf.one_hot(split.labels, NUM_CLASSES) if targets is None else np.asarray(targets, np.float32)
    if len(labels) != len(images):
        raise ValueError(f"{len(labels)} targets for {len(images)} images")
    if teacher_weight is not None:
        if targets is None:
            raise ValueError("teacher_weight needs the teacher's probabilities as targets")
        ds = tf.data.Dataset.from_tensor_slices((images, (tf.one_hot(split.labels, NUM_CLASSES), labels)))
    else:
        ds = tf.data.Dataset.from_tensor_slices((images, labels))
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
    if teacher_weight is not None:  # before mixing: mixup/CutMix mix these targets
        ds = ds.map(lambda x, y: (x, teacher_weight * y[1] + (1.0 - teacher_weight) * y[0]),
                    num_parallel_calls=tf.data.AUTOTUNE)
    augment = online_augmentation(params) if training else None
    if augment is not None:
        ds = ds.map(lambda x, y: (augment(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
    if training and (params.mixup_alpha > 0 or params.cutmix_alpha > 0):
        ds = ds.map(lambda x, y: mix_batch(x, y, params.mixup_alpha, params.cutmix_alpha),
                    num_parallel_calls=tf.data.AUTOTUNE)
    if repeat:
        ds = ds.repeat()
    return ds.prefetch(tf.data.AUTOTUNE)


def online_augmentation(params: TrainParams) -> keras.Sequential | None:
    """Per-batch random rotation, zoom, contrast and erasing, drawn afresh every epoch (None if all off).

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
    if params.online_erasing > 0:  # occlusion-like noise patches: faces are often partly covered
        steps.append(keras.layers.RandomErasing(params.online_erasing, value_range=(0, 255),
                                                seed=params.seed + 3, dtype="float32"))
    return keras.Sequential(steps, name="online_augmentation") if steps else None


def sample_beta(alpha: float) -> tf.Tensor:
    """One draw from Beta(alpha, alpha), as the ratio of two gamma draws (TensorFlow has no beta sampler)."""
    draws = tf.random.gamma([2], alpha, dtype=tf.float32)
    return draws[0] / tf.maximum(draws[0] + draws[1], 1e-12)


def mixup(x: tf.Tensor, y: tf.Tensor, partner: tf.Tensor, lam: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """mixup (Zhang et al. 2018): every face blended with a partner face, ``lam`` of its own pixels
    and target, ``1 - lam`` of the partner's."""
    return lam * x + (1.0 - lam) * tf.gather(x, partner), lam * y + (1.0 - lam) * tf.gather(y, partner)


def cutmix(x: tf.Tensor, y: tf.Tensor, partner: tf.Tensor, lam: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """CutMix (Yun et al. 2019): a box of about ``1 - lam`` of the area, at a random place, pasted
    from the partner face; the targets mix by the share of pixels that was actually pasted (the box
    is clipped at the edges)."""
    height, width = tf.shape(x)[1], tf.shape(x)[2]
    side = tf.sqrt(1.0 - lam)
    box_h = tf.cast(tf.round(side * tf.cast(height, tf.float32)), tf.int32)
    box_w = tf.cast(tf.round(side * tf.cast(width, tf.float32)), tf.int32)
    centre_y = tf.random.uniform([], 0, height, dtype=tf.int32)
    centre_x = tf.random.uniform([], 0, width, dtype=tf.int32)
    top, bottom = tf.maximum(centre_y - box_h // 2, 0), tf.minimum(centre_y + (box_h + 1) // 2, height)
    left, right = tf.maximum(centre_x - box_w // 2, 0), tf.minimum(centre_x + (box_w + 1) // 2, width)
    rows, cols = tf.range(height), tf.range(width)
    inside = (((rows >= top) & (rows < bottom))[:, None] & ((cols >= left) & (cols < right))[None, :])
    mask = tf.cast(inside, x.dtype)[None, :, :, None]
    pasted = tf.cast((bottom - top) * (right - left), tf.float32) / tf.cast(height * width, tf.float32)
    return x * (1.0 - mask) + tf.gather(x, partner) * mask, (1.0 - pasted) * y + pasted * tf.gather(y, partner)


def mix_batch(x: tf.Tensor, y: tf.Tensor, mixup_alpha: float, cutmix_alpha: float) -> tuple[tf.Tensor, tf.Tensor]:
    """Pairs every face of a batch with a partner from the same batch (a random permutation, so now
    and then itself) and mixes them by mixup or CutMix, one mixing ratio per batch (as in both papers); with both on, each batch picks one of
    the two at even odds. Training-only: it turns one-hot targets into soft ones."""
    partner = tf.random.shuffle(tf.range(tf.shape(x)[0]))
    if mixup_alpha > 0 and cutmix_alpha > 0:
        return tf.cond(tf.random.uniform([]) < 0.5,
                       lambda: mixup(x, y, partner, sample_beta(mixup_alpha)),
                       lambda: cutmix(x, y, partner, sample_beta(cutmix_alpha)))
    if mixup_alpha > 0:
        return mixup(x, y, partner, sample_beta(mixup_alpha))
    return cutmix(x, y, partner, sample_beta(cutmix_alpha))


REFIT_RULES = ("restart", "keep_phase")


@keras.saving.register_keras_serializable(package="emotion_recognition")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to ``peak`` over ``warmup_steps``, then (after a hold at ``peak``
    when ``decay_share`` < 1) cosine decay to 0 at ``total_steps``: with no hold, the curve of
    Keras' ``CosineDecay`` with warm-up, but its lengths are
    variables, so ``TimeBudget`` can refit a running schedule (``fit_to``), longer or shorter, and
    it still ends at 0. How a refit during the decay goes on (``refit``), with no jump either way:
    - ``"restart"``: a new half-cosine from the rate reached (``decay_from`` at ``decay_start``) to 0
      over the steps left. A half-cosine starts flat, so a budgeted run, which refits every few
      epochs, keeps the rate near its peak for most of the run and drops it in its last epochs;
      measured more accurate here than one cosine (docs/model_quality.md).
    - ``"keep_phase"``: the rest of the same cosine (``decay_phase`` at ``decay_start``), stretched
      or squeezed over the steps left, so the rate follows one cosine over the final plan.
    With ``decay_share`` below 1 the rate is held at ``peak`` after the warm-up and decays only over
    that last share of the steps after the warm-up (warm-up, hold, decay); a refit while still
    holding moves the decay's start to the same share of the new plan (or to the current step, if
    the new plan's hold is already over), so the curve no longer depends on how often the budget
    re-plans before the decay begins.

    Registered for Keras serialisation: opening a training checkpoint with ``compile=True``
    needs ``emotion_recognition.training`` imported (the project's loaders use ``compile=False``).
    """

    def __init__(self, peak: float, warmup_steps: int, total_steps: int,
                 decay_start: float | None = None, decay_from: float | None = None, decay_phase: float = 0.0,
                 refit: str = "restart", decay_share: float = 1.0):  # train.lr_refit's, train.lr_decay_share's defaults
        if refit not in REFIT_RULES:
            raise ValueError(f"WarmupCosine refit: expected one of {', '.join(REFIT_RULES)}, got {refit!r}")
        if not 0.0 < decay_share <= 1.0:
            raise ValueError(f"WarmupCosine decay_share: expected a share in (0, 1], got {decay_share!r}")
        self.peak = float(peak)
        self.refit = refit
        self.decay_share = float(decay_share)
        self.warmup_steps = tf.Variable(float(warmup_steps), trainable=False, dtype=tf.float32, name="warmup_steps")
        self.total_steps = tf.Variable(float(total_steps), trainable=False, dtype=tf.float32, name="total_steps")
        if decay_start is None:
            decay_start = self.hold_end(float(warmup_steps), float(total_steps))
        self.decay_start = tf.Variable(float(decay_start), trainable=False,
                                       dtype=tf.float32, name="decay_start")
        self.decay_from = tf.Variable(self.peak if decay_from is None else float(decay_from), trainable=False,
                                      dtype=tf.float32, name="decay_from")
        # below the peak only after a "restart" refit (or in configs saved before decay_phase existed)
        self.decay_phase = tf.Variable(float(decay_phase), trainable=False, dtype=tf.float32, name="decay_phase")

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        rising = self.peak * step / tf.maximum(self.warmup_steps, 1.0)
        span = tf.maximum(self.total_steps - self.decay_start, 1.0)
        progress = self.decay_phase + (1.0 - self.decay_phase) * tf.clip_by_value((step - self.decay_start) / span, 0.0, 1.0)
        decaying = 0.5 * self.decay_from * (1.0 + tf.cos(math.pi * progress))
        return tf.where(step < self.warmup_steps, rising, tf.where(step >= self.total_steps, 0.0, decaying))

    def fit_to(self, total_steps: int, current_step: int) -> None:
        """End the schedule at ``total_steps``. When that shortens it, a warm-up that would take
        more than a fifth of the run is cut short (not before ``current_step``: the steps taken
        stay as they were); a warm-up once cut stays cut. Until the decay has begun (during the
        warm-up or the hold), it is placed over the last ``decay_share`` of the new plan's steps
        after the warm-up, from ``peak``, and not before ``current_step``. Once it has begun, it
        goes on from the current learning rate (no jump) by the ``refit`` rule and reaches 0 at
        ``total_steps``."""
        total, current = float(total_steps), float(current_step)
        if total == float(self.total_steps.numpy()):
            return
        warmup = float(self.warmup_steps.numpy())
        if not self.decay_begun(current):  # warming up or holding: the decay will start from the peak
            if current < warmup:
                if total < float(self.total_steps.numpy()) and warmup > total / 5:
                    warmup = max(current, total / 5)
                warmup = min(warmup, total)
                self.warmup_steps.assign(warmup)
            self.decay_start.assign(max(current, self.hold_end(warmup, total)))
            self.decay_from.assign(self.peak)
            self.decay_phase.assign(0.0)
        elif self.refit == "restart":
            self.decay_from.assign(float(self(current)))
            self.decay_phase.assign(0.0)
            self.decay_start.assign(current)
        else:
            self.decay_phase.assign(self.phase(current))
            self.decay_start.assign(current)
        self.total_steps.assign(total)

    def decay_begun(self, step: float) -> bool:
        """Whether the rate has left the peak by ``step``: past ``decay_start``, or at it after a
        refit during the decay (a re-plan falling exactly where the hold ends still moves the decay)."""
        start = float(self.decay_start.numpy())
        if step != start:
            return step > start
        return float(self.decay_phase.numpy()) > 0.0 or float(self.decay_from.numpy()) < float(np.float32(self.peak))

    def hold_end(self, warmup: float, total: float) -> float:
        """Where the decay starts in a plan of ``total`` steps: after the warm-up and the hold,
        so that it takes the last ``decay_share`` of the steps after the warm-up."""
        return warmup + (1.0 - self.decay_share) * max(total - warmup, 0.0)

    def phase(self, step: float) -> float:
        """How far along the cosine the decay is at ``step``: 0 at its start, 1 at its end."""
        span = max(float(self.total_steps.numpy()) - float(self.decay_start.numpy()), 1.0)
        along = min(max((step - float(self.decay_start.numpy())) / span, 0.0), 1.0)
        start = float(self.decay_phase.numpy())
        return start + (1.0 - start) * along

    def get_config(self) -> dict:
        return {"peak": self.peak, "warmup_steps": int(self.warmup_steps.numpy()),
                "total_steps": int(self.total_steps.numpy()), "decay_start": float(self.decay_start.numpy()),
                "decay_from": float(self.decay_from.numpy()), "decay_phase": float(self.decay_phase.numpy()), "refit": self.refit,
                "decay_share": self.decay_share}


def make_optimizer(params: TrainParams, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """Linear warm-up, the peak held until the last ``train.lr_decay_share`` of the steps after
    the warm-up (no hold at 1), then cosine decay to zero at the run's end."""
    total = max(1, params.epochs * steps_per_epoch)
    warmup = min(total - 1, int(params.warmup_epochs * steps_per_epoch))
    schedule = WarmupCosine(params.learning_rate, warmup, total, refit=params.lr_refit,
                            decay_share=params.lr_decay_share)
    if params.optimizer == "adamw":
        return keras.optimizers.AdamW(schedule, weight_decay=params.weight_decay)
    return keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True, weight_decay=params.weight_decay)


class TimeBudget(keras.callbacks.Callback):
    """Ends training within ``seconds`` counted from ``started`` (a ``time.perf_counter()``
    value, e.g. the start of the stage, so loading data and a teacher's pass count too).

    After every epoch it plans as many epochs as still fit at the recent pace (the slowest of the
    last ``pace_window`` epochs; the first epoch, which includes graph tracing, only until others
    exist), at most the ``fit(epochs=...)`` asked for and at least the epochs run, and stops
    training at the plan's end. Whenever the plan changes it refits the learning-rate schedule
    (``WarmupCosine.fit_to``) and the weight-averaging window to it. The plan shrinks whenever
    epochs slow down and grows when they speed up again (the first epoch's tracing, or a load that
    went away), once two epochs past the first have run; the decay continues from the learning rate
    reached, so neither change makes it jump. A longer plan moves the averaging window later, so
    once averaging has begun the plan grows only in the first half of the run. What comes after
    training (weight-average check, saving, MLflow logging) is not counted.
    """

    def __init__(self, seconds: float, started: float, steps_per_epoch: int, averager: WeightAverage | None = None,
                 clock=time.perf_counter, pace_window: int = 3):
        super().__init__()
        self.seconds = seconds
        self.started = started
        self.steps_per_epoch = steps_per_epoch
        self.averager = averager
        self.clock = clock
        self.pace_window = pace_window
        self.planned_epochs: int | None = None
        self.durations: list[float] = []
        self.epoch_started = 0.0

    def pace(self) -> float:
        """Seconds per epoch to plan with: the slowest recent epoch, not counting the first once
        there are others."""
        recent = self.durations[1:][-self.pace_window:] or self.durations
        return max(recent)

    def may_grow(self) -> bool:
        """On the pace of at least two epochs after the first, not one; and, once weight averaging
        has begun, only in the first half of the plan (a longer plan moves the window later and
        drops what it held: early on that is the warm-up, late it would be most of the average)."""
        averaging = self.averager is not None and self.averager.count > 0
        return len(self.durations) >= 3 and (not averaging or 2 * len(self.durations) <= self.planned_epochs)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_started = self.clock()

    def on_epoch_end(self, epoch, logs=None):
        now = self.clock()
        self.durations.append(max(now - self.epoch_started, 1e-6))
        pace = self.pace()
        remaining = max(0.0, self.seconds - (now - self.started))
        asked = self.params.get("epochs") or epoch + 1
        fits = min(asked, epoch + 1 + int(remaining // pace))
        first_plan = self.planned_epochs is None
        if first_plan or fits < self.planned_epochs or (fits > self.planned_epochs and self.may_grow()):
            self.planned_epochs = fits
            schedule = self.model.optimizer._learning_rate
            if isinstance(schedule, WarmupCosine):
                schedule.fit_to(fits * self.steps_per_epoch, current_step=(epoch + 1) * self.steps_per_epoch)
            if self.averager is not None:
                self.averager.plan(fits)
            print(f"train: time budget {self.seconds / 60:g} min: {'planning' if first_plan else 're-planned to'} "
                  f"{fits} of {asked} epochs ({pace:.0f} s per epoch, {remaining / 60:.1f} min left)",
                  flush=True)
            if isinstance(schedule, WarmupCosine) and schedule.warmup_steps.numpy() >= schedule.total_steps.numpy():
                print("train: the planned run is all warm-up, so the learning rate will not decay: "
                      "raise train.time_budget_minutes or lower train.warmup_epochs", flush=True)
        if epoch + 1 >= self.planned_epochs:
            self.model.stop_training = True


def model_options(params: ModelParams) -> dict:
    return params.model_dump(exclude={"architecture"})


def model_param_path(field: str, value: str) -> Path | None:
    """A model-file param (``train.initial_model``, ``train.teacher_model``) as a path: None for
    'none', the bundled default model for 'default', else the given .keras path (errors name the
    param and the file)."""
    if value in ("none", ""):
        return None
    try:
        return resolve_model_file(None if value == "default" else value).path
    except ModelNotFoundError as error:
        raise ParamsError(f"train.{field} is {value!r}: {error}") from None


def teacher_model_paths(teacher_model: str | list[str]) -> list[Path]:
    """The ``train.teacher_model`` param as model files: none for 'none', one for a path or
    'default', several for a list (an ensemble teacher)."""
    values = teacher_model if isinstance(teacher_model, list) else [teacher_model]
    named = [(value, path) for value in values if (path := model_param_path("teacher_model", value)) is not None]
    # The params validator catches a name listed twice; this catches one file under two names
    # ('default' and the bundled file's path, or two relative spellings), which would count twice.
    seen: dict[Path, str] = {}
    for value, path in named:
        if path.resolve() in seen:
            raise ParamsError(f"train.teacher_model lists the file {path.resolve()} twice ({seen[path.resolve()]!r} and "
                              f"{value!r}): each teacher counts once in the average")
        seen[path.resolve()] = value
    return [path for _, path in named]


def initial_model_path(initial_model: str) -> Path | None:
    """The ``train.initial_model`` param as a model file (None for 'none'); see ``model_param_path``."""
    return model_param_path("initial_model", initial_model)


def check_teacher_shapes(teacher: keras.Model, path: Path) -> None:
    """A teacher must take this project's faces, (N, 48, 48, 1) raw 0-255 grayscale, and return
    the 7 probabilities in EMOTIONS order (the shapes are what can be checked)."""
    inputs, outputs = tuple(teacher.input_shape[1:]), teacher.output_shape[-1]
    if inputs != (FACE_SIZE, FACE_SIZE, 1) or outputs != NUM_CLASSES:
        raise ParamsError(
            f"train.teacher_model {path}: takes {inputs} and returns {outputs} values per face; a teacher must "
            f"take ({FACE_SIZE}, {FACE_SIZE}, 1) grayscale faces (0-255) and return {NUM_CLASSES} probabilities"
        )


class TeacherWeightDecay(keras.callbacks.Callback):
    """Sets the teacher's share of the targets (the variable ``make_dataset`` mixes with) before
    each epoch: ``start`` at the first, falling linearly to ``end`` at the last planned epoch
    (``budget``'s plan where there is one, which may change after any epoch, else ``epochs``).
    Why: with a fixed share, every student here lost most of the test-time-augmentation gain; a
    share falling to 0 lets the last epochs, at the lowest learning rates, learn the labels alone.
    Records the share of each epoch as ``teacher_weight`` in the logs (history CSV, MLflow). The
    few batches tf.data has already prefetched keep the previous epoch's share; early stopping
    (when on) can end a run before the share reaches ``end``."""

    def __init__(self, weight: tf.Variable, start: float, end: float, epochs: int, budget: TimeBudget | None = None):
        super().__init__()
        self.weight, self.start, self.end, self.epochs, self.budget = weight, start, end, epochs, budget

    def value(self, epoch: int) -> float:
        planned = (self.budget.planned_epochs if self.budget else None) or self.epochs
        progress = min(epoch / (planned - 1), 1.0) if planned > 1 else 1.0
        return self.start + (self.end - self.start) * progress

    def on_epoch_begin(self, epoch, logs=None):
        self.weight.assign(self.value(epoch))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["teacher_weight"] = float(self.weight.numpy())


def distillation_targets(probabilities: np.ndarray, labels: np.ndarray, weight: float) -> np.ndarray:
    """Training targets for knowledge distillation (Hinton et al. 2015, at temperature 1):
    ``weight`` x the teacher's ``probabilities`` + (1 - ``weight``) x the one-hot label.

    Cross-entropy against this mixture equals the weighted sum of the cross-entropies against the
    label and against the teacher, so it needs no custom loss (the loss's label smoothing then
    applies to the mixture as it would to one-hot labels). The teacher here is a trained model
    averaged over test-time views, which scores higher than the same model on one view.
    """
    probabilities = np.asarray(probabilities, np.float64)
    if probabilities.shape != (len(labels), NUM_CLASSES):
        raise ValueError(f"teacher probabilities of shape {probabilities.shape}, expected ({len(labels)}, {NUM_CLASSES})")
    one_hot = np.eye(NUM_CLASSES)[np.asarray(labels)]
    return (weight * probabilities + (1.0 - weight) * one_hot).astype(np.float32)


def with_policy(model: keras.Model, policy: str, name: str | None = None) -> keras.Model:
    """``model`` (a functional model, e.g. a float32 file) rebuilt with every layer but the output
    under the dtype ``policy``, weights copied, renamed ``name`` if given. Why: an online teacher runs
    every training step, and on the AMX Xeon the bundled model classifies 1,284 faces/s as saved
    (float32) against 2,582 in mixed_bfloat16 (``bench/classify_throughput.py``, batches of 128)."""
    config = model.get_config()
    config["name"] = name or config["name"]
    outputs = config["output_layers"]  # [name, node, index], or a list of them for several outputs
    output_layers = {outputs[0]} if isinstance(outputs[0], str) else {output[0] for output in outputs}
    for layer in config["layers"]:
        if layer["class_name"] != "InputLayer" and layer["config"]["name"] not in output_layers:
            layer["config"]["dtype"] = policy
    copy = model.__class__.from_config(config)
    copy.set_weights(model.get_weights())
    return copy


def ensemble_model(teachers: list[keras.Model]) -> keras.Model:
    """One model whose probabilities are the average of ``teachers``' (the model itself for one);
    their names must differ."""
    if len(teachers) == 1:
        return teachers[0]
    faces = keras.Input(shape=(FACE_SIZE, FACE_SIZE, 1), name="face")
    average = keras.layers.Average(dtype="float32")([teacher(faces) for teacher in teachers])
    return keras.Model(faces, average, name="ensemble_teacher")


def distill_online(model: keras.Model, teacher: keras.Model, weight: tf.Variable) -> None:
    """Make ``model.fit`` train on targets mixed per batch from the labels it is given and
    ``teacher``'s probabilities for the very faces in the batch (after augmentation):
    ``weight`` x teacher + (1 - ``weight``) x label. Unlike targets computed once per stored face,
    every augmented view gets its own teacher answer ("consistent teaching", Beyer et al. 2022);
    every student taught from stored targets here lost most of its test-time-augmentation gain.

    The teacher is held in this closure, not as an attribute, so it is neither trained nor saved
    with ``model``; gradients flow only into ``model`` (Keras' own ``train_step`` does the rest)."""
    def teacher_targets(faces, labels):
        soft = tf.cast(teacher(faces, training=False), tf.float32)
        return weight * soft + (1.0 - weight) * tf.cast(labels, tf.float32)

    def train_step(data):
        faces, labels = data
        return keras.Model.train_step(model, (faces, teacher_targets(faces, labels)))

    model.train_step = train_step


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
        copy = build_model(model_params.architecture, **model_options(model_params))
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


def average_weights(weight_lists: list[list[np.ndarray]]) -> list[np.ndarray]:
    """The element-wise mean of several models' ``get_weights()``, batch-norm statistics included
    (a "model soup", Wortsman et al. 2022). Only meaningful for runs from the same starting weights."""
    if not weight_lists:
        raise ValueError("no models to average")
    if len({len(weights) for weights in weight_lists}) != 1 or any(
            a.shape != b.shape for weights in weight_lists[1:] for a, b in zip(weight_lists[0], weights)):
        raise ValueError("the models do not share one architecture: their weights cannot be averaged")
    return [np.mean(np.stack(stack).astype(np.float64), axis=0).astype(stack[0].dtype) for stack in zip(*weight_lists)]


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


class WeightAverage(keras.callbacks.Callback):
    """Running mean of the weights at the end of each of the last ``epochs`` of ``total_epochs``
    (stochastic weight averaging, Izmailov et al. 2018): the mean of points the optimiser visits
    around a minimum often generalises better than any one of them. Batch-norm statistics of the
    average must be recalibrated (``recalibrate_batch_norm``) before it is used."""

    def __init__(self, epochs: int, total_epochs: int):
        super().__init__()
        self.epochs = epochs
        self.mean: list[np.ndarray] | None = None
        self.count = 0
        self.plan(total_epochs)

    def plan(self, total_epochs: int) -> None:
        """Average the last ``epochs`` of ``total_epochs`` (``TimeBudget`` may shorten or lengthen
        the run). A longer run moves the window later: what was averaged under the shorter plan
        (e.g. warm-up epochs) is dropped. A shorter one cannot add the epochs already past, so its
        average holds fewer than ``epochs``."""
        first = max(0, total_epochs - self.epochs)  # 0-based index of the first averaged epoch
        if self.count and first > getattr(self, "first", first):
            self.mean, self.count = None, 0
        self.first = first

    def on_epoch_end(self, epoch, logs=None):
        if epoch < self.first:
            return
        weights = self.model.get_weights()
        self.count += 1
        if self.mean is None:
            self.mean = [w.astype(np.float64) for w in weights]
        else:
            for mean, w in zip(self.mean, weights):
                mean += (w - mean) / self.count

    def weights(self) -> list[np.ndarray]:
        if self.mean is None:
            raise RuntimeError("no epoch was averaged (training stopped before the averaging window)")
        return [m.astype(np.float32) for m in self.mean]


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
    (history CSV, MLflow): with a time budget the schedule is refitted during the run, so the
    rate an epoch ended at is not known from the params alone."""

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


def teacher_probabilities(teacher: keras.Model, images: np.ndarray, tta: TestTimeAugmentation,
                          chunk: int = 2048, report=print) -> np.ndarray:
    """(N, 7) probabilities of ``teacher`` for (N, 48, 48) uint8 faces, averaged over the views
    of ``tta``, with a progress line per chunk (16 views of 25,000 faces take minutes on a CPU)."""
    parts, started = [], time.perf_counter()
    for start in range(0, len(images), chunk):
        parts.append(predict_probabilities(teacher, images[start : start + chunk], tta))
        done = min(len(images), start + chunk)
        report(f"train: teacher {done:,}/{len(images):,} faces x {tta.view_count} views "
               f"({time.perf_counter() - started:.0f} s)")
    return np.concatenate(parts) if parts else np.zeros((0, NUM_CLASSES), np.float32)
