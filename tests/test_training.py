"""Training pieces: the tf.data pipeline, the optimiser schedule and the callbacks."""

import keras
import mlflow
import numpy as np
import pytest
import tensorflow as tf
from mlflow import MlflowClient

from emotion_recognition.data import Split
from emotion_recognition.labels import NUM_CLASSES
from emotion_recognition.params import TrainParams
from emotion_recognition.training import (
    EpochTimer,
    LearningRateLogger,
    MLflowEpochLogger,
    TimeBudget,
    WarmupCosine,
    WeightAverage,
    average_weights,
    cpu_info,
    cutmix,
    distill_online,
    distillation_targets,
    early_stopping,
    ensemble_model,
    initial_model_path,
    limit_per_class,
    load_initial_weights,
    make_dataset,
    make_optimizer,
    mix_batch,
    mixup,
    model_param_path,
    online_augmentation,
    resolve_precision,
    sample_beta,
    steps_per_epoch,
    TeacherWeightDecay,
    teacher_model_paths,
    teacher_probabilities,
    with_policy,
)


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
    params = TrainParams()
    batches = list(make_dataset(split, 8, training=False, params=params))
    x = np.concatenate([b[0].numpy() for b in batches])
    y = np.concatenate([b[1].numpy() for b in batches])
    assert batches[0][0].shape == (8, 48, 48, 1) and batches[0][0].dtype.name == "float32"
    np.testing.assert_array_equal(x[..., 0], split.images.astype(np.float32))  # 0-255, not rescaled
    np.testing.assert_array_equal(y, np.eye(NUM_CLASSES)[split.labels])


def test_repeated_training_data_gives_every_image_once_per_epoch_reshuffled(split):
    """`repeat=True` (one iterator for the whole run) keeps epochs intact: each image once per epoch."""
    split.images[:] = np.arange(len(split))[:, None, None]  # pixel value = image index
    params = TrainParams(seed=3, online_flip=False, online_shift=0.0)
    steps = steps_per_epoch(len(split), 8)
    batches = list(make_dataset(split, 8, training=True, params=params, repeat=True).take(2 * steps))
    epochs = [np.concatenate([b[0].numpy()[:, 0, 0, 0] for b in batches[e * steps:(e + 1) * steps]]) for e in (0, 1)]
    for seen in epochs:
        assert sorted(seen.astype(int)) == list(range(len(split)))
    assert not np.array_equal(epochs[0], epochs[1])  # reshuffled between epochs


def test_training_batches_are_shuffled_flipped_and_shifted_but_keep_labels(split):
    params = TrainParams(seed=3, online_flip=True, online_shift=0.1)
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


def test_online_augmentation_is_off_by_default_and_built_from_params():
    assert online_augmentation(TrainParams()) is None
    augment = online_augmentation(TrainParams(online_rotation=15, online_zoom=0.15, online_contrast=0.3,
                                              online_erasing=1.0))
    assert [type(layer).__name__ for layer in augment.layers] == ["RandomRotation", "RandomZoom", "RandomContrast",
                                                                  "RandomErasing"]
    assert all(layer.dtype_policy.name == "float32" for layer in augment.layers)


def test_online_rotation_zoom_contrast_change_training_pixels_only(split):
    params = TrainParams(online_flip=False, online_shift=0.0, online_rotation=15, online_zoom=0.15, online_contrast=0.3)
    x, y = next(iter(make_dataset(split, len(split), training=True, params=params)))
    x = x.numpy()
    assert x.shape == (len(split), 48, 48, 1) and x.min() >= 0 and x.max() <= 255
    assert not any(np.array_equal(image[..., 0], original) for image in x for original in split.images)
    assert sorted(y.numpy().argmax(axis=1)) == sorted(split.labels)
    val_x = np.concatenate([b[0].numpy() for b in make_dataset(split, 8, training=False, params=params)])
    np.testing.assert_array_equal(val_x[..., 0], split.images.astype(np.float32))  # validation untouched


def test_online_erasing_covers_part_of_some_faces_with_noise(split):
    params = TrainParams(online_flip=False, online_shift=0.0, online_erasing=1.0)
    faces = np.repeat(split.images[:1], 256, axis=0)
    x, _ = next(iter(make_dataset(Split(faces, np.zeros(256, np.int64), np.arange(256).astype(str)), 256, training=True, params=params)))
    changed = (x.numpy()[..., 0] != faces).reshape(256, -1).mean(axis=1)
    assert 0.2 < (changed > 0).mean() < 0.8  # probability drawn in [0, 1]: about half the faces
    assert changed.max() < 0.4  # at most a third of the face (plus noise equal to a pixel by chance)
    assert x.numpy().min() >= 0 and x.numpy().max() <= 255


def constant_faces(n: int = 8):
    """Face i is flat grey level 10 * i and labelled i % 7, so a mix shows in both pixels and targets."""
    x = tf.constant(np.stack([np.full((48, 48, 1), 10.0 * i, np.float32) for i in range(n)]))
    return x, tf.one_hot(np.arange(n) % NUM_CLASSES, NUM_CLASSES)


def test_mixup_blends_pixels_and_targets_by_the_same_ratio():
    x, y = constant_faces()
    partner = tf.constant([1, 0, 3, 2, 5, 4, 7, 6])
    mixed_x, mixed_y = mixup(x, y, partner, tf.constant(0.75))
    np.testing.assert_allclose(mixed_x.numpy()[0], 0.75 * 0 + 0.25 * 10)
    np.testing.assert_allclose(mixed_y.numpy()[0], [0.75, 0.25, 0, 0, 0, 0, 0])
    np.testing.assert_allclose(mixed_y.numpy().sum(axis=1), 1, rtol=1e-6)


