"""Training pieces: the tf.data pipeline, the optimiser schedule and the callbacks."""

from pathlib import Path

import keras
import mlflow
import numpy as np
import pytest
import tensorflow as tf
from mlflow import MlflowClient

from emotion_recognition.pipeline.data import Split
from emotion_recognition.labels import NUM_CLASSES
from emotion_recognition.pipeline.params import TrainParams, load_params
from emotion_recognition.pipeline.training import (
    EpochTimer,
    LearningRateLogger,
    MLflowEpochLogger,
    cpu_info,
    describe_cpu,
    early_stopping,
    initial_model_path,
    limit_per_class,
    load_initial_weights,
    make_dataset,
    make_optimizer,
    online_augmentation,
    resolve_precision,
    steps_per_epoch,
)

ROOT = Path(__file__).resolve().parents[2]


def train_params(**changes) -> TrainParams:
    """params.yaml's train group (the only source of defaults) with ``changes``; online
    rotation, zoom and contrast off unless given, so a test sees only what it turns on."""
    committed = load_params(ROOT / "params.yaml").train.model_dump()
    return TrainParams(**{**committed, "online_rotation": 0.0, "online_zoom": 0.0, "online_contrast": 0.0, **changes})


@pytest.fixture
def split():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(7), [5, 1, 4, 9, 3, 2, 6])
    return Split(rng.integers(0, 256, (len(labels), 48, 48)).astype(np.uint8), labels,
                 np.array([str(i) for i in range(len(labels))]))


def test_limit_per_class_keeps_at_most_n_of_each_class_deterministically(split):
    limited = limit_per_class(split, 3, seed=1)
    assert np.bincount(limited.labels, minlength=7).tolist() == [3, 1, 3, 3, 3, 2, 3]
    again = limit_per_class(split, 3, seed=1)
    np.testing.assert_array_equal(limited.names, again.names)
    assert limit_per_class(split, 0, seed=1) is split


def test_validation_batches_are_the_raw_images_in_order(split):
    params = train_params()
    batches = list(make_dataset(split, 8, training=False, params=params))
    x = np.concatenate([b[0].numpy() for b in batches])
    y = np.concatenate([b[1].numpy() for b in batches])
    assert batches[0][0].shape == (8, 48, 48, 1) and batches[0][0].dtype.name == "float32"
    np.testing.assert_array_equal(x[..., 0], split.images.astype(np.float32))  # 0-255, not rescaled
    np.testing.assert_array_equal(y, np.eye(NUM_CLASSES)[split.labels])


def test_repeated_training_data_gives_every_image_once_per_epoch_reshuffled(split):
    """`repeat=True` (one iterator for the whole run) keeps epochs intact: each image once per epoch."""
    split.images[:] = np.arange(len(split))[:, None, None]  # pixel value = image index
    params = train_params(seed=3, online_flip=False, online_shift=0.0)
    steps = steps_per_epoch(len(split), 8)
    batches = list(make_dataset(split, 8, training=True, params=params, repeat=True).take(2 * steps))
    epochs = [np.concatenate([b[0].numpy()[:, 0, 0, 0] for b in batches[e * steps:(e + 1) * steps]]) for e in (0, 1)]
    for seen in epochs:
        assert sorted(seen.astype(int)) == list(range(len(split)))
    assert not np.array_equal(epochs[0], epochs[1])  # reshuffled between epochs


def test_training_batches_are_shuffled_flipped_and_shifted_but_keep_labels(split):
    params = train_params(seed=3, online_flip=True, online_shift=0.1)
    x, y = next(iter(make_dataset(split, len(split), training=True, params=params)))
    x, y = x.numpy()[..., 0], y.numpy()
    assert x.shape == split.images.shape and x.min() >= 0 and x.max() <= 255
    # images left unchanged by the random flip/shift still carry their own label
    changed = 0
    for image, onehot in zip(x, y):
        exact = [i for i in range(len(split)) if np.array_equal(image, split.images[i])]
        changed += not exact
        if exact:
            assert onehot.argmax() == split.labels[exact[0]]
    assert changed > 0
    assert y.sum() == len(split)
    assert sorted(y.argmax(axis=1)) == sorted(split.labels)  # a shuffle of all the labels


def test_online_augmentation_is_none_when_all_off_and_built_from_params():
    assert online_augmentation(train_params()) is None
    augment = online_augmentation(train_params(online_rotation=15, online_zoom=0.15, online_contrast=0.3))
    assert [type(layer).__name__ for layer in augment.layers] == ["RandomRotation", "RandomZoom", "RandomContrast"]
    assert all(layer.dtype_policy.name == "float32" for layer in augment.layers)


