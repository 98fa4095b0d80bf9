"""Stage `evaluate` with models whose predictions the test controls: the metrics JSON, the
confusion CSV/PNG, logging to the train run, and registration under the champion rule."""

import csv
import json

import cv2
import keras
import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from testkit import stage_args
from emotion_recognition.pipeline.data import Split, load_split, save_split
from emotion_recognition.model_files import sha256_file, CHAMPION_ALIAS, REGISTERED_MODEL_NAME
from emotion_recognition.pipeline.evaluation import predict_probabilities
from emotion_recognition.labels import EMOTIONS
from emotion_recognition.pipeline.tracking import configure_mlflow
from emotion_recognition.tta import TestTimeAugmentation

HAPPY, SAD = EMOTIONS.index("happy"), EMOTIONS.index("sad")
# PublicTest stand-in: 9 happy faces and one of every other class (15 images)
LABELS = np.array([HAPPY] * 9 + [c for c in range(7) if c != HAPPY])


@pytest.fixture
def evaluate(project, mlflow_store, make_constant_model, log_keras_model, load_stage, capsys):
    """Run the stage on a model that always predicts ``label`` (as if `train` had produced it)."""
    images = np.random.default_rng(0).integers(0, 256, (len(LABELS), 48, 48)).astype(np.uint8)
    for split in ("val", "test"):  # val: the INT8 copy's calibration faces
        save_split(Split(images, LABELS, np.array([f"{split}/{i}.jpg" for i in range(len(LABELS))])),
                   project / f"data/split/{split}.npz")
    configure_mlflow()

    def evaluate(label: int | keras.Model) -> tuple[dict, str]:
        model = label if isinstance(label, keras.Model) else make_constant_model(label)
        (project / "data/model").mkdir(parents=True, exist_ok=True)
        model.save(project / "data/model/model.keras")
        run_id, model_uri = log_keras_model(model)
        (project / "data/model/run.json").write_text(json.dumps({"run_id": run_id, "model_uri": model_uri}))
        load_stage("evaluate").main(*stage_args("evaluate"))
        captured = capsys.readouterr()
        return {"run_id": run_id, "model_uri": model_uri}, captured.out + captured.err

    return evaluate


