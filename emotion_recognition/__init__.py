"""Facial emotion recognition: shared code for the DVC stages, the service and the CLI."""

from emotion_recognition.labels import EMOTIONS, NUM_CLASSES

__all__ = ["EMOTIONS", "NUM_CLASSES"]
__version__ = "0.1.0"
