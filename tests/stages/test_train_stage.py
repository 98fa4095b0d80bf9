"""Stage `train` on tiny data: the model file, the DVC metrics/plots and the MLflow run
(params, per-epoch metrics, the model with its signature and input example)."""

import csv
import json
import re

import keras
import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from emotion_recognition.data import load_split, sha256_file
from emotion_recognition.model import load_model

EPOCHS = 2


@pytest.fixture(scope="module")
def trained(tmp_path_factory, fer, isolate, make_project, set_params, load_stage, mlflow_template):
    """fetch -> split -> augment -> train in one project, run once for this module's tests."""
    import shutil

    project = make_project(tmp_path_factory.mktemp("train-stage"))
    set_params(project, train={"epochs": EPOCHS, "batch_size": 16})
    fer.write_zip(project / "inputs" / "fer2013.zip")
    with isolate(project):
        shutil.copy(mlflow_template, project / "mlflow.db")
        for stage in ("fetch", "split", "augment", "train"):
            load_stage(stage).main()
        run = json.loads((project / "data/model/run.json").read_text())
        client = MlflowClient()
        yield project, run, client.get_run(run["run_id"]), client


def test_model_file_takes_raw_faces_and_returns_probabilities(trained):
    project, _, _, _ = trained
    model = load_model(project / "data/model/model.keras")
    assert all(layer.dtype_policy.name == "float32" for layer in model.layers)
    val = load_split(project / "data/split/val.npz")
    probabilities = model.predict(val.images[..., np.newaxis].astype(np.float32), verbose=0)
    assert probabilities.shape == (len(val), 7)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert (project / "data/train/checkpoint.keras").is_file()


def test_metrics_and_plots_for_dvc(trained):
    project, _, _, _ = trained
    metrics = json.loads((project / "metrics/train.json").read_text())
    assert set(metrics) == {"best_epoch", "epochs_run", "val_accuracy", "val_loss", "train_seconds",
                            "images_per_second", "parameters", "planned_epochs"}
    # the committed default time budget (train.time_budget_minutes) leaves a tiny run all its epochs
    assert metrics["epochs_run"] == metrics["planned_epochs"] == EPOCHS and 1 <= metrics["best_epoch"] <= EPOCHS
    with open(project / "plots/train_history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == list(range(1, EPOCHS + 1))
    assert {"accuracy", "loss", "val_accuracy", "val_loss", "images_per_second", "learning_rate"} <= set(rows[0])
    # the cosine decay falls over the run (the planned run ends at 0: the last epoch ends there)
    rates = [float(r["learning_rate"]) for r in rows]
    assert rates[0] > rates[-1] == 0.0
    assert float(rows[metrics["best_epoch"] - 1]["val_accuracy"]) == metrics["val_accuracy"]
    assert (project / "plots/train_curves.png").read_bytes()[:4] == b"\x89PNG"


def test_run_logs_params_and_tags(trained):
    _, _, run, _ = trained
    params = run.data.params
    assert params["train.epochs"] == str(EPOCHS)
    assert params["model.widths"] == "[8, 16]"
    assert params["train.precision"] == "float32"
    assert params["train.precision_used"] == "float32"
    assert params["data.source"] == "inputs/fer2013.zip"
    assert int(params["train.images"]) > 0 and int(params["val.images"]) == 7
    assert run.data.tags["stage"] == "train" and "git_commit" in run.data.tags
    assert run.data.tags["cpu"]  # throughput differs 8x between CPUs: runs say where they ran
    assert run.info.status == "FINISHED"
    # named after the model, not MLflow's random name (which repeats because the seed is fixed)
    assert re.fullmatch(rf"vgg8-e{EPOCHS}-\d{{8}}-\d{{4}}", run.info.run_name)


def test_run_logs_every_epoch(trained):
    _, run_json, run, client = trained
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"):
        history = client.get_metric_history(run_json["run_id"], key)
        assert [m.step for m in history] == list(range(1, EPOCHS + 1)), key
    assert "best_val_accuracy" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run_json["run_id"], "plots")}
    assert artifacts == {"plots/train_history.csv", "plots/train_curves.png"}


