"""``python -m serving.import_model``: from a .keras file, from the MLflow champion, and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from testkit import make_tiny_model

NAME = "fer-emotion-import-test"  # not the served name: these imports must not change :latest


def stored(tag: str):
    import bentoml

    return bentoml.models.get(tag)


def test_import_keras_file(bentoml_home, tmp_path, capsys):
    from serving.import_model import main

    path = make_tiny_model(tmp_path / "model.keras", seed=3)
    assert main(["--model-file", str(path), "--name", NAME]) == 0
    assert f"imported {NAME}:" in capsys.readouterr().out
    model = stored(f"{NAME}:latest")
    assert model.info.metadata["source"] == "file"
    assert model.info.metadata["labels"] == "angry,disgust,fear,happy,neutral,sad,surprise"
    assert (tmp_path / "model.keras").read_bytes() == open(model.path_of("model.keras"), "rb").read()
    # its OpenVINO copy, made at import (no validation faces here: fp32, checked on probe faces)
    assert copy_record(model)["precision"] == "fp32"


def copy_record(model) -> dict:
    from emotion_recognition.model_files import sha256_file

    return json.loads(open(model.path_of(f"openvino/{sha256_file(model.path_of('model.keras'))}.json")).read())


def test_import_from_mlflow_champion(bentoml_home, isolated, capsys):
    """``isolated`` (tests/conftest.py): cwd and MLFLOW_TRACKING_URI in tmp_path, restored after."""
    tmp_path = isolated
    import mlflow
    from mlflow.tracking import MlflowClient

    from emotion_recognition import runtime
    from emotion_recognition.model_files import sha256_file, load_model, CHAMPION_ALIAS, REGISTERED_MODEL_NAME
    from emotion_recognition.pipeline.tracking import configure_mlflow
    from serving.import_model import main

    configure_mlflow(tmp_path)
    model = load_model(make_tiny_model(tmp_path / "m.keras", seed=4))
    with mlflow.start_run() as run:
        info = mlflow.tensorflow.log_model(model, name="model", registered_model_name=REGISTERED_MODEL_NAME)
        faces = runtime.probe_faces(16)  # as stages/evaluate.py logs it: an INT8 copy
        runtime.convert(model, tmp_path / "ov", sha256_file(tmp_path / "m.keras"), faces, "probes", calibration=faces)
        mlflow.log_artifacts(str(tmp_path / "ov"), "openvino")
    client = MlflowClient()
    version = client.get_registered_model(REGISTERED_MODEL_NAME).latest_versions[0].version
    client.set_registered_model_alias(REGISTERED_MODEL_NAME, CHAMPION_ALIAS, version)
    assert info.registered_model_version == int(version)

    assert main(["--name", NAME]) == 0
    assert f"from MLflow version {version}" in capsys.readouterr().out
    bento_model = stored(f"{NAME}:latest")
    metadata = bento_model.info.metadata
    assert metadata["source"] == "mlflow" and metadata["mlflow_version"] == str(version)
    assert metadata["mlflow_run_id"] == run.info.run_id
    assert bento_model.info.labels["mlflow_version"] == str(version)
    record = copy_record(bento_model)  # the run's copy, not a new fp32 one: MLflow's file of the same weights
    assert record["precision"] == "int8" and record["rekeyed_from"] == sha256_file(tmp_path / "m.keras")
    # the stored file is the registered model: same predictions
    faces = np.random.default_rng(0).integers(0, 256, (4, 48, 48, 1)).astype(np.float32)
    imported = load_model(bento_model.path_of("model.keras"))
    assert np.allclose(imported.predict(faces, verbose=0), model.predict(faces, verbose=0), atol=1e-6)


def test_a_copy_of_other_weights_is_not_imported(bentoml_home, isolated, capsys):
    """A run whose logged copy was made from another model (its record's weights differ from the
    registered file's): the import makes an fp32 copy of the registered model instead."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from emotion_recognition import runtime
    from emotion_recognition.model_files import load_model, CHAMPION_ALIAS, REGISTERED_MODEL_NAME
    from emotion_recognition.pipeline.tracking import configure_mlflow
    from serving.import_model import main

    configure_mlflow(isolated)
    model, other = (load_model(make_tiny_model(isolated / f"{seed}.keras", seed=seed)) for seed in (4, 5))
    with mlflow.start_run():
        info = mlflow.tensorflow.log_model(model, name="model", registered_model_name=REGISTERED_MODEL_NAME)
        faces = runtime.probe_faces(16)
        runtime.convert(other, isolated / "ov", "c" * 64, faces, "probes", calibration=faces)
        mlflow.log_artifacts(str(isolated / "ov"), "openvino")
    MlflowClient().set_registered_model_alias(REGISTERED_MODEL_NAME, CHAMPION_ALIAS, info.registered_model_version)
    assert main(["--name", NAME]) == 0
    record = copy_record(stored(f"{NAME}:latest"))
    assert record["precision"] == "fp32" and record["weights_sha256"] == runtime.weights_sha256(model)


def test_a_copy_failing_its_check_leaves_keras_with_a_warning(bentoml_home, tmp_path, monkeypatch, capsys):
    from emotion_recognition import runtime
    from serving.import_model import main

    monkeypatch.setattr(runtime, "TOLERANCE", -1.0)  # no copy passes
    assert main(["--model-file", str(make_tiny_model(tmp_path / "model.keras")), "--name", NAME]) == 0
    err = capsys.readouterr().err
    assert err.startswith("warning: no OpenVINO copy (the OpenVINO copy differs from Keras by ") and err.count("\n") == 1
    assert err.endswith("the service will run Keras\n")
    assert not list(Path(stored(f"{NAME}:latest").path_of("openvino")).glob("*.xml"))  # none to fail at load either


def test_import_from_mlflow_without_champion(bentoml_home, isolated, monkeypatch, capsys):
    from serving.import_model import main

    tmp_path = isolated
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'missing' / 'mlflow.db'}")
    assert main(["--name", NAME]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: no MLflow store at") and "--model-file" in err

    from emotion_recognition.pipeline.tracking import configure_mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    configure_mlflow(tmp_path)  # a store with no registered model
    assert main(["--alias", "champion", "--name", NAME]) == 1
    err = capsys.readouterr().err
    assert "has no model 'fer-emotion' with alias 'champion'" in err and "dvc repro" in err


def test_import_errors(bentoml_home, tmp_path, capsys, monkeypatch):
    from serving import import_model

    monkeypatch.setattr(import_model, "bundled_model_path", lambda: None)
    assert import_model.main(["--bundled", "--name", NAME]) == 1
    assert "no bundled default model" in capsys.readouterr().err
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"not a zip")
    assert import_model.main(["--model-file", str(broken), "--name", NAME]) == 1
    assert "could not be loaded as a Keras model" in capsys.readouterr().err
    assert import_model.main(["--model-file", str(tmp_path / "none.keras"), "--name", NAME]) == 1
    assert "no model file" in capsys.readouterr().err
