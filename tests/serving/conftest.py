"""Fixtures for the service tests: a private BentoML home with the tiny model, in-process and
real-process servers."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# A private BentoML home for the whole test session, set before bentoml is first used, so the
# tests never touch ~/bentoml. Request limits small enough to test cheaply.
_HOME = Path(tempfile.mkdtemp(prefix="fer-bentoml-home-"))
os.environ["BENTOML_HOME"] = str(_HOME)
os.environ["BENTOML_DO_NOT_TRACK"] = "True"
TEST_LIMITS = {
    "EMOTION_MAX_IMAGE_BYTES": str(2 * 1024 * 1024),
    "EMOTION_MAX_REQUEST_BYTES": str(8 * 1024 * 1024),
    "EMOTION_MAX_IMAGE_PIXELS": str(3_000_000),
    "EMOTION_MAX_REQUEST_PIXELS": str(6_000_000),
    "EMOTION_MAX_VIDEO_DECODED_FRAMES": "300",  # Megamind.avi has 270 frames
}
os.environ.update(TEST_LIMITS)
os.environ.pop("EMOTION_TTA", None)  # the tests check the service's default views

from testkit import make_tiny_model, require_shared, running_server  # noqa: E402


@pytest.fixture(scope="session")
def bentoml_home(tmp_path_factory) -> Path:
    """The session's BentoML home, holding the tiny model as fer-emotion:latest."""
    from bentoml._internal.configuration.containers import BentoMLContainer

    BentoMLContainer.bentoml_home.set(str(_HOME))
    from bentoml._internal.models import ModelStore

    BentoMLContainer.model_store.set(ModelStore(str(_HOME / "models")))
    from emotion_recognition.model_files import ModelSource
    from serving.import_model import store_model

    path = make_tiny_model(tmp_path_factory.mktemp("tiny") / "model.keras")
    store_model(ModelSource(path, "file"))
    return _HOME


@pytest.fixture(scope="session")
def service_client(bentoml_home):
    """Starlette TestClient on the service's ASGI app (BentoML lifespan: __init__, batching proxy)."""
    from starlette.testclient import TestClient

    from serving.service import EmotionService

    with TestClient(EmotionService.to_asgi()) as client:
        yield client


@pytest.fixture(scope="session")
def live_server(bentoml_home, tmp_path_factory):
    """``bentoml serve`` as a real process on a free port; yields its base URL."""
    with running_server(bentoml_home, tmp_path_factory.mktemp("live-server") / "serve.log",
                        **{k: os.environ[k] for k in TEST_LIMITS}) as url:
        yield url


@pytest.fixture(scope="session")
def fer_zip() -> Path:
    return require_shared(Path(__file__).resolve().parents[2].parent / "shared" / "data" / "fer2013.zip")