def test_cutmix_pastes_one_box_and_mixes_targets_by_its_true_area():
    x, y = constant_faces()
    partner = tf.constant([1, 0, 3, 2, 5, 4, 7, 6])
    for _ in range(20):  # random places: boxes clipped at the edge must still be counted exactly
        mixed_x, mixed_y = cutmix(x, y, partner, tf.constant(0.75))
        pasted = (mixed_x.numpy()[1, ..., 0] == 0.0)  # face 1 (grey 10) gets face 0 (grey 0) in the box
        rows, cols = np.flatnonzero(pasted.any(axis=1)), np.flatnonzero(pasted.any(axis=0))
        assert pasted.sum() == len(rows) * len(cols)  # one rectangle
        assert pasted.sum() <= 24 * 24  # sqrt(1 - 0.75) of each side at most
        share = pasted.mean()
        np.testing.assert_allclose(mixed_y.numpy()[1, :2], [share, 1 - share], atol=1e-6)


def test_beta_draws_stay_in_0_1_and_alpha_shapes_them():
    low = np.array([float(sample_beta(0.2)) for _ in range(300)])
    even = np.array([float(sample_beta(1.0)) for _ in range(300)])
    assert low.min() >= 0 and low.max() <= 1 and even.min() >= 0 and even.max() <= 1
    # Beta(0.2, 0.2) puts most mass near 0 and 1 (most mixes are mild); Beta(1, 1) is uniform
    assert np.mean((low < 0.1) | (low > 0.9)) > 0.5 > np.mean((even < 0.1) | (even > 0.9))


@pytest.mark.parametrize("mixup_alpha, cutmix_alpha", [(0.2, 0.0), (0.0, 1.0), (0.4, 1.0)])
def test_mixing_reaches_training_batches_only_and_keeps_targets_distributions(split, mixup_alpha, cutmix_alpha):
    params = TrainParams(online_flip=False, online_shift=0.0, mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha)
    batches = iter(make_dataset(split, len(split), training=True, params=params, repeat=True))
    soft = 0
    for _ in range(10):  # Beta(0.2, 0.2): about a quarter of the batches mix by less than 0.1%
        x, y = next(batches)
        y = y.numpy()
        np.testing.assert_allclose(y.sum(axis=1), 1, rtol=1e-5)
        assert x.numpy().min() >= 0 and x.numpy().max() <= 255 + 1e-3  # blends of two 255s round to 255.00002
        soft += int((y.max(axis=1) < 0.999).sum())
    assert soft > 0  # some targets are mixtures of two labels
    val_x, val_y = next(iter(make_dataset(split, len(split), training=False, params=params)))
    np.testing.assert_array_equal(val_x.numpy()[..., 0], split.images.astype(np.float32))
    np.testing.assert_array_equal(val_y.numpy().argmax(axis=1), split.labels)
    assert val_y.numpy().max(axis=1).min() == 1.0  # validation targets stay one-hot


def test_mix_batch_with_both_uses_each_method_sometimes():
    x, y = constant_faces()
    kinds = set()
    for _ in range(30):
        mixed_x, _ = mix_batch(x, y, 0.4, 1.0)
        per_face_levels = [np.unique(face).size for face in mixed_x.numpy()]
        kinds.add("cutmix" if max(per_face_levels) > 1 else "mixup")  # a pasted box gives a face two grey levels
    assert kinds == {"mixup", "cutmix"}


def test_optimizer_warms_up_then_decays_over_the_whole_run():
    params = TrainParams(epochs=10, learning_rate=0.01, warmup_epochs=1.0, weight_decay=0.05)
    optimizer = make_optimizer(params, steps_per_epoch=20)
    schedule = optimizer._learning_rate
    assert isinstance(optimizer, keras.optimizers.AdamW)
    assert float(schedule(0)) == pytest.approx(0.0)
    assert float(schedule(10)) == pytest.approx(0.005)
    assert float(schedule(20)) == pytest.approx(0.01)
    assert float(schedule(110)) == pytest.approx(0.005, rel=1e-3)  # half-way through the cosine
    assert float(schedule(200)) == pytest.approx(0.0, abs=1e-7)


def test_optimizer_without_warmup_and_sgd():
    params = TrainParams(epochs=2, learning_rate=0.1, warmup_epochs=0, optimizer="sgd")
    optimizer = make_optimizer(params, steps_per_epoch=5)
    assert isinstance(optimizer, keras.optimizers.SGD)
    assert float(optimizer._learning_rate(0)) == pytest.approx(0.1)


def test_schedule_is_keras_cosine_decay_with_warmup_and_its_length_can_change():
    schedule = WarmupCosine(0.01, warmup_steps=20, total_steps=200, refit="keep_phase")
    keras_schedule = keras.optimizers.schedules.CosineDecay(0.0, decay_steps=180, warmup_target=0.01, warmup_steps=20)
    for step in [0, 7, 20, 55, 110, 199, 200, 260]:
        assert float(schedule(step)) == pytest.approx(float(keras_schedule(step)), abs=1e-7)
    no_warmup = WarmupCosine(0.01, warmup_steps=0, total_steps=100)
    for step in [0, 30, 100]:
        assert float(no_warmup(step)) == pytest.approx(
            float(keras.optimizers.schedules.CosineDecay(0.01, decay_steps=100)(step)), abs=1e-7)
    reached = float(schedule(30))
    schedule.fit_to(100, current_step=30)  # a shorter run: the rest of the cosine, squeezed into the steps left
    assert float(schedule(30)) == pytest.approx(reached, rel=1e-6)  # no jump
    phase = 10 / 180  # how far along the decay step 30 was
    halfway = 0.005 * (1 + np.cos(np.pi * (phase + (1 - phase) / 2)))
    assert float(schedule(65)) == pytest.approx(halfway, rel=1e-4)  # half-way through the rest of the curve
    assert float(schedule(100)) == pytest.approx(0.0, abs=1e-7)
    assert float(schedule(10)) == pytest.approx(0.005)  # a warm-up of a fifth of the run is kept
    reached = float(schedule(65))
    schedule.fit_to(300, current_step=65)  # longer again: no jump either, and zero at the new end
    assert float(schedule(65)) == pytest.approx(reached, rel=1e-6)
    phase += (1 - phase) / 2  # where step 65 was on the curve
    halfway = 0.005 * (1 + np.cos(np.pi * (phase + (1 - phase) / 2)))
    assert float(schedule(182.5)) == pytest.approx(halfway, rel=1e-4) and float(schedule(300)) == 0.0
    restored = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(schedule))
    assert isinstance(restored, WarmupCosine)
    assert restored.get_config() == schedule.get_config()
    assert float(restored(100)) == pytest.approx(float(schedule(100)))


