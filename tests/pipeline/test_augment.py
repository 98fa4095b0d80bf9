"""Offline augmentation: the transforms, determinism for a seed, class rebalancing."""

import numpy as np
import pytest

from emotion_recognition.pipeline.augment import AugmentConfig, augment_image, augment_split, copies_per_image
from emotion_recognition.pipeline.data import Split

NOTHING = AugmentConfig(flip=False, max_rotation=0, max_shift=0, zoom=0, brightness=0, contrast=0)


@pytest.fixture
def face():
    image = np.random.default_rng(1).integers(0, 256, (48, 48)).astype(np.uint8)
    image[:, :10] = 255  # bright left edge: a flip is visible
    return image


@pytest.fixture
def train():
    rng = np.random.default_rng(2)
    labels = np.repeat(np.arange(7), [8, 2, 5, 12, 6, 4, 3])
    return Split(rng.integers(0, 256, (len(labels), 48, 48)).astype(np.uint8), labels,
                 np.array([f"train/x/{i}.jpg" for i in range(len(labels))]))


def test_no_transform_returns_the_image(face):
    np.testing.assert_array_equal(augment_image(face, NOTHING, np.random.default_rng(0)), face)


def test_flip_only_returns_the_image_or_its_mirror(face):
    config = AugmentConfig(flip=True, max_rotation=0, max_shift=0, zoom=0, brightness=0, contrast=0)
    rng = np.random.default_rng(0)
    outputs = [augment_image(face, config, rng) for _ in range(20)]
    mirrored = [np.array_equal(o, face[:, ::-1]) for o in outputs]
    unchanged = [np.array_equal(o, face) for o in outputs]
    assert all(m or u for m, u in zip(mirrored, unchanged))
    assert any(mirrored) and any(unchanged)


def test_default_transform_changes_the_image_within_bounds(face):
    out = augment_image(face, AugmentConfig(), np.random.default_rng(0))
    assert out.shape == (48, 48) and out.dtype == np.uint8
    assert not np.array_equal(out, face) and not np.array_equal(out, face[:, ::-1])


def test_brightness_moves_the_mean(face):
    config = AugmentConfig(flip=False, max_rotation=0, max_shift=0, zoom=0, brightness=0.2, contrast=0)
    means = [augment_image(face, config, np.random.default_rng(s)).mean() for s in range(10)]
    assert max(means) - min(means) > 10


def test_same_seed_same_images_different_seed_different_images(train):
    first = augment_split(train, AugmentConfig(), copies=2, min_per_class=0, seed=7)
    again = augment_split(train, AugmentConfig(), copies=2, min_per_class=0, seed=7)
    other = augment_split(train, AugmentConfig(), copies=2, min_per_class=0, seed=8)
    np.testing.assert_array_equal(first.images, again.images)
    np.testing.assert_array_equal(first.labels, again.labels)
    assert not np.array_equal(first.images, other.images)
    np.testing.assert_array_equal(first.labels, other.labels)


def test_originals_come_first_then_labelled_copies(train):
    out = augment_split(train, AugmentConfig(), copies=2, min_per_class=0, seed=7)
    n = len(train)
    assert len(out) == 3 * n
    np.testing.assert_array_equal(out.images[:n], train.images)
    assert list(out.names[:n]) == list(train.names)
    assert all(name.endswith("#aug") for name in out.names[n:])
    # every copy keeps the label of the image it was made from
    for name, label in zip(out.names[n:], out.labels[n:]):
        original = list(train.names).index(name.removesuffix("#aug"))
        assert train.labels[original] == label
    assert np.bincount(out.labels, minlength=7).tolist() == [3 * c for c in np.bincount(train.labels, minlength=7)]


def test_copies_per_image_tops_rare_classes_up_to_min_per_class():
    labels = np.array([0] * 3 + [1] * 10)
    per_image = copies_per_image(labels, copies=1, min_per_class=10)
    # class 0: 3 originals + 3 copies = 6, 4 short -> 4 extra copies spread over its 3 images
    assert per_image[:3].tolist() == [3, 2, 2]
    assert per_image[3:].tolist() == [1] * 10


def test_rebalancing_reaches_min_per_class_and_leaves_large_classes(train):
    out = augment_split(train, AugmentConfig(), copies=0, min_per_class=10, seed=7)
    before = np.bincount(train.labels, minlength=7)
    after = np.bincount(out.labels, minlength=7)
    for label in range(7):
        assert after[label] == max(before[label], 10)


def test_no_copies_no_rebalancing_is_the_identity(train):
    out = augment_split(train, AugmentConfig(), copies=0, min_per_class=0, seed=7)
    np.testing.assert_array_equal(out.images, train.images)
    np.testing.assert_array_equal(out.labels, train.labels)
