"""The model contract: raw (N,48,48,1) 0-255 faces in, 7 probabilities out, for every architecture."""

from pathlib import Path

import keras
import numpy as np
import pytest

from emotion_recognition.labels import NUM_CLASSES
from emotion_recognition.pipeline.model import build_model, resolve_backbone_weights
from emotion_recognition.model_files import load_model
from emotion_recognition.pipeline.params import ParamsError, load_params
from emotion_recognition.pipeline.training import float32_copy
from testkit import REPO_ROOT, model_params


@pytest.fixture
def faces():
    return np.random.default_rng(0).integers(0, 256, (3, 48, 48, 1)).astype(np.float32)


def test_vgg_takes_raw_pixels_and_returns_probabilities(faces):
    model = build_model(model_params(widths=[8, 16], dense_units=16))
    probabilities = model.predict(faces, verbose=0)
    assert probabilities.shape == (3, NUM_CLASSES)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_mobilenetv2_takes_the_same_input(faces):
    model = build_model(model_params(architecture="mobilenetv2", input_size=32, alpha=0.35, weights="none"))
    probabilities = model.predict(faces, verbose=0)
    assert probabilities.shape == (3, NUM_CLASSES)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_mobilenetv2_loads_backbone_weights_from_a_local_file(tmp_path):
    # The 'imagenet' download cannot run offline; the same mechanism with a file we saved can.
    donor = keras.applications.MobileNetV2(input_shape=(32, 32, 3), include_top=False, weights=None, alpha=0.35, pooling="avg")
    path = tmp_path / "backbone.weights.h5"
    donor.save_weights(path)
    model = build_model(model_params(architecture="mobilenetv2", input_size=32, alpha=0.35, weights=str(path)))
    backbone = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    for loaded, saved in zip(backbone.get_weights(), donor.get_weights()):
        np.testing.assert_array_equal(loaded, saved)


@pytest.mark.parametrize("value, expected", [("none", (None, None)), ("imagenet", ("imagenet", None))])
def test_weights_param_names(value, expected):
    assert resolve_backbone_weights(value) == expected


def test_weights_param_missing_file_says_what_is_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.weights.*'imagenet', 'none'"):
        resolve_backbone_weights(str(tmp_path / "absent.h5"))


def test_unknown_architecture_is_refused_by_params(tmp_path):
    params = (REPO_ROOT / "params.yaml").read_text().replace("architecture: vgg", "architecture: resnet9000")
    (tmp_path / "params.yaml").write_text(params)
    with pytest.raises(ParamsError, match="model.architecture.*'vgg' or 'mobilenetv2'"):
        load_params(tmp_path / "params.yaml")


def test_bf16_trained_model_is_saved_as_float32_with_the_same_predictions(tmp_path, faces):
    params = model_params(widths=[8, 16], dense_units=16)
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        trained = build_model(params)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    copy = float32_copy(trained, params)
    path = tmp_path / "model.keras"
    copy.save(path)
    loaded = load_model(path)
    assert all(layer.dtype_policy.name == "float32" for layer in loaded.layers)
    np.testing.assert_allclose(loaded.predict(faces, verbose=0), trained.predict(faces, verbose=0), atol=0.02)