def test_frequent_small_refits_keep_the_shape_of_one_cosine_over_the_final_plan():
    # a budgeted run re-plans by an epoch or two every few epochs; the curve it follows must stay
    # the cosine of its final length, not restart flat at each refit (which kept the rate near the
    # peak for most of a run and dropped it in the last epochs)
    schedule = WarmupCosine(0.01, warmup_steps=0, total_steps=700, refit="keep_phase")
    for step, total in zip(range(50, 700, 50), [720, 690, 700, 710, 700, 690, 700, 710, 700, 700, 700, 700, 700]):
        schedule.fit_to(total, current_step=step)
    assert float(schedule.total_steps.numpy()) == 700
    one_cosine = keras.optimizers.schedules.CosineDecay(0.01, decay_steps=700)
    for step in range(600, 700, 10):
        assert float(schedule(step)) == pytest.approx(float(one_cosine(step)), abs=2e-4)
    assert float(schedule(600)) < 0.001  # 6/7 of the way: about 5% of the peak, not near it


def test_the_restart_refit_starts_a_half_cosine_from_the_rate_reached_and_holds_it_near_the_peak():
    # train.lr_refit: restart, the rule the bundled model trained with: each refit is a new
    # half-cosine from the current rate, which starts flat, so frequent refits keep the rate high
    schedule = WarmupCosine(0.01, warmup_steps=0, total_steps=700, refit="restart")
    reached = float(schedule(50))
    schedule.fit_to(720, current_step=50)
    assert float(schedule(50)) == pytest.approx(reached, rel=1e-6)  # no jump
    assert float(schedule(385)) == pytest.approx(reached / 2, rel=1e-3)  # half-way through the steps left
    for step, total in zip(range(100, 700, 50), [690, 700, 710, 700, 690, 700, 710, 700, 700, 700, 700, 700]):
        schedule.fit_to(total, current_step=step)
    assert float(schedule(700)) == 0.0
    one_cosine = keras.optimizers.schedules.CosineDecay(0.01, decay_steps=700)
    assert float(schedule(500)) > 2 * float(one_cosine(500))
    restored = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(schedule))
    assert restored.refit == "restart" and float(restored(600)) == pytest.approx(float(schedule(600)))
    with pytest.raises(ValueError, match="refit: expected one of restart, keep_phase, got 'flat'"):
        WarmupCosine(0.01, warmup_steps=0, total_steps=700, refit="flat")


def test_the_optimizer_schedule_refits_by_train_lr_refit():
    for rule in ("restart", "keep_phase"):
        optimizer = make_optimizer(TrainParams(epochs=10, lr_refit=rule), steps_per_epoch=5)
        assert optimizer._learning_rate.refit == rule
    assert TrainParams().lr_refit == "restart"


def test_a_decay_share_holds_the_peak_and_decays_over_the_last_share_of_each_plan():
    # train.lr_decay_share 0.2: warm-up 0-100, peak held to 100 + 0.8 * 900 = 820, cosine to 0 at 1000
    schedule = WarmupCosine(0.01, warmup_steps=100, total_steps=1000, refit="restart", decay_share=0.2)
    assert float(schedule(50)) == pytest.approx(0.005)
    assert float(schedule(100)) == pytest.approx(0.01) and float(schedule(819)) == pytest.approx(0.01)
    assert float(schedule(910)) == pytest.approx(0.005, rel=1e-4) and float(schedule(1000)) == 0.0
    # re-plans during the hold, shorter then longer, only move the decay: always the last fifth
    for current, total in [(200, 900), (300, 950), (400, 800)]:
        schedule.fit_to(total, current_step=current)
        assert float(schedule.decay_start.numpy()) == pytest.approx(100 + 0.8 * (total - 100))
        assert float(schedule(current)) == pytest.approx(0.01)
    assert float(schedule(660)) == pytest.approx(0.01) and float(schedule(730)) == pytest.approx(0.005, rel=1e-4)
    # a re-plan during the decay goes on from the rate reached, by the refit rule, to 0 at the new end
    reached = float(schedule(700))
    schedule.fit_to(820, current_step=700)
    assert float(schedule(700)) == pytest.approx(reached, rel=1e-6) and float(schedule(820)) == 0.0
    # the same warm-up and decay whichever rule, when no re-plan falls in the decay
    for rule in ("restart", "keep_phase"):
        other = WarmupCosine(0.01, warmup_steps=100, total_steps=1000, refit=rule, decay_share=0.2)
        other.fit_to(900, current_step=300)
        assert [float(other(s)) for s in (300, 740, 820, 900)] == pytest.approx([0.01, 0.01, 0.005, 0.0], abs=1e-6)
    restored = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(schedule))
    assert restored.decay_share == 0.2 and float(restored(760)) == pytest.approx(float(schedule(760)))
    # keep_phase: a re-plan during the decay goes on along the same cosine, from the phase reached
    along = WarmupCosine(0.01, warmup_steps=100, total_steps=1000, refit="keep_phase", decay_share=0.2)
    along.fit_to(1180, current_step=910)  # half-way down the decay (820-1000): the other half over 910-1180
    assert float(along(910)) == pytest.approx(0.005, rel=1e-4) and float(along(1045)) == pytest.approx(
        0.005 * (1 + np.cos(np.pi * 0.75)), rel=1e-3)