def test_run_logs_the_model_with_signature_and_input_example(trained):
    project, run_json, _, _ = trained
    info = mlflow.models.get_model_info(run_json["model_uri"])
    assert info.run_id == run_json["run_id"]
    inputs = info.signature.inputs.to_dict()[0]
    outputs = info.signature.outputs.to_dict()[0]
    assert inputs["tensor-spec"]["dtype"] == "float32"
    assert list(inputs["tensor-spec"]["shape"]) == [-1, 48, 48, 1]
    assert list(outputs["tensor-spec"]["shape"]) == [-1, 7]
    assert info.saved_input_example_info is not None
    logged = mlflow.tensorflow.load_model(run_json["model_uri"])
    faces = load_split(project / "data/split/val.npz").images[:3, ..., np.newaxis].astype(np.float32)
    saved = load_model(project / "data/model/model.keras")
    np.testing.assert_allclose(logged.predict(faces, verbose=0), saved.predict(faces, verbose=0), rtol=1e-5)


def retrain(project, client, isolate, set_params, load_stage, **train):
    """Run the train stage again in ``project`` with these train params (restored afterwards);
    returns the new MLflow run. Tests that need every epoch pass early_stopping_patience=0: the
    project's test params stop after one epoch without progress, and whether one comes depends
    on floating-point noise."""
    params_file = project / "params.yaml"
    original = params_file.read_text()
    set_params(project, train=train)
    try:
        with isolate(project):
            load_stage("train").main()
            run_json = json.loads((project / "data/model/run.json").read_text())
            return client.get_run(run_json["run_id"])
    finally:
        params_file.write_text(original)


def test_training_can_start_from_a_trained_model(trained, isolate, set_params, load_stage):
    """train.initial_model: the run starts from that file's weights (here with a learning rate
    too small to move them) and records which file it was."""
    project, first_run, _, client = trained
    first = project / "data/first_model.keras"
    (project / "data/model/model.keras").rename(first)
    start = load_model(first)
    run = retrain(project, client, isolate, set_params, load_stage, epochs=1, batch_size=16,
                  initial_model="data/first_model.keras", learning_rate=1e-9, warmup_epochs=0.0)
    params = run.data.params
    assert run.info.run_id != first_run["run_id"]
    assert params["train.initial_model"] == "data/first_model.keras"
    assert re.fullmatch(r"[0-9a-f]{64}", params["train.initial_model_sha256"])
    continued = load_model(project / "data/model/model.keras")
    for before, after in zip(start.weights, continued.weights):
        if "kernel" in before.path:  # batch-norm statistics are recalibrated; kernels barely move
            np.testing.assert_allclose(after.numpy(), before.numpy(), atol=1e-5)


def refused_run(project, isolate, set_params, load_stage, capsys, **train) -> str:
    """Run the train stage as DVC does with these train params (restored afterwards); it must stop
    with exit code 2 and a message, not a traceback. Returns what it printed to stderr."""
    from emotion_recognition.stage_io import run_stage

    original = (project / "params.yaml").read_text()
    set_params(project, train=train)
    try:
        with isolate(project), pytest.raises(SystemExit) as stopped:
            run_stage(load_stage("train").main)
    finally:
        (project / "params.yaml").write_text(original)
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert "Traceback" not in error
    return error


def test_initial_model_that_does_not_fit_the_architecture_is_refused(trained, isolate, set_params, load_stage,
                                                                      capsys):
    project, _, _, _ = trained
    # the bundled model is far wider than [8, 16]
    error = refused_run(project, isolate, set_params, load_stage, capsys, initial_model="default")
    assert "train.initial_model" in error and "model.*" in error