def test_online_rotation_zoom_contrast_change_training_pixels_only(split):
    params = train_params(online_flip=False, online_shift=0.0, online_rotation=15, online_zoom=0.15, online_contrast=0.3)
    x, y = next(iter(make_dataset(split, len(split), training=True, params=params)))
    x = x.numpy()
    assert x.shape == (len(split), 48, 48, 1) and x.min() >= 0 and x.max() <= 255
    assert not any(np.array_equal(image[..., 0], original) for image in x for original in split.images)
    assert sorted(y.numpy().argmax(axis=1)) == sorted(split.labels)
    val_x = np.concatenate([b[0].numpy() for b in make_dataset(split, 8, training=False, params=params)])
    np.testing.assert_array_equal(val_x[..., 0], split.images.astype(np.float32))  # validation untouched


def test_optimizer_warms_up_then_decays_over_the_whole_run():
    params = train_params(epochs=10, learning_rate=0.01, warmup_epochs=1.0, weight_decay=0.05)
    optimizer = make_optimizer(params, steps_per_epoch=20)
    schedule = optimizer._learning_rate
    assert isinstance(optimizer, keras.optimizers.AdamW)
    assert float(schedule(0)) == pytest.approx(0.0)
    assert float(schedule(10)) == pytest.approx(0.005)
    assert float(schedule(20)) == pytest.approx(0.01)
    assert float(schedule(110)) == pytest.approx(0.005, rel=1e-3)  # half-way through the cosine
    assert float(schedule(200)) == pytest.approx(0.0, abs=1e-7)


def test_optimizer_without_warmup_starts_at_the_peak():
    params = train_params(epochs=2, learning_rate=0.1, warmup_epochs=0)
    schedule = make_optimizer(params, steps_per_epoch=5)._learning_rate
    assert float(schedule(0)) == pytest.approx(0.1)
    assert float(schedule(10)) == pytest.approx(0.0, abs=1e-7)


def test_the_schedule_is_keras_own_and_fixed_by_the_params():
    """The plan depends on the params alone: the same schedule on any machine, saved and restored by Keras."""
    params = train_params(epochs=10, learning_rate=0.01, warmup_epochs=1.0)
    schedule = make_optimizer(params, steps_per_epoch=20)._learning_rate
    assert type(schedule) is keras.optimizers.schedules.CosineDecay
    restored = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(schedule))
    for step in [0, 7, 20, 55, 110, 199, 200, 260]:
        assert float(restored(step)) == pytest.approx(float(schedule(step)), abs=1e-7)


def test_steps_per_epoch_rounds_up():
    assert steps_per_epoch(257, 128) == 3 and steps_per_epoch(256, 128) == 2


def test_epoch_timer_adds_speed_to_the_logs():
    timer = EpochTimer(images_per_epoch=1000)
    logs = {"loss": 1.0}
    timer.on_epoch_begin(0)
    timer.on_epoch_end(0, logs)
    assert logs["epoch_seconds"] > 0 and logs["images_per_second"] == pytest.approx(1000 / logs["epoch_seconds"])


def test_learning_rate_logger_adds_the_rate_each_epoch_ends_at():
    from emotion_recognition.pipeline.model import build_model
    from testkit import model_params

    model = build_model(model_params(widths=[8], dense_units=8))
    optimizer = make_optimizer(train_params(epochs=2, learning_rate=0.01, warmup_epochs=0), 4)
    model.compile(optimizer=optimizer, loss="categorical_crossentropy")
    logger = LearningRateLogger()
    logger.set_model(model)
    rates = []
    for step in (0, 4, 6):  # the start, the end of epoch 1 (half-way: half the peak), 3/4 of the way
        optimizer.iterations.assign(step)
        logs = {"loss": 1.0}
        logger.on_epoch_end(0, logs)
        rates.append(logs["learning_rate"])
    assert rates == pytest.approx([0.01, 0.005, 0.01 * 0.5 * (1 + np.cos(0.75 * np.pi))], rel=1e-5)