def test_metrics_json_confusion_csv_and_png(project, evaluate):
    evaluate(HAPPY)
    metrics = json.loads((project / "metrics/evaluate.json").read_text())
    assert metrics["test_set"] == "FER2013 PublicTest" and metrics["images"] == 15 and metrics["flip_tta"] is True
    assert metrics["accuracy"] == pytest.approx(9 / 15)
    assert metrics["per_class"]["happy"] == {"precision": 0.6, "recall": 1.0, "f1": 0.75, "support": 9}
    assert metrics["per_class"]["sad"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert metrics["macro_f1"] == pytest.approx(0.75 / 7)

    with open(project / "plots/confusion.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 15 and {r["predicted"] for r in rows} == {"happy"}
    assert [r["actual"] for r in rows] == [EMOTIONS[i] for i in LABELS]

    with open(project / "plots/per_class.csv") as f:
        per_class = list(csv.DictReader(f))
    assert [r["emotion"] for r in per_class] == list(EMOTIONS)
    assert per_class[HAPPY] == {"emotion": "happy", "precision": "0.6", "recall": "1.0", "f1": "0.75", "support": "9"}

    image = cv2.imread(str(project / "plots/confusion_matrix.png"))
    assert image is not None and image.shape[:2] == (550, 650)


def test_results_are_logged_to_the_train_run_and_the_first_model_is_champion(project, evaluate):
    run, output = evaluate(HAPPY)
    client = MlflowClient()
    metrics = client.get_run(run["run_id"]).data.metrics
    assert metrics["test_accuracy"] == pytest.approx(0.6)
    assert metrics["test_macro_f1"] == pytest.approx(0.75 / 7)
    assert metrics["test_f1_happy"] == 0.75 and metrics["test_f1_sad"] == 0.0
    logged = {a.path for a in client.list_artifacts(run["run_id"], "evaluation")}
    assert logged == {"evaluation/evaluate.json", "evaluation/confusion_matrix.png", "evaluation/per_class.csv"}
    sha = sha256_file(project / "data/model/model.keras")  # the OpenVINO copy, keyed by the Keras file
    assert {a.path for a in client.list_artifacts(run["run_id"], "openvino")} == {f"openvino/{sha}{s}" for s in (".bin", ".json", ".xml")}
    assert mlflow.artifacts.load_dict(f"runs:/{run['run_id']}/openvino/{sha}.json")["precision"] == "int8"
    assert metrics["test_accuracy_flip_int8"] == pytest.approx(0.6)  # the INT8 copy also says happy
    champion = client.get_model_version_by_alias(REGISTERED_MODEL_NAME, CHAMPION_ALIAS)
    assert champion.run_id == run["run_id"] and str(champion.version) == "1"
    # random pixels: the bundled default model gets 1 of the 15 right, this one 9
    assert "no champion yet, and it beats the bundled default model (0.0667) on the same test set" in output


def test_an_int8_copy_failing_its_check_is_left_out_and_the_model_still_registered(project, evaluate, monkeypatch):
    from emotion_recognition import runtime

    monkeypatch.setattr(runtime, "INT8_AGREEMENT", 1.01)  # no copy passes
    run, output = evaluate(HAPPY)
    assert "evaluate: warning: no INT8 OpenVINO copy logged: the INT8 copy agrees with Keras on 100.0% of" in output
    client = MlflowClient()
    assert client.list_artifacts(run["run_id"], "openvino") == []
    assert "test_accuracy_flip_int8" not in client.get_run(run["run_id"]).data.metrics
    assert "accuracy_flip_int8" not in json.loads((project / "metrics/evaluate.json").read_text())
    assert client.get_model_version_by_alias(REGISTERED_MODEL_NAME, CHAMPION_ALIAS).run_id == run["run_id"]


def test_a_first_model_no_better_than_the_bundled_one_leaves_that_one_champion(project, evaluate):
    run, output = evaluate(SAD)  # 1 of 15, as many as the bundled model
    client = MlflowClient()
    champion = client.get_model_version_by_alias(REGISTERED_MODEL_NAME, CHAMPION_ALIAS)
    assert str(champion.version) == "2" and champion.run_id != run["run_id"]
    assert champion.tags["source"] == "bundled default model"
    assert "does not beat the bundled default model (0.0667 on the same test set)" in output


def test_a_worse_model_is_registered_but_does_not_take_champion(project, evaluate, set_params):
    first, _ = evaluate(HAPPY)
    second, output = evaluate(SAD)
    client = MlflowClient()
    versions = client.search_model_versions(f"name='{REGISTERED_MODEL_NAME}'")
    assert sorted(v.run_id for v in versions) == sorted([first["run_id"], second["run_id"]])
    assert client.get_model_version_by_alias(REGISTERED_MODEL_NAME, CHAMPION_ALIAS).run_id == first["run_id"]
    assert "champion stays v1 (0.6000 on the same test set)" in output
    # register_model: false -> no new version
    set_params(project, evaluate={"register_model": False})
    evaluate(HAPPY)
    assert len(client.search_model_versions(f"name='{REGISTERED_MODEL_NAME}'")) == 2


def view_dependent_model() -> keras.Model:
    """Random pixel weights per class (built-in layers only, so the saved file reloads safely):
    mirrored, zoomed and shifted views of a face get different predictions."""
    keras.utils.set_random_seed(5)
    inputs = keras.Input((48, 48, 1))
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    return keras.Model(inputs, keras.layers.Dense(7, activation="softmax")(x))


def test_test_time_views_from_params_and_the_accuracy_of_fewer_views(project, evaluate, set_params):
    set_params(project, evaluate={"flip_tta": True, "tta_zoom_crops": [44, 40], "tta_shift": 2})
    model = view_dependent_model()
    run, output = evaluate(model)
    metrics = json.loads((project / "metrics/evaluate.json").read_text())
    test = load_split(project / "data/split/test.npz")

    def accuracy(tta: TestTimeAugmentation) -> float:
        return float((predict_probabilities(model, test.images, tta).argmax(axis=1) == test.labels).mean())

    assert metrics["tta"] == "14 views (flip, zoom 44px, zoom 40px, shift 2px x4)" and metrics["tta_views"] == 14
    assert metrics["accuracy"] == pytest.approx(accuracy(TestTimeAugmentation(True, (44, 40), 2)))
    assert metrics["accuracy_single_view"] == pytest.approx(accuracy(TestTimeAugmentation()))
    assert metrics["accuracy_flip"] == pytest.approx(accuracy(TestTimeAugmentation(flip=True)))
    logged = MlflowClient().get_run(run["run_id"]).data.metrics
    assert logged["test_accuracy_single_view"] == pytest.approx(metrics["accuracy_single_view"])
    assert "with 14 views (flip, zoom 44px, zoom 40px, shift 2px x4)" in output
    set_params(project, evaluate={"flip_tta": False, "tta_zoom_crops": [], "tta_shift": 0})
    evaluate(model)
    metrics = json.loads((project / "metrics/evaluate.json").read_text())
    assert "accuracy_flip" not in metrics and metrics["accuracy"] == metrics["accuracy_single_view"]


def test_fewer_views_read_the_face_and_its_mirror(load_stage):
    """Made-up view probabilities: only view 0 (the face) and view V/2 (its mirror) are right."""
    tta = TestTimeAugmentation(flip=True, zoom_crops=(44,), shift=1)  # 12 views; view 6 mirrors view 0
    labels = np.array([2, 5])
    views = np.full((12, 2, 7), 0.1)
    views[:, np.arange(2), 0] = 0.5  # every view says class 0 ...
    views[0, np.arange(2), labels] = 0.9  # ... but the face itself ...
    views[6, np.arange(2), labels] = 0.9  # ... and its mirror say the true class
    views[1, 0, labels[0]] = 0.6
    fewer = load_stage("evaluate").accuracy_with_fewer_views(views, labels, tta)
    assert fewer == {"accuracy_single_view": 1.0, "accuracy_flip": 1.0}
    views[6] = views[1]  # a wrong mirror: the average of view 0 and 6 now favours class 0 for face 1 only
    views[6, 1, 0] = 2.0
    assert load_stage("evaluate").accuracy_with_fewer_views(views, labels, tta)["accuracy_flip"] == 0.5