def test_a_re_plan_where_the_hold_ends_or_during_the_warm_up_still_places_the_decay_by_its_share():
    schedule = WarmupCosine(0.01, warmup_steps=100, total_steps=1000, decay_share=0.2)
    schedule.fit_to(2000, current_step=820)  # exactly at the old decay start, still at the peak
    assert float(schedule.decay_start.numpy()) == pytest.approx(100 + 0.8 * 1900)
    schedule.fit_to(1700, current_step=1600)  # its hold would have ended at 1380: the decay starts now
    assert float(schedule.decay_start.numpy()) == 1600 and float(schedule(1600)) == pytest.approx(0.01)
    assert float(schedule(1650)) == pytest.approx(0.005, rel=1e-4)
    warming = WarmupCosine(0.01, warmup_steps=300, total_steps=1000, decay_share=0.5)
    warming.fit_to(800, current_step=100)  # the warm-up is cut to a fifth, the hold ends half-way after it
    assert float(warming.warmup_steps.numpy()) == 160 and float(warming.decay_start.numpy()) == 480
    # with no hold a re-plan at the end of the warm-up is a decay over the whole new plan, as before
    plain = WarmupCosine(0.01, warmup_steps=100, total_steps=1000)
    plain.fit_to(1100, current_step=100)
    assert float(plain.decay_start.numpy()) == 100 and float(plain(600)) == pytest.approx(0.005, rel=1e-4)


def test_a_schedule_saved_before_decay_share_existed_loads_with_no_hold():
    config = WarmupCosine(0.01, warmup_steps=100, total_steps=1000, decay_start=400.0, decay_from=0.008).get_config()
    del config["decay_share"]
    restored = WarmupCosine.from_config(config)
    assert restored.decay_share == 1.0 and float(restored.decay_start.numpy()) == 400
    del config["decay_start"], config["decay_from"]
    assert float(WarmupCosine.from_config(config).decay_start.numpy()) == 100
    with pytest.raises(ValueError, match=r"decay_share: expected a share in \(0, 1\], got 0"):
        WarmupCosine(0.01, warmup_steps=0, total_steps=700, decay_share=0)


def test_the_optimizer_schedule_holds_the_peak_by_train_lr_decay_share():
    schedule = make_optimizer(TrainParams(epochs=10, warmup_epochs=1.0, lr_decay_share=0.5), steps_per_epoch=10)._learning_rate
    assert schedule.decay_share == 0.5 and float(schedule.decay_start.numpy()) == 55  # 10 warm-up + half of 90
    assert TrainParams().lr_decay_share == 1.0  # by default no hold: the decay starts after the warm-up
    assert float(make_optimizer(TrainParams(epochs=10), 10)._learning_rate.decay_start.numpy()) == 10
    with pytest.raises(ValueError, match="lr_decay_share"):
        TrainParams(lr_decay_share=1.5)


def test_a_long_warmup_is_cut_short_when_the_run_is_shortened_but_never_before_the_current_step():
    schedule = WarmupCosine(0.01, warmup_steps=300, total_steps=1000)
    schedule.fit_to(200, current_step=100)
    assert float(schedule.warmup_steps.numpy()) == 100  # a fifth (40) would rewrite steps already taken
    assert float(schedule(150)) == pytest.approx(0.005, rel=1e-3) and float(schedule(200)) == pytest.approx(0.0)
    schedule = WarmupCosine(0.01, warmup_steps=300, total_steps=1000)
    schedule.fit_to(800, current_step=100)
    assert float(schedule.warmup_steps.numpy()) == 160
    schedule.fit_to(800, current_step=200)  # a plan that does not shorten the run changes nothing
    assert float(schedule.warmup_steps.numpy()) == 160
    long_warmup = WarmupCosine(0.01, warmup_steps=300, total_steps=1000)
    long_warmup.fit_to(1000, current_step=100)
    assert float(long_warmup.warmup_steps.numpy()) == 300


def test_shortening_the_schedule_takes_effect_inside_the_compiled_training_step():
    from emotion_recognition.model import build_model

    model = build_model("vgg", widths=[4], convs_per_block=1, dense_units=8)
    schedule = WarmupCosine(0.1, warmup_steps=0, total_steps=1000)
    model.compile(optimizer=keras.optimizers.SGD(schedule), loss="categorical_crossentropy")
    x = np.random.default_rng(0).uniform(0, 255, (8, 48, 48, 1)).astype(np.float32)
    y = keras.utils.to_categorical(np.arange(8) % 7, 7)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)  # 2 steps at about 0.1: the weights move
    trainable = [w.numpy().copy() for w in model.trainable_weights]
    schedule.fit_to(2, current_step=2)  # the run ends now: learning rate 0 from step 2 on
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    for before, after in zip(trainable, model.trainable_weights):
        np.testing.assert_array_equal(before, after.numpy())


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def budget_run(seconds, epoch_seconds, asked_epochs=50, started=0.0, averager=None, warmup_epochs=0.0):
    """Drives a TimeBudget through epochs of the given lengths (the last one repeating) as
    ``fit`` would, after 30 s of loading; returns the callback, the epochs run and the model."""
    from emotion_recognition.model import build_model

    model = build_model("vgg", widths=[4], convs_per_block=1, dense_units=8)
    model.compile(optimizer=make_optimizer(TrainParams(epochs=asked_epochs, warmup_epochs=warmup_epochs), 10),
                  loss="categorical_crossentropy")
    clock = FakeClock()
    clock.now = 30.0  # data loading before fit counts against the budget
    budget = TimeBudget(seconds, started, steps_per_epoch=10, averager=averager, clock=clock)
    budget.set_model(model)
    budget.set_params({"epochs": asked_epochs})
    if averager is not None:
        averager.set_model(model)
    model.stop_training = False
    run = 0
    while run < asked_epochs and not model.stop_training:
        budget.on_epoch_begin(run)
        clock.now += epoch_seconds[min(run, len(epoch_seconds) - 1)]
        budget.on_epoch_end(run)
        if averager is not None:  # after the budget, as in the train stage's callbacks
            averager.on_epoch_end(run)
        run += 1
    return budget, run, model


