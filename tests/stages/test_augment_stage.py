"""Stage `augment`: data/split/train.npz -> data/augmented/train.npz, metrics and a preview PNG."""

import json

import cv2
import numpy as np
import pytest

from testkit import stage_args
from emotion_recognition.pipeline.data import Split, load_split, save_split
from emotion_recognition.labels import EMOTIONS

pytestmark = pytest.mark.usefixtures("project")


@pytest.fixture
def train(project, fer):
    faces = fer.select("train")
    faces = [f for f in faces if f.label != "disgust"] + [f for f in faces if f.label == "disgust"][:2]  # rare class
    split = Split(np.stack([f.pixels for f in faces]), np.array([EMOTIONS.index(f.label) for f in faces]),
                  np.array([f.entry for f in faces]))
    save_split(split, project / "data/split/train.npz")
    return split


def run(load_stage, set_params, project, **augment):
    set_params(project, augment={"seed": 7, "copies": 1, "min_per_class": 0, "preview_images": 3, **augment})
    load_stage("augment").main(*stage_args("augment"))
    return (load_split(project / "data/augmented/train.npz"),
            json.loads((project / "metrics/augment.json").read_text()))


def test_copies_and_rebalancing(project, train, load_stage, set_params):
    out, metrics = run(load_stage, set_params, project, copies=1, min_per_class=10)
    counts = np.bincount(train.labels, minlength=7)
    assert counts[EMOTIONS.index("disgust")] == 2
    expected = {e: max(2 * int(counts[i]), 10) for i, e in enumerate(EMOTIONS)}
    assert metrics == {"images_before": len(train), "images_after": sum(expected.values()), "counts": expected}
    assert len(out) == sum(expected.values())
    np.testing.assert_array_equal(out.images[: len(train)], train.images)


def test_same_seed_same_output_different_seed_different_output(project, train, load_stage, set_params):
    first, _ = run(load_stage, set_params, project, seed=7)
    first_bytes = (project / "data/augmented/train.npz").read_bytes()
    again, _ = run(load_stage, set_params, project, seed=7)
    assert (project / "data/augmented/train.npz").read_bytes() == first_bytes
    other, _ = run(load_stage, set_params, project, seed=8)
    np.testing.assert_array_equal(first.labels, other.labels)
    assert not np.array_equal(first.images[len(train):], other.images[len(train):])


def test_preview_grid_has_one_row_per_original(project, train, load_stage, set_params):
    run(load_stage, set_params, project, preview_images=3)
    path = project / "plots/augment_preview.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = cv2.imread(str(path))
    # figsize (1.2 * 6 columns, 1.3 * rows) inches at 100 dpi
    assert image.shape[:2] == (390, 720)
    assert image.std() > 10  # not a blank canvas
    run(load_stage, set_params, project, preview_images=2)
    assert cv2.imread(str(path)).shape[:2] == (260, 720)
