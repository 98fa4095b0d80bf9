"""The BentoML model store side: which tag the service serves and the message when it is missing."""

from __future__ import annotations

import os

from emotion_recognition.model_files import REGISTERED_MODEL_NAME as MODEL_NAME  # the store's name is the registry's
from serving.settings import ServingSettings

MODEL_FILE = "model.keras"
IMPORT_HINT = (
    "import one first, from the repository root:\n"
    "  python -m serving.import_model                  # the MLflow registry's champion (default)\n"
    "  python -m serving.import_model --model-file PATH/TO/model.keras\n"
    "  python -m serving.import_model --bundled        # the default model shipped in the package"
)


def model_tag(settings: ServingSettings) -> str:
    """The BentoML model the service loads: EMOTION_MODEL_TAG, default ``fer-emotion:latest``."""
    return settings.model_tag or f"{MODEL_NAME}:latest"


class NoModelError(RuntimeError):
    """The BentoML model store has no emotion model."""


def find_stored_model(tag: str):
    """The stored BentoML model for ``tag``, or NoModelError naming the import command."""
    import bentoml
    from bentoml.exceptions import NotFound

    try:
        model = bentoml.models.get(tag)
    except (NotFound, ValueError):
        raise NoModelError(f"no model '{tag}' in the BentoML model store; {IMPORT_HINT}") from None
    if not os.path.isfile(model.path_of(MODEL_FILE)):
        raise NoModelError(f"the BentoML model {model.tag} has no {MODEL_FILE}; {IMPORT_HINT}")
    return model