@pytest.mark.parametrize("patience, stops_after", [(2, 3), (0, None)])
def test_early_stopping_patience_or_never_and_the_best_epoch_is_restored(patience, stops_after):
    from emotion_recognition.pipeline.model import build_model
    from testkit import model_params

    epochs = 6
    model = build_model(model_params(widths=[8], dense_units=8))
    callback = early_stopping(train_params(epochs=epochs, early_stopping_patience=patience))
    callback.set_model(model)
    model.stop_training = False  # as fit() sets it
    callback.on_train_begin()
    best = [w.copy() for w in model.get_weights()]
    stopped = None
    for epoch, accuracy in enumerate([0.5, 0.4, 0.4, 0.4, 0.4, 0.4]):  # the first epoch is the best
        callback.on_epoch_end(epoch, {"val_accuracy": accuracy})
        model.set_weights([w + 1.0 for w in model.get_weights()])  # later epochs move the weights
        if model.stop_training and stopped is None:
            stopped = epoch + 1
    callback.on_train_end()
    assert stopped == stops_after
    for a, b in zip(model.get_weights(), best):
        np.testing.assert_array_equal(a, b)


def test_epoch_logger_writes_each_epoch_to_the_active_run(mlflow_store):
    from emotion_recognition.pipeline.model import build_model
    from testkit import model_params
    from emotion_recognition.pipeline.tracking import configure_mlflow

    configure_mlflow()
    model = build_model(model_params(widths=[8], dense_units=8))
    model.compile(optimizer=make_optimizer(train_params(epochs=2, learning_rate=0.01), 4), loss="categorical_crossentropy")
    logger = MLflowEpochLogger()
    logger.set_model(model)
    with mlflow.start_run() as run:
        logger.on_epoch_end(0, {"loss": 2.0, "val_accuracy": 0.25, "val_loss": float("nan"), "learning_rate": 0.01})
        logger.on_epoch_end(1, {"loss": 1.5, "val_accuracy": 0.5, "learning_rate": 0.005})
    client = MlflowClient()
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "loss")] == [(1, 2.0), (2, 1.5)]
    assert "val_loss" not in client.get_run(run.info.run_id).data.metrics  # NaN is not logged
    assert [m.value for m in client.get_metric_history(run.info.run_id, "learning_rate")] == [0.01, 0.005]


def batch_norm_model() -> keras.Model:
    inputs = keras.Input((48, 48, 1))
    x = keras.layers.Rescaling(1.0, name="identity")(inputs)
    x = keras.layers.BatchNormalization(axis=-1, momentum=0.99, name="bn")(x)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))


def test_recalibrate_batch_norm_sets_the_statistics_of_the_training_images():
    from emotion_recognition.pipeline.training import recalibrate_batch_norm

    images = np.random.default_rng(0).integers(0, 256, (20, 48, 48)).astype(np.uint8)
    model = batch_norm_model()
    bn = model.get_layer("bn")
    # full batches: every step sees the same statistics, so their running mean is exactly them
    recalibrate_batch_norm(model, images, batches=3, batch_size=len(images))
    pixels = images.astype(np.float64)
    np.testing.assert_allclose(bn.moving_mean.numpy(), [pixels.mean()], rtol=1e-4)
    np.testing.assert_allclose(bn.moving_variance.numpy(), [pixels.var()], rtol=1e-3)
    assert bn.momentum == 0.99


def test_recalibrate_batch_norm_averages_batches_equally():
    from emotion_recognition.pipeline.training import recalibrate_batch_norm

    dark = np.full((4, 48, 48), 10, np.uint8)
    bright = np.full((4, 48, 48), 110, np.uint8)
    model = batch_norm_model()
    # batch size 4 of 8 images: each batch mean is in [10, 110]; the result is their plain average
    images = np.concatenate([dark, bright])
    recalibrate_batch_norm(model, images, batches=50, batch_size=4, seed=3)
    rng = np.random.default_rng(3)
    means = [images[rng.choice(8, size=4, replace=False)].mean() for _ in range(50)]
    np.testing.assert_allclose(model.get_layer("bn").moving_mean.numpy(), [np.mean(means)], rtol=1e-4)


def test_precise_batch_norm_recalibrates_before_each_validation_pass():
    from emotion_recognition.pipeline.training import PreciseBatchNorm

    model = batch_norm_model()
    images = np.full((6, 48, 48), 50, np.uint8)
    callback = PreciseBatchNorm(images, batches=2)
    callback.set_model(model)
    callback.on_test_begin()
    callback.on_test_begin()
    assert callback.calls == 2
    np.testing.assert_allclose(model.get_layer("bn").moving_mean.numpy(), [50.0], rtol=1e-5)