def test_time_budget_plans_the_epochs_that_fit_and_ends_the_decay_there(capsys):
    averager = WeightAverage(epochs=3, total_epochs=50)
    budget, run, model = budget_run(900, [100, 90], averager=averager)
    # 30 s loading + 100 s first epoch (tracing); 770 s left = 7 more epochs of 100 s: 8
    # after epoch 3 the pace is 90 s (the first epoch no longer counts); 590 s left = 6 more: 9
    out = capsys.readouterr().out
    assert "time budget 15 min: planning 8 of 50 epochs (100 s per epoch" in out and "re-planned to 9 of 50" in out
    assert budget.planned_epochs == 9 and run == 9  # 30 + 100 + 8 x 90 = 850 s of the 900
    assert float(model.optimizer._learning_rate.total_steps.numpy()) == 90
    assert averager.first == 6 and averager.count == 3  # the last 3 of the 9 epochs


def test_time_budget_grows_the_plan_when_a_load_goes_away(capsys):
    # a busy CPU for 3 epochs (200 s), then idle (100 s): the 3-epoch pace window forgets the load
    budget, run, model = budget_run(3000, [100, 200, 200, 200, 100])
    assert run == budget.planned_epochs
    spent = 30 + 100 + 3 * 200 + (run - 4) * 100
    assert spent <= 3000 and 3000 - spent < 200  # the budget is used, not left idle
    assert float(model.optimizer._learning_rate.total_steps.numpy()) == run * 10
    assert "re-planned to 26 of 50" in capsys.readouterr().out  # grown once the window held only idle epochs
    # the same slowdown late in a run (a test suite sharing the CPU): shorter, then longer again
    budget, run, model = budget_run(3000, [100] * 14 + [300, 300, 100])
    lines = [line for line in capsys.readouterr().out.splitlines() if "budget" in line]
    plans = [int(line.split("re-planned to ")[1].split()[0]) for line in lines if "re-planned" in line]
    assert plans[0] == 19 and plans[-1] == budget.planned_epochs == run == 25
    spent = 30 + 14 * 100 + 2 * 300 + (run - 16) * 100
    assert spent <= 3000 and 3000 - spent < 200
    schedule = model.optimizer._learning_rate
    assert float(schedule(run * 10)) == 0.0 and float(schedule(run * 10 - 5)) > 0.0  # still ends at the end


def test_averaging_stops_late_growth_but_not_late_shrinking():
    averager = WeightAverage(epochs=5, total_epochs=50)
    budget, run, _ = budget_run(3000, [100] * 14 + [300, 300, 100], averager=averager)
    # plan 29 after epoch 1 (window 25-29); shrunk to 19 at epoch 15, so averaging begins at epoch 15;
    # past the middle with averages held, the plan no longer grows
    assert budget.planned_epochs == run == 19 and averager.first == 14 and averager.count == 5


def test_a_grown_plan_moves_the_averaging_window_to_its_last_epochs():
    averager = WeightAverage(epochs=10, total_epochs=50)
    # a slow first epoch (tracing) plans 10, so the 10-epoch window starts at once (epoch 1 is
    # averaged); after epoch 3 the plan grows to 28 and the window moves to epochs 19-28
    budget, run, _ = budget_run(30 + 300 + 9 * 300, [300, 100], averager=averager)
    assert budget.planned_epochs == run == 28
    assert averager.first == 18 and averager.count == 10  # the warm-up epochs were dropped


def test_one_fast_epoch_does_not_grow_the_plan():
    budget, run, _ = budget_run(30 + 300 + 9 * 300, [300, 100, 300])
    assert budget.planned_epochs == run == 10


def test_a_lengthened_run_keeps_the_warmup_a_short_plan_cut():
    # 3 warm-up epochs asked; a slow first epoch plans 8, which cuts the warm-up to a fifth of 80
    # steps; the plan then grows to 23 and the warm-up, over by then, stays as it was
    budget, run, model = budget_run(30 + 300 + 4 * 300 + 10 * 100, [300, 100], warmup_epochs=3.0)
    schedule = model.optimizer._learning_rate
    assert budget.planned_epochs == run == 23
    assert float(schedule.warmup_steps.numpy()) == 16 and float(schedule.total_steps.numpy()) == 230


def test_time_budget_never_plans_more_than_asked_nor_fewer_than_run():
    budget, run, _ = budget_run(10_000, [100], asked_epochs=5)
    assert budget.planned_epochs == 5 and run == 5
    budget, run, _ = budget_run(50, [100])
    assert budget.planned_epochs == 1 and run == 1


def test_time_budget_re_plans_shorter_when_epochs_slow_down(capsys):
    averager = WeightAverage(epochs=3, total_epochs=50)
    budget, run, model = budget_run(1000, [100, 100, 300], averager=averager)  # the CPU gets busy in epoch 3
    # after epoch 3: 530 s spent, 470 s left = 1 more epoch of 300 s
    assert budget.planned_epochs == 4 and run == 4
    assert float(model.optimizer._learning_rate.total_steps.numpy()) == 40  # the decay ends with the run
    assert averager.first == 1
    assert "re-planned to 4 of 50 epochs" in capsys.readouterr().out


