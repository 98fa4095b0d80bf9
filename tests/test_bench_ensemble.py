"""bench/ensemble.py on tiny real Keras models and tiny split files."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from emotion_recognition.data import Split, save_split
from emotion_recognition.labels import EMOTIONS
from emotion_recognition.model import build_model

REPO_ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("ensemble", REPO_ROOT / "bench" / "ensemble.py")
ensemble = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ensemble)


def test_subset_accuracies_average_the_probabilities():
    labels = np.array([0, 1])
    sure_wrong = np.array([[0.1, 0.9], [0.9, 0.1]])  # wrong on both faces, but not by much
    right = np.array([[0.6, 0.4], [0.4, 0.6]])
    very_right = np.array([[0.9, 0.1], [0.1, 0.9]])
    accuracies = ensemble.subset_accuracies([sure_wrong, right, very_right], labels)
    assert accuracies[(0,)] == 0.0 and accuracies[(1,)] == 1.0
    assert accuracies[(0, 1)] == 0.0  # the surer model wins the average
    assert accuracies[(0, 1, 2)] == 1.0
    assert len(accuracies) == 7


def constant_model(path: Path, label: int) -> str:
    model = build_model("vgg", widths=[8], convs_per_block=1, dense_units=8)
    weights = [np.zeros_like(w) for w in model.get_weights()]
    weights[-1][label] = 5.0  # the output bias: this label for every face
    model.set_weights(weights)
    model.save(path)
    return str(path)


def test_prints_every_model_and_subset_on_both_splits(tmp_path, monkeypatch, capsys):
    labels = np.array([EMOTIONS.index("happy")] * 3 + [EMOTIONS.index("sad")])
    for name in ("val", "test"):
        save_split(Split(np.zeros((4, 48, 48), np.uint8), labels, np.array([f"{name}/{i}.png" for i in range(4)])),
                   tmp_path / f"data/split/{name}.npz")
    happy = constant_model(tmp_path / "happy.keras", EMOTIONS.index("happy"))
    sad = constant_model(tmp_path / "sad.keras", EMOTIONS.index("sad"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["ensemble.py", happy, sad, "--tta", "flip"])
    ensemble.main()
    out = capsys.readouterr().out
    assert out.startswith("accuracy with 2 views (flip) per model (validation 4 faces, PublicTest 4)")
    lines = {line.split()[0] + (" +" if " + " in line else ""): line.split()[-2:] for line in out.splitlines()[2:]}
    assert lines["happy.keras"] == ["75.00%", "75.00%"] and lines["sad.keras"] == ["25.00%", "25.00%"]
    assert len(out.splitlines()) == 2 + 3


def test_a_missing_model_file_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["ensemble.py", "missing.keras"])
    with pytest.raises(SystemExit, match="missing.keras: no such model file"):
        ensemble.main()