def test_weight_average_replaces_the_best_epoch_only_when_validation_says_it_is_better(trained, isolate,
                                                                                        load_stage):
    """keep_better_average on real tiny data: a trained average beats all-zero weights (which
    predict one class for every face), and all-zero weights as the average lose to a trained best epoch."""
    from emotion_recognition.model import build_model
    from emotion_recognition.params import TrainParams
    from emotion_recognition.training import WeightAverage, make_dataset

    project, _, _, _ = trained
    train = load_split(project / "data/augmented/train.npz")
    val = load_split(project / "data/split/val.npz")
    val_ds = make_dataset(val, 64, False, TrainParams())
    stage = load_stage("train")

    def compiled(weights=None):
        model = build_model("vgg", widths=[8, 16], convs_per_block=1, dense_units=16)
        model.compile(loss="categorical_crossentropy", metrics=["accuracy"])
        if weights is not None:
            model.set_weights(weights)
        return model

    trained_weights = load_model(project / "data/model/model.keras").get_weights()
    zeros = [np.zeros_like(w) for w in trained_weights]
    with isolate(project), mlflow.start_run():
        for best, average, expect_average in ((zeros, trained_weights, 1), (trained_weights, zeros, 0)):
            averager = WeightAverage(epochs=1, total_epochs=1)
            averager.mean, averager.count = [np.asarray(w, np.float64) for w in average], 1
            model = compiled(best)
            before = model.evaluate(val_ds, verbose=0, return_dict=True)["accuracy"]
            result = stage.keep_better_average(model, averager, train, val_ds, seed=0)
            after = model.evaluate(val_ds, verbose=0, return_dict=True)["accuracy"]
            assert result["averaged_epochs"] == 1 and result["model_is_average"] == expect_average
            if expect_average:
                assert after == pytest.approx(result["averaged_val_accuracy"], abs=1e-6) and after > before
            else:
                assert after == pytest.approx(before)


def test_averaging_the_last_epochs_is_reported_in_the_metrics(trained, isolate, set_params, load_stage):
    project, _, _, client = trained
    logged = retrain(project, client, isolate, set_params, load_stage, epochs=2, batch_size=16,
                     average_last_epochs=2).data.metrics
    metrics = json.loads((project / "metrics/train.json").read_text())
    assert metrics["averaged_epochs"] == 2 and metrics["model_is_average"] in (0, 1)
    assert 0.0 <= metrics["averaged_val_accuracy"] <= 1.0
    assert logged["averaged_val_accuracy"] == pytest.approx(metrics["averaged_val_accuracy"], abs=1e-6)
    assert "best_averaged_epochs" not in logged


def test_a_time_budget_shorter_than_one_epoch_ends_the_run_after_it(trained, isolate, set_params, load_stage,
                                                                     capsys):
    project, _, _, client = trained
    logged = retrain(project, client, isolate, set_params, load_stage, epochs=3, batch_size=16,
                     time_budget_minutes=0.001, average_last_epochs=2)
    metrics = json.loads((project / "metrics/train.json").read_text())
    assert metrics["planned_epochs"] == 1 and metrics["epochs_run"] == 1
    assert metrics["averaged_epochs"] == 1  # the averaging window was fitted to the one epoch
    assert logged.data.metrics["planned_epochs"] == 1
    assert logged.data.params["train.time_budget_minutes"] == "0.001"
    assert "time budget 0.001 min: planning 1 of 3 epochs" in capsys.readouterr().out


def save_constant_teacher(path, label: int, bias: float) -> None:
    """A small teacher model that favours ``label`` for every face, whatever the pixels (only its
    output bias is non-zero), saved to ``path``."""
    from emotion_recognition.model import build_model

    teacher = build_model("vgg", widths=[8, 16], convs_per_block=1, dense_units=16)
    weights = [np.zeros_like(w) for w in teacher.get_weights()]
    weights[-1][label] = bias
    teacher.set_weights(weights)
    teacher.save(path)


def save_happy_and_sad_teachers(project) -> list[str]:
    """A 'happy' teacher and a less sure 'sad' one (so 'happy' wins their average), saved in
    ``project``; returns their paths as train.teacher_model lists them."""
    from emotion_recognition.labels import EMOTIONS

    paths = []
    for name, bias in (("happy", 5.0), ("sad", 4.0)):
        paths.append(f"data/{name}_teacher.keras")
        save_constant_teacher(project / paths[-1], EMOTIONS.index(name), bias)
    return paths