def test_time_budget_shortens_a_warmup_longer_than_the_planned_run(capsys):
    budget, run, model = budget_run(230, [100], warmup_epochs=3.0)  # 2 epochs fit; 3 of warm-up asked
    schedule = model.optimizer._learning_rate
    assert budget.planned_epochs == 2 and run == 2
    assert float(schedule.warmup_steps.numpy()) == 10  # ends where the first epoch did; the second decays
    assert float(schedule(20)) == pytest.approx(0.0, abs=1e-7)
    assert "all warm-up" not in capsys.readouterr().out
    budget_run(50, [100], warmup_epochs=1.0)  # one epoch, all of it warm-up: said, not hidden
    assert "the planned run is all warm-up" in capsys.readouterr().out


def test_steps_per_epoch_rounds_up():
    assert steps_per_epoch(257, 128) == 3 and steps_per_epoch(256, 128) == 2


def test_epoch_timer_adds_speed_to_the_logs():
    timer = EpochTimer(images_per_epoch=1000)
    logs = {"loss": 1.0}
    timer.on_epoch_begin(0)
    timer.on_epoch_end(0, logs)
    assert logs["epoch_seconds"] > 0 and logs["images_per_second"] == pytest.approx(1000 / logs["epoch_seconds"])


def test_learning_rate_logger_adds_the_rate_each_epoch_ends_at():
    from emotion_recognition.model import build_model

    model = build_model("vgg", widths=[8], dense_units=8)
    optimizer = make_optimizer(TrainParams(epochs=2, learning_rate=0.01, warmup_epochs=0), 4)
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
    from emotion_recognition.model import build_model

    epochs = 6
    model = build_model("vgg", widths=[8], dense_units=8)
    callback = early_stopping(TrainParams(epochs=epochs, early_stopping_patience=patience))
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
    from emotion_recognition.model import build_model
    from emotion_recognition.tracking import configure_mlflow

    configure_mlflow()
    model = build_model("vgg", widths=[8], dense_units=8)
    model.compile(optimizer=make_optimizer(TrainParams(epochs=2, learning_rate=0.01), 4), loss="categorical_crossentropy")
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
    from emotion_recognition.training import recalibrate_batch_norm

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
    from emotion_recognition.training import recalibrate_batch_norm

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
    from emotion_recognition.training import PreciseBatchNorm

    model = batch_norm_model()
    images = np.full((6, 48, 48), 50, np.uint8)
    callback = PreciseBatchNorm(images, batches=2)
    callback.set_model(model)
    callback.on_test_begin()
    callback.on_test_begin()
    assert callback.calls == 2
    np.testing.assert_allclose(model.get_layer("bn").moving_mean.numpy(), [50.0], rtol=1e-5)


def test_recalibrate_without_batch_norm_or_images_is_a_no_op():
    from emotion_recognition.training import recalibrate_batch_norm

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
    from emotion_recognition.params import ParamsError

    assert initial_model_path("none") is None
    if BUNDLED_MODEL.is_file():
        assert initial_model_path("default") == BUNDLED_MODEL
    with pytest.raises(ParamsError, match=r"train.initial_model is '.*missing.keras'.*no model file"):
        initial_model_path(str(tmp_path / "missing.keras"))
    (tmp_path / "weights.h5").write_bytes(b"x")
    with pytest.raises(ParamsError, match="expected a .keras file"):
        initial_model_path(str(tmp_path / "weights.h5"))
    with pytest.raises(ParamsError, match=r"train.teacher_model is '.*missing.keras'.*no model file"):
        model_param_path("teacher_model", str(tmp_path / "missing.keras"))


def test_teacher_list_refuses_one_file_under_two_names(tmp_path, monkeypatch):
    from emotion_recognition.model_files import BUNDLED_MODEL
    from emotion_recognition.params import ParamsError

    monkeypatch.chdir(tmp_path)
    for name in ("a.keras", "b.keras"):
        (tmp_path / name).write_bytes(b"x")  # only the names are resolved here, not loaded
    assert teacher_model_paths("none") == []
    assert [path.name for path in teacher_model_paths(["a.keras", "b.keras"])] == ["a.keras", "b.keras"]
    with pytest.raises(ParamsError, match=r"lists the file .*a.keras twice \('a.keras' and '\./a.keras'\)"):
        teacher_model_paths(["a.keras", "b.keras", "./a.keras"])
    with pytest.raises(ParamsError, match=r"twice \('default' and"):
        teacher_model_paths(["default", str(BUNDLED_MODEL)])


def test_initial_weights_are_copied_only_into_the_same_architecture(tmp_path):
    from emotion_recognition.model import build_model
    from emotion_recognition.params import ParamsError

    keras.utils.set_random_seed(0)
    trained = build_model("vgg", widths=[8, 16], convs_per_block=1, dense_units=16)
    trained.save(tmp_path / "trained.keras")
    fresh = build_model("vgg", widths=[8, 16], convs_per_block=1, dense_units=16)
    assert not np.allclose(fresh.get_weights()[0], trained.get_weights()[0])
    load_initial_weights(fresh, tmp_path / "trained.keras")
    for a, b in zip(fresh.get_weights(), trained.get_weights()):
        np.testing.assert_array_equal(a, b)
    wider = build_model("vgg", widths=[16, 32], convs_per_block=1, dense_units=16)
    with pytest.raises(ParamsError, match=r"do not fit the model built from params.yaml.*set model\.\*"):
        load_initial_weights(wider, tmp_path / "trained.keras")


