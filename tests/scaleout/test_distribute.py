"""`train.distribute: mirrored`: the train stage runs MirroredStrategy (here over two logical CPU
devices, as there is no GPU) and writes a model in the contract the service loads."""

import json

import pytest

pytestmark = pytest.mark.scaleout


def test_mirrored_training_writes_a_model_in_the_contract(scaleout_project, set_params):
    from emotion_recognition.inference import check_model_contract
    from emotion_recognition.model_files import load_model

    project = scaleout_project("mirrored", None)
    # 2 validation faces per class: Keras 3.15 builds the model from the first batch of each
    # dataset, and under MirroredStrategy that batch must split evenly over the replicas (any
    # validation set of 256+ faces does; FER2013's has 3,589)
    set_params(project.root, split={"val_fraction": 0.34}, train={"epochs": 2, "distribute": "mirrored"})
    result = project.run("dvc", "repro", "train")
    assert "train: mirrored, 2 replica(s), global batch 32" in result.stdout, result.stdout[-3000:]
    metrics = json.loads((project.root / "metrics/train.json").read_text())
    assert metrics["epochs_run"] == 2 and 0 <= metrics["val_accuracy"] <= 1
    model = load_model(project.root / "data/model/model.keras")
    check_model_contract(model)  # (N, 48, 48, 1) 0-255 in, 7 probabilities out


def test_an_unknown_strategy_is_refused_with_its_name(scaleout_project, set_params):
    import subprocess

    project = scaleout_project("unknown-strategy", None)
    set_params(project.root, train={"distribute": "tpu_pod"})
    result = subprocess.run(["dvc", "repro", "train"], cwd=project.root, env=project.env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode != 0
    assert "distribute" in result.stdout + result.stderr and "Traceback" not in result.stdout + result.stderr
