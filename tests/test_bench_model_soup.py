"""bench/model_soup.py end to end on tiny real Keras models and tiny split files."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from emotion_recognition.data import Split, save_split
from emotion_recognition.model import build_model, load_model

REPO_ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("model_soup", REPO_ROOT / "bench" / "model_soup.py")
soup = importlib.util.module_from_spec(spec)
spec.loader.exec_module(soup)


@pytest.fixture
def project(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    for name in ("val", "test"):
        save_split(Split(rng.integers(0, 256, (12, 48, 48), dtype=np.uint8), np.arange(12) % 7,
                         np.array([f"{name}/{i}.png" for i in range(12)])), tmp_path / f"data/split/{name}.npz")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def save_models(project, widths_and_values):
    paths = []
    for index, (widths, value) in enumerate(widths_and_values):
        model = build_model("vgg", widths=widths, convs_per_block=1, dense_units=8)
        model.set_weights([np.full(w.shape, value, np.float32) for w in model.get_weights()])
        paths.append(str(project / f"m{index}.keras"))
        model.save(paths[-1])
    return paths


def run_bench(monkeypatch, *args):
    monkeypatch.setattr(sys, "argv", ["model_soup.py", *args])
    soup.main()


def test_the_saved_soup_is_the_mean_of_the_models(project, monkeypatch, capsys):
    paths = save_models(project, [([4], 1.0), ([4], 3.0)])
    run_bench(monkeypatch, *paths, "--views", "none", "--out", "soup.keras")
    for weights in load_model(project / "soup.keras").get_weights():
        np.testing.assert_allclose(weights, 2.0)
    assert "average of 2" in capsys.readouterr().out


def test_models_of_different_architectures_are_refused(project, monkeypatch):
    paths = save_models(project, [([4], 1.0), ([8], 1.0)])
    with pytest.raises(SystemExit, match="do not share one architecture"):
        run_bench(monkeypatch, *paths)