def test_weight_average_is_the_mean_of_the_last_epochs_only():
    from emotion_recognition.model import build_model

    model = build_model("vgg", widths=[4], convs_per_block=1, dense_units=8)
    averager = WeightAverage(epochs=2, total_epochs=3)
    averager.set_model(model)
    with pytest.raises(RuntimeError, match="no epoch was averaged"):
        averager.weights()
    shapes = [w.shape for w in model.get_weights()]
    for epoch, value in enumerate([100.0, 1.0, 3.0]):  # epoch 0 is before the window
        model.set_weights([np.full(shape, value, np.float32) for shape in shapes])
        averager.on_epoch_end(epoch)
    assert averager.count == 2
    for mean, shape in zip(averager.weights(), shapes):
        np.testing.assert_array_equal(mean, np.full(shape, 2.0, np.float32))


def test_distillation_targets_mix_the_teacher_into_the_one_hot_labels():
    labels = np.array([3, 0, 6])
    teacher = np.full((3, NUM_CLASSES), 1 / NUM_CLASSES)
    teacher[0] = np.eye(NUM_CLASSES)[5]
    one_hot = np.eye(NUM_CLASSES)[labels]
    np.testing.assert_allclose(distillation_targets(teacher, labels, 0.0), one_hot)
    np.testing.assert_allclose(distillation_targets(teacher, labels, 1.0), teacher, rtol=1e-6)
    mixed = distillation_targets(teacher, labels, 0.7)
    assert mixed.dtype == np.float32
    np.testing.assert_allclose(mixed.sum(axis=1), 1.0, rtol=1e-6)
    assert mixed[0, 5] == pytest.approx(0.7) and mixed[0, 3] == pytest.approx(0.3)
    assert mixed[1, 0] == pytest.approx(0.3 + 0.7 / NUM_CLASSES)
    with pytest.raises(ValueError, match=r"teacher probabilities of shape \(2, 7\), expected \(3, 7\)"):
        distillation_targets(teacher[:2], labels, 0.5)


def test_datasets_carry_soft_targets_in_place_of_one_hot_labels(split):
    targets = np.random.default_rng(1).dirichlet(np.ones(NUM_CLASSES), len(split)).astype(np.float32)
    val = make_dataset(split, 8, False, TrainParams(), targets=targets)
    np.testing.assert_allclose(np.concatenate([y for _, y in val]), targets)
    # training: shuffled and augmented, but every face keeps its own target
    params = TrainParams(online_flip=False, online_shift=0.0, seed=3)
    batches = list(make_dataset(split, 8, True, params, targets=targets))
    faces, seen = np.concatenate([x for x, _ in batches]), np.concatenate([y for _, y in batches])
    assert not np.allclose(seen, targets)
    order = [int(np.flatnonzero(np.all(np.isclose(targets, row), axis=1))[0]) for row in seen]
    assert sorted(order) == list(range(len(split)))
    np.testing.assert_array_equal(faces[..., 0], split.images[order])
    with pytest.raises(ValueError, match="3 targets for 30 images"):
        make_dataset(split, 8, False, TrainParams(), targets=targets[:3])


def test_a_teacher_weight_variable_mixes_the_targets_when_the_batches_are_made(split):
    """The share is read when each batch is made, not when the pipeline is built, so a callback
    can change it while training runs."""
    teacher = np.random.default_rng(2).dirichlet(np.ones(NUM_CLASSES), len(split)).astype(np.float32)
    one_hot = np.eye(NUM_CLASSES, dtype=np.float32)[split.labels]
    weight = tf.Variable(1.0, trainable=False)
    ds = make_dataset(split, 8, False, TrainParams(), targets=teacher, teacher_weight=weight)

    def targets():
        return np.concatenate([y.numpy() for _, y in ds])

    np.testing.assert_allclose(targets(), teacher, rtol=1e-6)
    weight.assign(0.0)
    np.testing.assert_allclose(targets(), one_hot)
    weight.assign(0.25)
    np.testing.assert_allclose(targets(), 0.25 * teacher + 0.75 * one_hot, rtol=1e-6)
    with pytest.raises(ValueError, match="needs the teacher's probabilities"):
        make_dataset(split, 8, False, TrainParams(), teacher_weight=weight)


def test_teacher_weight_decay_falls_linearly_to_the_end_of_the_plan():
    weight = tf.Variable(0.0, trainable=False)
    decay = TeacherWeightDecay(weight, 0.8, 0.0, epochs=5)
    assert [round(decay.value(e), 6) for e in range(6)] == [0.8, 0.6, 0.4, 0.2, 0.0, 0.0]
    decay.on_epoch_begin(1)
    logs = {}
    decay.on_epoch_end(1, logs)
    assert weight.numpy() == pytest.approx(0.6) and logs["teacher_weight"] == pytest.approx(0.6)

    class Plan:  # a time budget's plan, which may change after any epoch
        planned_epochs = None

    plan = Plan()
    decay = TeacherWeightDecay(weight, 0.5, 0.1, epochs=91, budget=plan)
    assert decay.value(0) == pytest.approx(0.5) and decay.value(45) == pytest.approx(0.3)  # no plan yet: epochs
    plan.planned_epochs = 3
    assert [round(decay.value(e), 6) for e in range(3)] == [0.5, 0.3, 0.1]
    plan.planned_epochs = 1
    assert decay.value(0) == pytest.approx(0.1)


