"""bench/epoch_boundary_stall.py replays whole epochs through the project's training pipeline."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from emotion_recognition.data import Split
from emotion_recognition.params import TrainParams

REPO_ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("epoch_boundary_stall", REPO_ROOT / "bench" / "epoch_boundary_stall.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


@pytest.mark.parametrize("repeat", [False, True])
def test_one_boundary_is_timed_between_each_pair_of_epochs(repeat):
    split = Split(np.zeros((40, 48, 48), np.uint8), np.arange(40) % 7, np.arange(40).astype(str))
    gaps = bench.epoch_boundaries(split, TrainParams(), repeat, minutes=0.01, step_seconds=0.05, batch_size=16)
    # 3 steps of 50 ms per epoch, 0.6 s budget: at least 3 epochs, so at least 2 boundaries
    assert len(gaps) >= 2 and all(0 <= g < 5 for g in gaps)
