"""Shared helpers and fixtures for the inference/serving tests (imported by those test modules).

The tiny model follows the model contract (``build_model("vgg", widths=[8, 16], dense_units=16)``)
with random weights plus a bias of +3 on "happy" in its last layer: every face comes out
"happy" with probability about 0.77 and the other six probabilities still differ from face to
face, so tests can check both the label order end to end and that batching keeps faces apart.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from testkit import free_port, serve_env, start_bentoml_serve, stop_process_group, wait_ready  # noqa: F401 (re-exported to the serving tests)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
MEDIA = SHARED / "media"
FER_ZIP = SHARED / "data" / "fer2013.zip"
HAPPY_BIAS = 3.0
HAPPY_P = float(np.exp(HAPPY_BIAS) / (np.exp(HAPPY_BIAS) + 6))  # 0.770 with a zero kernel

os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def require_shared(path: Path = SHARED) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is not present (../shared beside the repository root holds the test media)")
    return path


def media(name: str) -> Path:
    return require_shared(MEDIA / name)


def rgb(name: str) -> np.ndarray:
    """A test photo from the shared media folder as an RGB array."""
    import cv2

    return cv2.cvtColor(cv2.imread(str(media(name))), cv2.COLOR_BGR2RGB)


def make_tiny_model(path: Path, seed: int = 0) -> Path:
    import keras

    from emotion_recognition.labels import EMOTION_INDEX
    from emotion_recognition.model import build_model

    keras.utils.set_random_seed(seed)
    model = build_model("vgg", widths=[8, 16], dense_units=16)
    layer = model.get_layer("emotion")
    kernel, bias = layer.get_weights()
    bias = np.zeros_like(bias)
    bias[EMOTION_INDEX["happy"]] = HAPPY_BIAS
    layer.set_weights([kernel * 0.2, bias])
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return path


@pytest.fixture(scope="module")
def tiny_model_file(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("model") / "model.keras")


@pytest.fixture(scope="module")
def recognizer(tiny_model_file):
    """An EmotionRecognizer on the tiny model, default detection and views."""
    from emotion_recognition.inference import EmotionRecognizer

    return EmotionRecognizer.from_file(tiny_model_file)


def png_bomb(width: int = 30_000, height: int = 30_000) -> bytes:
    """A valid 1-bit PNG of width x height black pixels: ~110 KB for 30,000 x 30,000."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" * (1 + (width + 7) // 8)
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def copy_media_to(tmp: Path, *names: str) -> list[Path]:
    out = []
    for name in names:
        target = tmp / name
        shutil.copyfile(media(name), target)
        out.append(target)
    return out
