"""The pipeline against a real ``mlflow server`` on PostgreSQL with served artifacts: runs,
registry, champion alias and the serving import step, all through MLFLOW_TRACKING_URI."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.scaleout
REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_pipeline_logs_and_registers_on_the_tracking_server(team_project, postgres):
    from mlflow import MlflowClient

    assert team_project.ran(team_project.first) == {"fetch", "split", "augment", "train", "evaluate"}
    assert not (team_project.root / "mlflow.db").exists(), "the pipeline wrote a local SQLite store"
    client = MlflowClient(tracking_uri=team_project.tracking_uri, registry_uri=team_project.tracking_uri)
    run_id = json.loads((team_project.root / "data/model/run.json").read_text())["run_id"]
    run = client.get_run(run_id)
    assert "test_accuracy" in run.data.metrics and "loss" in run.data.metrics
    assert run.info.artifact_uri.startswith("mlflow-artifacts:"), run.info.artifact_uri  # served by the server
    versions = client.search_model_versions("name='fer-emotion'")
    assert versions, "no model version registered"
    champion = client.get_model_version_by_alias("fer-emotion", "champion")
    assert str(champion.version) in {str(v.version) for v in versions}

    # the runs and the registry are rows in PostgreSQL, not files
    import psycopg

    with psycopg.connect(postgres) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM runs WHERE run_uuid = %s", (run_id,))
        assert cursor.fetchone()[0] == 1
        cursor.execute("SELECT version FROM registered_model_aliases WHERE name = 'fer-emotion' AND alias = 'champion'")
        assert str(cursor.fetchone()[0]) == str(champion.version)


def test_serving_imports_the_champion_from_the_tracking_server(team_project, tmp_path):
    from mlflow import MlflowClient

    env = {**team_project.env, "BENTOML_HOME": str(tmp_path / "bentoml"), "BENTOML_DO_NOT_TRACK": "True"}
    result = subprocess.run([sys.executable, "-m", "serving.import_model"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    client = MlflowClient(tracking_uri=team_project.tracking_uri, registry_uri=team_project.tracking_uri)
    champion = client.get_model_version_by_alias("fer-emotion", "champion")
    assert f"from MLflow version {champion.version}" in result.stdout, result.stdout

    # what the service will load: the model store in BENTOML_HOME holds the champion's version
    show = "import bentoml, json; m = bentoml.models.get('fer-emotion:latest'); print(json.dumps(m.info.metadata))"
    listed = subprocess.run([sys.executable, "-c", show], env=env, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    metadata = json.loads(listed.stdout.strip().splitlines()[-1])
    assert metadata["mlflow_version"] == str(champion.version), metadata
    assert metadata["mlflow_tracking_uri"] == team_project.tracking_uri, metadata


@pytest.mark.slow
def test_concurrent_promotions_through_the_tracking_server(mlflow_server, isolated, monkeypatch, tmp_path,
                                                           make_constant_model, log_keras_model):
    """The promotion lock through the REST API (tests/test_pipeline_hostile.py does it on SQLite):
    three runs at once in a fresh registry whose bundled model scores 3/10: two beat it with 4/10,
    one loses to it. One of the 4/10 runs ends champion, not the bundled model."""
    import numpy as np

    from emotion_recognition.pipeline.tracking import configure_mlflow
    from testkit import promote_concurrently

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    configure_mlflow()
    labels = np.array([3] * 4 + [2] * 3 + [0] * 2 + [5])  # happy 4, fear 3, angry 2, surprise 1: 10 faces
    images = np.random.default_rng(1).integers(0, 256, (len(labels), 48, 48)).astype(np.uint8)
    baseline = tmp_path / "bundled.keras"
    make_constant_model(2).save(baseline)
    logged = {log_keras_model(make_constant_model(label)): np.mean(labels == label) for label in (3, 0)}
    logged[log_keras_model(make_constant_model(3))] = 0.4  # a second model as good as the best: not better
    champion = promote_concurrently(logged, "server-race", images, labels, baseline)
    assert champion in {run_id for (run_id, _), accuracy in logged.items() if accuracy == 0.4}
