"""Stage `split`: duplicates counted (and removed by a param), stratified seeded train/val split."""

import json

import numpy as np
import pytest

from testkit import stage_args
from emotion_recognition.pipeline.data import load_split
from emotion_recognition.labels import EMOTIONS

pytestmark = pytest.mark.usefixtures("project")


@pytest.fixture
def fetched(project, fer, load_stage):
    """data/fer2013 from a zip with planted exact duplicates:
    two more copies of a happy train image, and a sad test image copied twice into train."""
    happy = fer.select("train", "happy")[0].jpeg
    leaked = fer.select("test", "sad")[0].jpeg
    extra = {
        "train/happy/Training_dup1.jpg": happy,
        "train/happy/Training_dup2.jpg": happy,
        "train/sad/Training_leak1.jpg": leaked,
        "train/sad/Training_leak2.jpg": leaked,
    }
    source = fer.write_zip(project / "inputs" / "fer2013.zip", extra=extra)
    load_stage("fetch").fetch(str(source), None, False, project / "data" / "fer2013")
    return project / "data" / "fer2013"


def run_split(load_stage, project, drop_duplicates=True, seed=42, out="data/split"):
    return load_stage("split").split(0.2, seed, drop_duplicates, in_dir=project / "data" / "fer2013",
                                     out_dir=project / out, metrics_path=project / out / "metrics.json")


def test_duplicates_are_counted_and_removed(project, fetched, load_stage, fer):
    metrics = run_split(load_stage, project, drop_duplicates=True)
    # later copies in train: dup1, dup2, leak2; train images in test: leak1, leak2
    assert metrics["duplicates_within_train"] == 3
    assert metrics["train_images_also_in_test"] == 2
    assert metrics["duplicates_removed"] == 4
    train, val = load_split(project / "data/split/train.npz"), load_split(project / "data/split/val.npz")
    names = set(train.names) | set(val.names)
    assert len(names) == len(train) + len(val) == 42
    assert not names & {"train/happy/Training_dup1.jpg", "train/happy/Training_dup2.jpg",
                        "train/sad/Training_leak1.jpg", "train/sad/Training_leak2.jpg"}
    assert fer.select("train", "happy")[0].entry in names  # the first copy stays
    all_images = np.concatenate([train.images, val.images])
    assert len({image.tobytes() for image in all_images}) == len(all_images)
    assert metrics["sizes"] == {"train": len(train), "val": len(val), "test": 21}
    assert json.loads((project / "data/split/metrics.json").read_text()) == metrics


def test_duplicates_are_kept_when_asked(project, fetched, load_stage):
    metrics = run_split(load_stage, project, drop_duplicates=False)
    assert (metrics["duplicates_within_train"], metrics["train_images_also_in_test"]) == (3, 2)
    assert metrics["duplicates_removed"] == 0
    assert metrics["sizes"]["train"] + metrics["sizes"]["val"] == 46


def test_validation_is_stratified_and_test_is_kept_as_given(project, fetched, load_stage):
    metrics = run_split(load_stage, project)
    assert metrics["counts"]["val"] == {e: 1 for e in EMOTIONS}  # round(6 * 0.2) of each class
    given = load_split(fetched / "test.npz")
    test = load_split(project / "data/split/test.npz")
    np.testing.assert_array_equal(test.images, given.images)
    np.testing.assert_array_equal(test.labels, given.labels)


def test_same_seed_same_split_different_seed_different_split(project, fetched, load_stage):
    run_split(load_stage, project, seed=42, out="a")
    run_split(load_stage, project, seed=42, out="b")
    run_split(load_stage, project, seed=7, out="c")
    a, b, c = (load_split(project / out / "val.npz") for out in "abc")
    assert list(a.names) == list(b.names)
    np.testing.assert_array_equal(a.images, b.images)
    assert list(a.names) != list(c.names)
    assert (project / "a" / "train.npz").read_bytes() == (project / "b" / "train.npz").read_bytes()


def test_main_reads_its_params_and_writes_the_declared_outputs(project, fetched, load_stage, set_params):
    set_params(project, split={"val_fraction": 0.2, "seed": 1, "drop_duplicates": False})
    load_stage("split").main(*stage_args("split"))
    metrics = json.loads((project / "metrics/split.json").read_text())
    assert metrics["duplicates_removed"] == 0 and metrics["sizes"]["train"] + metrics["sizes"]["val"] == 46
    assert {p.name for p in (project / "data/split").iterdir()} == {"train.npz", "val.npz", "test.npz"}
