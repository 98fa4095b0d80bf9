"""The one label order, and the fer2013.csv codes mapped onto it."""

import pytest

from emotion_recognition.labels import (
    CSV_CODE_TO_INDEX,
    EMOTION_INDEX,
    EMOTIONS,
    FER2013_CSV_ORDER,
    NUM_CLASSES,
    translate,
)


def test_label_order_is_the_image_folder_names_alphabetically():
    assert EMOTIONS == ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
    assert NUM_CLASSES == 7
    assert all(EMOTIONS[i] == name for name, i in EMOTION_INDEX.items())


def test_csv_codes_follow_the_original_challenge_order():
    # fer2013.csv: 0=angry 1=disgust 2=fear 3=happy 4=sad 5=surprise 6=neutral
    expected = {0: "angry", 1: "disgust", 2: "fear", 3: "happy", 4: "sad", 5: "surprise", 6: "neutral"}
    assert {code: EMOTIONS[index] for code, index in CSV_CODE_TO_INDEX.items()} == expected
    assert FER2013_CSV_ORDER == tuple(expected[i] for i in range(7))


def test_translations_cover_every_label():
    assert [translate(e, "es") for e in EMOTIONS] == [
        "enojo", "asco", "miedo", "felicidad", "neutral", "tristeza", "sorpresa"
    ]
    assert [translate(e) for e in EMOTIONS] == list(EMOTIONS)


def test_unknown_language_names_the_choices():
    with pytest.raises(ValueError, match=r"unknown language 'fr'.*\['en', 'es'\]"):
        translate("happy", "fr")
