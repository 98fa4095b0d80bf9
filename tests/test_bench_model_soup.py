"""bench/model_soup.py: the weight average of same-architecture models, on real Keras models."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from emotion_recognition.model import build_model

REPO_ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("model_soup", REPO_ROOT / "bench" / "model_soup.py")
soup = importlib.util.module_from_spec(spec)
spec.loader.exec_module(soup)


def test_average_weights_is_the_elementwise_mean_batch_norm_statistics_included():
    models = [build_model("vgg", widths=[4], convs_per_block=1, dense_units=8) for _ in range(3)]
    shapes = [w.shape for w in models[0].get_weights()]
    for model, value in zip(models, [1.0, 2.0, 6.0]):
        model.set_weights([np.full(shape, value, np.float32) for shape in shapes])
    averaged = soup.average_weights([model.get_weights() for model in models])
    assert len(averaged) == len(shapes)  # moving means/variances are weights too
    for weights, shape in zip(averaged, shapes):
        np.testing.assert_allclose(weights, np.full(shape, 3.0))


def test_models_of_different_architectures_are_refused():
    small = build_model("vgg", widths=[4], convs_per_block=1, dense_units=8)
    wider = build_model("vgg", widths=[8], convs_per_block=1, dense_units=8)
    with pytest.raises(SystemExit, match="do not share one architecture"):
        soup.average_weights([small.get_weights(), wider.get_weights()])