def test_distillation_trains_towards_the_teachers_probabilities(trained, isolate, set_params, load_stage, capsys):
    """train.teacher_model: the teacher's averaged view probabilities become the targets. A
    teacher that calls every face 'happy' pulls the student's predictions towards 'happy'
    compared with the same run (same seed, same start) with teacher_weight 0."""
    from emotion_recognition.evaluation import classification_metrics, predict_probabilities
    from emotion_recognition.labels import EMOTIONS
    from emotion_recognition.tta import PRESETS

    project, _, _, client = trained
    happy = EMOTIONS.index("happy")
    save_constant_teacher(project / "data/teacher.keras", happy, 5.0)
    start = project / "data/student_start.keras"
    load_model(project / "data/train/checkpoint.keras").save(start)
    val = load_split(project / "data/split/val.npz")

    def happy_share(weight):
        run = retrain(project, client, isolate, set_params, load_stage, epochs=3, early_stopping_patience=0, batch_size=16, seed=5,
                      initial_model="data/student_start.keras", learning_rate=0.05, warmup_epochs=0.0,
                      label_smoothing=0.0, teacher_model="data/teacher.keras", teacher_tta="flip",
                      teacher_weight=weight)
        student = load_model(project / "data/model/model.keras")
        return run, float(predict_probabilities(student, val.images)[:, happy].mean())

    run, distilled = happy_share(1.0)
    cached = sorted((project / "data/cache/teacher").glob("*.npz"))
    assert len(cached) == 1  # the teacher's probabilities, kept for the next run
    with np.load(cached[0]) as stored:
        np.testing.assert_allclose(stored["val"], predict_probabilities(load_model(project / "data/teacher.keras"),
                                                                        val.images, PRESETS["flip"]), rtol=1e-5)
    _, undistilled = happy_share(0.0)  # same teacher, views and images: read back, not recomputed
    assert "teacher.keras read from data/cache/teacher/" in capsys.readouterr().out
    assert sorted((project / "data/cache/teacher").glob("*.npz")) == cached
    assert distilled > 0.4 and distilled > undistilled + 0.2, (distilled, undistilled)  # seen: 0.65 vs 0.15
    metrics = json.loads((project / "metrics/train.json").read_text())
    for split, name in (("augmented/train", "teacher_train_accuracy"), ("split/val", "teacher_val_accuracy")):
        labels = load_split(project / f"data/{split}.npz").labels
        expected = classification_metrics(labels, np.full(len(labels), happy))["accuracy"]
        assert metrics[name] == pytest.approx(expected, abs=1e-6)
        assert run.data.metrics[name] == pytest.approx(expected, abs=1e-6)
    assert run.data.params["train.teacher_tta"] == "flip"
    assert run.data.params["train.teacher_model_sha256"] == sha256_file(project / "data/teacher.keras")


def test_the_teachers_share_can_fall_to_zero_over_the_run(trained, isolate, set_params, load_stage, capsys):
    """train.teacher_weight_end: the share falls linearly from teacher_weight at the first epoch to
    teacher_weight_end at the last; the log says so, and each epoch's share is in the history CSV
    and in MLflow."""
    project, _, _, client = trained
    (project / "data/decay").mkdir(exist_ok=True)
    build_model_file = project / "data/decay/teacher.keras"
    from emotion_recognition.model import build_model

    build_model("vgg", widths=[8, 16], convs_per_block=1, dense_units=16).save(build_model_file)
    run = retrain(project, client, isolate, set_params, load_stage, epochs=3, early_stopping_patience=0, batch_size=16,
                  teacher_model="data/decay/teacher.keras", teacher_tta="none", teacher_weight=0.8,
                  teacher_weight_end=0.0)
    assert "teacher_weight 0.8 falling to 0.0 at the last planned epoch" in capsys.readouterr().out
    with open(project / "plots/train_history.csv") as f:
        shares = [float(row["teacher_weight"]) for row in csv.DictReader(f)]
    assert shares == pytest.approx([0.8, 0.4, 0.0])
    logged = client.get_metric_history(run.info.run_id, "teacher_weight")
    assert [m.value for m in sorted(logged, key=lambda m: m.step)] == pytest.approx([0.8, 0.4, 0.0])
    assert run.data.params["train.teacher_weight_end"] == "0.0"