def test_recalibrate_without_batch_norm_or_images_is_a_no_op():
    from emotion_recognition.pipeline.training import recalibrate_batch_norm

    model = batch_norm_model()
    before = [w.copy() for w in model.get_weights()]
    recalibrate_batch_norm(model, np.zeros((0, 48, 48), np.uint8))
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    plain = keras.Sequential([keras.Input((48, 48, 1)), keras.layers.Flatten()])
    recalibrate_batch_norm(plain, np.zeros((2, 48, 48), np.uint8))


AMD_EPYC_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
flags\t\t: fpu sse sse2 avx f16c avx2 fma
processor\t: 1
model name\t: AMD EPYC
flags\t\t: fpu sse sse2 avx f16c avx2 fma
"""


def test_cpu_info_reads_model_name_and_flags(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(AMD_EPYC_CPUINFO)
    assert cpu_info(cpuinfo) == ("AMD EPYC", {"fpu", "sse", "sse2", "avx", "f16c", "avx2", "fma"})


def test_cpu_info_without_proc_cpuinfo_has_a_name_and_unknown_flags(tmp_path):
    name, flags = cpu_info(tmp_path / "missing")
    assert flags is None and isinstance(name, str)


def test_auto_precision_uses_bf16_only_where_the_cpu_has_bf16_instructions():
    assert resolve_precision("auto", {"avx2", "avx512f", "avx512_bf16"})[0] == "mixed_bfloat16"
    assert resolve_precision("auto", {"avx2", "amx_bf16", "amx_tile"})[0] == "mixed_bfloat16"
    policy, why = resolve_precision("auto", {"avx2", "fma"})
    assert policy == "float32" and "avx512_bf16" in why
    assert resolve_precision("auto", None)[0] == "float32"  # unknown CPU: the safe choice


def test_explicit_precision_is_kept_with_a_warning_when_bf16_would_be_emulated():
    policy, why = resolve_precision("mixed_bfloat16", {"avx2", "fma"})
    assert policy == "mixed_bfloat16" and why.startswith("WARNING") and "auto or float32" in why
    assert resolve_precision("mixed_bfloat16", {"avx512_bf16"}) == ("mixed_bfloat16", "set in params.yaml")
    assert resolve_precision("mixed_bfloat16", None) == ("mixed_bfloat16", "set in params.yaml")
    assert resolve_precision("float32", {"avx512_bf16"}) == ("float32", "set in params.yaml")


def test_initial_model_param_names_the_file_to_start_from(tmp_path):
    from emotion_recognition.model_files import BUNDLED_MODEL
    from emotion_recognition.pipeline.params import ParamsError

    assert initial_model_path("none") is None
    if BUNDLED_MODEL.is_file():
        assert initial_model_path("default") == BUNDLED_MODEL
    with pytest.raises(ParamsError, match=r"train.initial_model is '.*missing.keras'.*no model file"):
        initial_model_path(str(tmp_path / "missing.keras"))
    (tmp_path / "weights.h5").write_bytes(b"x")
    with pytest.raises(ParamsError, match="expected a .keras file"):
        initial_model_path(str(tmp_path / "weights.h5"))


def test_initial_weights_are_copied_only_into_the_same_architecture(tmp_path):
    from emotion_recognition.pipeline.model import build_model
    from testkit import model_params
    from emotion_recognition.pipeline.params import ParamsError

    keras.utils.set_random_seed(0)
    trained = build_model(model_params(widths=[8, 16], convs_per_block=1, dense_units=16))
    trained.save(tmp_path / "trained.keras")
    fresh = build_model(model_params(widths=[8, 16], convs_per_block=1, dense_units=16))
    assert not np.allclose(fresh.get_weights()[0], trained.get_weights()[0])
    load_initial_weights(fresh, tmp_path / "trained.keras")
    for a, b in zip(fresh.get_weights(), trained.get_weights()):
        np.testing.assert_array_equal(a, b)
    wider = build_model(model_params(widths=[16, 32], convs_per_block=1, dense_units=16))
    with pytest.raises(ParamsError, match=r"do not fit the model built from params.yaml.*set model\.\*"):
        load_initial_weights(wider, tmp_path / "trained.keras")



def test_describe_cpu_names_the_cores_and_the_flags_that_set_training_speed():
    assert describe_cpu("AMD EPYC", {"fpu", "sse2", "avx", "avx2", "fma"}).endswith("cores, avx2 fma")
    assert describe_cpu("Xeon", {"avx2", "avx512f", "avx512_bf16", "amx_bf16"}).endswith("avx2 avx512f avx512_bf16 amx_bf16")
    assert describe_cpu("Mac", None).endswith("flags unknown")
