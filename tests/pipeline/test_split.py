"""Exact-pixel duplicates and the stratified, seeded train/validation split."""

import numpy as np
import pytest

from emotion_recognition.pipeline.data import Split
from emotion_recognition.pipeline.split import find_duplicates, pixel_hashes, stratified_split


def images(*values):
    """One flat 48x48 image per value (equal values: exact pixel duplicates)."""
    return np.stack([np.full((48, 48), v, np.uint8) for v in values])


def split_of(values, labels=None):
    labels = np.zeros(len(values), np.int64) if labels is None else np.asarray(labels)
    return Split(images(*values), labels, np.array([f"img{i}" for i in range(len(values))]))


def test_pixel_hashes_are_equal_exactly_for_equal_pixels():
    a = images(1, 1, 2)
    a[2, 0, 0] = 1  # differs from image 0 in one pixel only
    hashes = pixel_hashes(a)
    assert hashes[0] == hashes[1] != pixel_hashes(images(1, 2))[1]
    b = a.copy()
    b[2, 47, 47] ^= 1
    assert pixel_hashes(b)[2] != hashes[2]


def test_duplicates_inside_train_count_every_copy_after_the_first():
    # 10 three times, 20 twice, 30 once -> 2 + 1 later copies
    train = split_of([10, 20, 10, 30, 10, 20])
    test = split_of([99])
    found = find_duplicates(train, test)
    assert found["repeated_in_train"].tolist() == [False, False, True, False, True, True]
    assert not found["in_test"].any()


def test_train_images_also_in_test_are_all_marked():
    train = split_of([10, 20, 10, 30])
    test = split_of([10, 40, 30, 30])
    found = find_duplicates(train, test)
    assert found["in_test"].tolist() == [True, False, True, True]
    assert found["repeated_in_train"].sum() == 1


@pytest.fixture
def labels():
    # unbalanced classes, like FER2013 (class 1 is rare, class 6 absent)
    counts = [40, 5, 30, 60, 20, 10, 0]
    rng = np.random.default_rng(0)
    return rng.permutation(np.repeat(np.arange(7), counts))


def test_split_is_stratified_disjoint_and_complete(labels):
    train, val = stratified_split(labels, 0.2, seed=42)
    assert np.intersect1d(train, val).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(len(labels)))
    for label in range(6):
        n = (labels == label).sum()
        assert (labels[val] == label).sum() == round(n * 0.2)
    assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)


def test_same_seed_same_split_different_seed_different_split(labels):
    first = stratified_split(labels, 0.2, seed=42)
    again = stratified_split(labels.copy(), 0.2, seed=42)
    other = stratified_split(labels, 0.2, seed=43)
    np.testing.assert_array_equal(first[1], again[1])
    np.testing.assert_array_equal(first[0], again[0])
    assert not np.array_equal(first[1], other[1])
    # stratification holds for every seed
    assert np.array_equal(np.bincount(labels[other[1]], minlength=7), np.bincount(labels[first[1]], minlength=7))