def test_teacher_probabilities_average_the_views_and_report_progress(split):
    from emotion_recognition.evaluation import predict_probabilities
    from emotion_recognition.model import build_model
    from emotion_recognition.tta import PRESETS

    keras.utils.set_random_seed(0)
    teacher = build_model("vgg", widths=[8, 16], convs_per_block=1, dense_units=16)
    lines = []
    probabilities = teacher_probabilities(teacher, split.images, PRESETS["crops"], chunk=16, report=lines.append)
    np.testing.assert_allclose(probabilities, predict_probabilities(teacher, split.images, PRESETS["crops"]),
                               rtol=1e-5, atol=1e-6)
    assert not np.allclose(probabilities, predict_probabilities(teacher, split.images), atol=1e-4)
    assert len(lines) == 2 and lines[-1].startswith(f"train: teacher {len(split)}/{len(split)} faces x 16 views")


def test_average_weights_is_the_elementwise_mean_batch_norm_statistics_included():
    from emotion_recognition.model import build_model

    models = [build_model("vgg", widths=[4], convs_per_block=1, dense_units=8) for _ in range(3)]
    shapes = [w.shape for w in models[0].get_weights()]
    for model, value in zip(models, [1.0, 2.0, 6.0]):
        model.set_weights([np.full(shape, value, np.float32) for shape in shapes])
    averaged = average_weights([model.get_weights() for model in models])
    assert len(averaged) == len(shapes)  # moving means/variances are weights too
    for weights, shape in zip(averaged, shapes):
        assert weights.dtype == np.float32
        np.testing.assert_allclose(weights, np.full(shape, 3.0))


def test_average_weights_refuses_models_of_different_architectures():
    from emotion_recognition.model import build_model

    small = build_model("vgg", widths=[4], convs_per_block=1, dense_units=8)
    wider = build_model("vgg", widths=[8], convs_per_block=1, dense_units=8)
    with pytest.raises(ValueError, match="do not share one architecture"):
        average_weights([small.get_weights(), wider.get_weights()])


def constant_teacher(probabilities: np.ndarray, name: str) -> keras.Model:
    """A model that returns ``probabilities`` for every face, whatever its pixels."""
    faces = keras.Input((48, 48, 1))
    logits = keras.layers.Dense(NUM_CLASSES, kernel_initializer="zeros",
                                bias_initializer=keras.initializers.Constant(np.log(probabilities)))(
        keras.layers.Flatten()(faces))
    return keras.Model(faces, keras.layers.Activation("softmax")(logits), name=name)


def test_with_policy_rebuilds_every_layer_but_the_output_in_the_given_precision():
    from emotion_recognition.model import build_model

    model = build_model("vgg", widths=[8, 16], convs_per_block=1, dense_units=16)
    copy = with_policy(model, "mixed_bfloat16", name="teacher_1")
    assert copy.name == "teacher_1"
    assert [layer.dtype_policy.name for layer in copy.layers[1:-1]] == ["mixed_bfloat16"] * (len(model.layers) - 2)
    assert copy.layers[-1].dtype_policy.name == "float32"  # softmax probabilities stay float32
    for mine, theirs in zip(model.get_weights(), copy.get_weights()):
        np.testing.assert_array_equal(mine, theirs)
    faces = np.random.default_rng(0).uniform(0, 255, (4, 48, 48, 1)).astype(np.float32)
    bf16 = copy(faces, training=False)
    assert bf16.dtype == tf.float32
    np.testing.assert_allclose(bf16, model(faces, training=False), atol=0.03)  # bf16 keeps ~3 digits


def test_ensemble_model_averages_its_teachers():
    happy, sad = np.full(NUM_CLASSES, 0.05), np.full(NUM_CLASSES, 0.05)
    happy[3], sad[5] = 0.7, 0.7
    ensemble = ensemble_model([constant_teacher(happy, "happy"), constant_teacher(sad, "sad")])
    faces = np.zeros((2, 48, 48, 1), np.float32)
    np.testing.assert_allclose(ensemble(faces), np.tile((happy + sad) / 2, (2, 1)), rtol=1e-5)
    single = constant_teacher(happy, "one")
    assert ensemble_model([single]) is single


def test_online_teacher_mixes_its_answer_for_each_batch_into_the_targets():
    """distill_online: the loss ``fit`` reports is the cross-entropy against weight x teacher +
    (1 - weight) x label for the batch it trained on, the student learns, and the teacher is
    neither trained nor saved with the student."""
    rng = np.random.default_rng(1)
    faces = rng.uniform(0, 255, (16, 48, 48, 1)).astype(np.float32)
    labels = np.eye(NUM_CLASSES, dtype=np.float32)[rng.integers(0, NUM_CLASSES, 16)]
    inputs = keras.Input((48, 48, 1))
    student = keras.Model(inputs, keras.layers.Dense(NUM_CLASSES, activation="softmax")(
        keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))))
    start = student.get_weights()
    taught = np.array([0.02, 0.02, 0.02, 0.86, 0.02, 0.02, 0.04])
    teacher = constant_teacher(taught, "teacher")
    teacher_start = teacher.get_weights()
    weight = tf.Variable(0.75, trainable=False)
    distill_online(student, teacher, weight)
    student.compile(optimizer=keras.optimizers.SGD(0.1), loss=keras.losses.CategoricalCrossentropy())

    predicted = student.predict(faces, verbose=0)  # before the one step: what the step's loss saw
    history = student.fit(faces, labels, batch_size=16, epochs=1, shuffle=False, verbose=0)
    cross_entropy = lambda targets: float(np.mean(-np.sum(targets * np.log(predicted), axis=1)))
    assert history.history["loss"][0] == pytest.approx(cross_entropy(0.75 * taught + 0.25 * labels), rel=1e-4)
    assert history.history["loss"][0] != pytest.approx(cross_entropy(labels), rel=1e-2)
    assert any(not np.allclose(a, b) for a, b in zip(start, student.get_weights()))  # the student learnt
    for before, after in zip(teacher_start, teacher.get_weights()):
        np.testing.assert_array_equal(before, after)
    assert len(student.weights) == len(start)  # the teacher is not part of the student
