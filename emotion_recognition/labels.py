"""The one definition of the emotion labels and their order.

Every model output, metric table and API response uses ``EMOTIONS`` order (alphabetical,
the folder names of the FER2013 image-folder zip). The original ``fer2013.csv`` numbers the
classes differently; ``FER2013_CSV_ORDER`` maps its codes onto ours.
"""

EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
NUM_CLASSES = len(EMOTIONS)
EMOTION_INDEX = {name: i for i, name in enumerate(EMOTIONS)}

# fer2013.csv: 0=angry 1=disgust 2=fear 3=happy 4=sad 5=surprise 6=neutral
FER2013_CSV_ORDER: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
CSV_CODE_TO_INDEX = {code: EMOTION_INDEX[name] for code, name in enumerate(FER2013_CSV_ORDER)}

TRANSLATIONS: dict[str, dict[str, str]] = {
    "en": {e: e for e in EMOTIONS},
    "es": {
        "angry": "enojo",
        "disgust": "asco",
        "fear": "miedo",
        "happy": "felicidad",
        "neutral": "neutral",
        "sad": "tristeza",
        "surprise": "sorpresa",
    },
}


def translate(emotion: str, language: str = "en") -> str:
    """Label ``emotion`` in ``language`` ('en' or 'es')."""
    try:
        return TRANSLATIONS[language][emotion]
    except KeyError:
        raise ValueError(
            f"unknown language {language!r}: expected one of {sorted(TRANSLATIONS)}"
        ) from None