def distil_from_happy_and_sad(trained, isolate, set_params, load_stage, capsys, **train):
    """Retrain from the first run's checkpoint for 3 full epochs at teacher weight 1 from a 'happy'
    and a 'sad' teacher (``save_happy_and_sad_teachers``) with these extra train params; returns
    the MLflow run, the printed log and the teacher-cache files the run added."""
    project, _, _, client = trained
    teachers = save_happy_and_sad_teachers(project)
    load_model(project / "data/train/checkpoint.keras").save(project / "data/student_start.keras")
    cached = set((project / "data/cache/teacher").glob("*.npz"))
    run = retrain(project, client, isolate, set_params, load_stage, epochs=3, early_stopping_patience=0, batch_size=16,
                  seed=5, initial_model="data/student_start.keras", learning_rate=0.05, warmup_epochs=0.0,
                  label_smoothing=0.0, teacher_model=teachers, teacher_tta="none", teacher_weight=1.0, **train)
    return run, capsys.readouterr().out, set((project / "data/cache/teacher").glob("*.npz")) - cached


def test_a_list_of_teachers_is_one_ensemble_teacher(trained, isolate, set_params, load_stage, capsys):
    """train.teacher_model as a list: the teachers' probabilities are averaged. A 'happy' teacher
    and a 'sad' one pull the student towards both classes, each teacher's pass is cached on its
    own, and the run records both files."""
    from emotion_recognition.evaluation import classification_metrics, predict_probabilities
    from emotion_recognition.labels import EMOTIONS

    project = trained[0]
    happy, sad = EMOTIONS.index("happy"), EMOTIONS.index("sad")
    run, out, added = distil_from_happy_and_sad(trained, isolate, set_params, load_stage, capsys)
    assert "happy_teacher.keras: " in out and "sad_teacher.keras: " in out
    assert "ensemble teacher accuracy" in out
    assert len(added) == 2  # one pass per teacher

    val = load_split(project / "data/split/val.npz")
    shares = predict_probabilities(load_model(project / "data/model/model.keras"), val.images).mean(axis=0)
    assert shares[happy] > 0.25 and shares[sad] > 0.25, shares  # both teachers were heard
    metrics = json.loads((project / "metrics/train.json").read_text())
    expected = classification_metrics(val.labels, np.full(len(val), happy))["accuracy"]
    assert metrics["teacher_val_accuracy"] == pytest.approx(expected, abs=1e-6)
    assert run.data.params["train.teacher_model_sha256"] == ",".join(
        sha256_file(project / f"data/{name}_teacher.keras") for name in ("happy", "sad"))


def test_an_online_teacher_scores_the_augmented_views_during_training(trained, isolate, set_params, load_stage,
                                                                      capsys):
    """train.teacher_views: augmented: the ensemble scores each training batch as the student sees
    it, so no pass over the training images runs before training (only validation is scored, for
    the log); a 'happy' and a 'sad' teacher still pull the student towards both, and the saved
    student is the student alone."""
    from emotion_recognition.evaluation import classification_metrics, predict_probabilities
    from emotion_recognition.labels import EMOTIONS

    project = trained[0]
    happy, sad = EMOTIONS.index("happy"), EMOTIONS.index("sad")
    run, out, added = distil_from_happy_and_sad(trained, isolate, set_params, load_stage, capsys,
                                                teacher_views="augmented")
    assert "with every augmented view, during training, teacher_weight 1.0" in out
    assert not added  # no pass over the training images
    val = load_split(project / "data/split/val.npz")
    student = load_model(project / "data/model/model.keras")
    assert student.count_params() == load_model(project / "data/student_start.keras").count_params()
    shares = predict_probabilities(student, val.images).mean(axis=0)
    assert shares[happy] > 0.25 and shares[sad] > 0.25, shares  # both teachers were heard
    metrics = json.loads((project / "metrics/train.json").read_text())
    assert "teacher_train_accuracy" not in metrics
    expected = classification_metrics(val.labels, np.full(len(val), happy))["accuracy"]
    assert metrics["teacher_val_accuracy"] == pytest.approx(expected, abs=1e-6)
    assert run.data.params["train.teacher_views"] == "augmented"


