"""Facial emotion recognition: shared code for the DVC stages, the service and the CLI."""

import os

# TensorFlow's C++ start-up chatter (oneDNN/CPU-feature notices) buries our own messages.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from emotion_recognition.labels import EMOTIONS, NUM_CLASSES

__all__ = ["EMOTIONS", "NUM_CLASSES"]
__version__ = "0.1.0"