def test_a_teacher_of_the_wrong_shape_is_refused_naming_the_param(trained, isolate, set_params, load_stage, capsys):
    project, _, _, _ = trained
    inputs = keras.Input((48, 48, 1))
    keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(inputs))).save(
        project / "data/three_classes.keras")
    error = refused_run(project, isolate, set_params, load_stage, capsys, teacher_model="data/three_classes.keras")
    assert "train.teacher_model" in error and "returns 3 values per face" in error
    # In a list, the misfit is refused before any teacher's pass has run
    from emotion_recognition.model import build_model

    build_model("vgg", widths=[8, 16], convs_per_block=1, dense_units=16).save(project / "data/good_teacher.keras")
    cache = project / "data/cache/teacher"
    before = set(cache.glob("*.npz"))
    error = refused_run(project, isolate, set_params, load_stage, capsys,
                        teacher_model=["data/good_teacher.keras", "data/three_classes.keras"])
    assert "three_classes.keras" in error and "returns 3 values per face" in error
    assert set(cache.glob("*.npz")) == before


def test_a_soup_averages_runs_from_one_start_with_different_seeds(trained, isolate, set_params, load_stage):
    """train.soup_runs: two runs from one model, each logged as a nested MLflow run with its own
    seed and checkpoint; the saved model is their weight average or the better run, whichever
    the validation accuracy in the metrics says."""
    from emotion_recognition.training import average_weights

    project, _, _, client = trained
    start = project / "data/soup_start.keras"
    start.write_bytes((project / "data/model/model.keras").read_bytes())
    run = retrain(project, client, isolate, set_params, load_stage, epochs=1, batch_size=16, seed=5,
                  initial_model="data/soup_start.keras", soup_runs=2, warmup_epochs=0.0)
    metrics = json.loads((project / "metrics/train.json").read_text())
    assert metrics["soup_runs"] == 2 and metrics["epochs_run"] == 2
    assert run.data.metrics["model_is_soup"] == metrics["model_is_soup"]
    with open(project / "plots/train_history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(int(r["epoch"]), int(r["run"])) for r in rows] == [(1, 1), (2, 2)]

    children = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'")
    assert sorted(child.data.params["train.seed"] for child in children) == ["5", "6"]
    assert all("val_accuracy" in child.data.metrics for child in children)

    members = [load_model(project / f"data/train/checkpoint-run{n}.keras").get_weights() for n in (1, 2)]
    saved = load_model(project / "data/model/model.keras").get_weights()
    assert not all(np.allclose(a, b) for a, b in zip(*members))  # different seeds, different runs
    kept = {int(child.data.params["soup_run"]): child.data.metrics["kept_val_accuracy"] for child in children}
    assert metrics["best_run_val_accuracy"] == pytest.approx(max(kept.values()), abs=1e-6)
    if metrics["model_is_soup"]:
        expected = average_weights(members)
        assert metrics["soup_val_accuracy"] > metrics["best_run_val_accuracy"]
    else:
        expected = members[min(n for n in kept if kept[n] == max(kept.values())) - 1]  # ties: the first run
        assert metrics["soup_val_accuracy"] <= metrics["best_run_val_accuracy"]
    for a, b in zip(saved, expected):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_keep_better_soup_keeps_the_average_only_when_it_beats_every_run(trained, isolate, load_stage):
    from emotion_recognition.params import TrainParams
    from emotion_recognition.training import make_dataset

    project, _, _, _ = trained
    model = load_model(project / "data/model/model.keras")
    model.compile(loss="categorical_crossentropy", metrics=["accuracy"])
    val_ds = make_dataset(load_split(project / "data/split/val.npz"), 64, False, TrainParams())
    weights = model.get_weights()
    zeros = [np.zeros_like(w) for w in weights]
    stage = load_stage("train")
    with isolate(project), mlflow.start_run():
        # two copies of one model: the soup is that model, which beats any accuracy claimed below 0
        kept = stage.keep_better_soup(model, [weights, weights], [-1.0, -1.0], val_ds)
        assert kept["model_is_soup"] == 1 and kept["soup_runs"] == 2
        for a, b in zip(model.get_weights(), weights):
            np.testing.assert_allclose(a, b, rtol=1e-6)
        # the soup of a model and zeros cannot beat a run claimed perfect: that run's weights are kept
        kept = stage.keep_better_soup(model, [zeros, weights], [0.2, 1.0], val_ds)
        assert kept["model_is_soup"] == 0 and kept["best_run_val_accuracy"] == 1.0
        for a, b in zip(model.get_weights(), weights):
            np.testing.assert_array_equal(a, b)


def test_fit_soup_starts_every_run_from_the_initial_weights_with_its_seed_and_share_of_the_budget(
        trained, isolate, load_stage, monkeypatch, tmp_path):
    """fit_soup's bookkeeping, with fit_run replaced by a stand-in that records what each run got
    and moves the weights by a run-specific amount, and a fake clock for the time budget."""
    from emotion_recognition.params import TrainParams, load_params
    from emotion_recognition.training import average_weights, make_dataset

    project, _, _, _ = trained
    stage = load_stage("train")
    start_path = tmp_path / "start.keras"
    start_path.write_bytes((project / "data/model/model.keras").read_bytes())
    start = load_model(start_path).get_weights()
    seen = []

    def fake_fit_run(model, p, train, val_ds, targets, checkpoint, history, budget_seconds, budget_started):
        seen.append({"entry": model.get_weights(), "seed": p.seed, "checkpoint": checkpoint.name,
                     "budget": budget_seconds, "started": budget_started})
        model.set_weights([w * (1.0 + 0.02 * (len(seen) - 2)) for w in start])  # x0.98, x1.00, x1.02
        model.compile(loss="categorical_crossentropy", metrics=["accuracy"])
        return {"seconds": 1.0, "planned_epochs": None, "averaged": None}

    monkeypatch.setattr(stage, "fit_run", fake_fit_run)
    seeds = []
    real_seed = stage.keras.utils.set_random_seed
    monkeypatch.setattr(stage.keras.utils, "set_random_seed", lambda seed: (seeds.append(seed), real_seed(seed)))
    ticks = iter([100.0, 110.0, 400.0, 410.0, 700.0, 710.0])
    monkeypatch.setattr(stage.time, "perf_counter", lambda: next(ticks))
    m = load_params(project / "params.yaml").model
    p = TrainParams(seed=10, soup_runs=3, epochs=1, initial_model=str(start_path))
    first = stage.build_model(m.architecture, **stage.model_options(m))
    first.set_weights(start)
    val_ds = make_dataset(load_split(project / "data/split/val.npz"), 64, False, TrainParams())
    with isolate(project), mlflow.start_run():
        model, fitted, soup = stage.fit_soup(first, p, m, start_path, None, val_ds, None,
                                             stage.HistoryWriter(tmp_path / "history.csv"), 1000.0, 0.0, "test")
    monkeypatch.undo()

    assert [run["seed"] for run in seen] == [10, 11, 12] and seeds == [11, 12]
    assert [run["checkpoint"] for run in seen] == [f"checkpoint-run{n}.keras" for n in (1, 2, 3)]
    for run in seen:
        for a, b in zip(run["entry"], start):
            np.testing.assert_array_equal(a, b)
    # (budget - time since the stage started) / runs still to come; each run counts from its own start
    assert [run["budget"] for run in seen] == [pytest.approx(300.0)] * 3
    assert [run["started"] for run in seen] == [110.0, 410.0, 710.0]
    assert len(fitted) == 3 and soup["soup_runs"] == 3
    runs = [[w * (1.0 + 0.02 * k) for w in start] for k in (-1, 0, 1)]
    expected = average_weights(runs) if soup["model_is_soup"] else next(
        r for r in runs if all(np.allclose(a, b) for a, b in zip(r, model.get_weights())))
    for a, b in zip(model.get_weights(), expected):
        np.testing.assert_allclose(a, b, rtol=1e-5)
