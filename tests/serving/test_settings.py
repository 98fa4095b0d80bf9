"""serving/settings.py: every EMOTION_* variable in one class; bad values name the variable."""

from __future__ import annotations

import pytest

from emotion_recognition.detection import DetectionConfig
from serving.settings import ServingSettings, SettingsError, load_settings


def test_defaults_without_environment():
    settings = load_settings({})
    assert settings == ServingSettings()
    assert settings.tta == "flip" and settings.model_tag is None
    assert settings.detection_overrides() == {}  # the detector module keeps its own defaults


def test_values_are_parsed_and_detection_names_mapped():
    settings = load_settings({"EMOTION_MAX_IMAGE_BYTES": "1024", "EMOTION_TTA": "crops", "EMOTION_FACE_MARGIN": "0.1",
                              "EMOTION_MIN_FACE_SIZE": "30", "EMOTION_SKIP_STARTUP_CHECK": "1", "OTHER": "x"})
    assert settings.max_image_bytes == 1024 and settings.tta == "crops" and settings.skip_startup_check
    assert settings.detection_overrides() == {"margin": 0.1, "min_face_size": 30}
    assert DetectionConfig(**settings.detection_overrides()).margin == 0.1


def test_bad_values_are_named_one_line_each():
    with pytest.raises(SettingsError) as error:
        load_settings({"EMOTION_MAX_IMAGE_BYTES": "lots", "EMOTION_TTA": "ten-crop", "EMOTION_SCALE_FACTOR": "0.9",
                       "EMOTION_MAX_VIDEO_FRAMES": "0"})
    message = str(error.value)
    assert "EMOTION_MAX_IMAGE_BYTES='lots': Input should be a valid integer" in message
    assert "EMOTION_TTA='ten-crop': Input should be 'none', 'flip' or 'crops'" in message
    assert "EMOTION_SCALE_FACTOR='0.9': Input should be greater than 1" in message
    assert "EMOTION_MAX_VIDEO_FRAMES='0': Input should be greater than or equal to 1" in message
    assert len(message.splitlines()) == 5


def test_a_misspelt_variable_is_named_with_its_close_match():
    with pytest.raises(SettingsError) as error:
        load_settings({"EMOTION_MAX_IMAGE_BYTE": "1024", "EMOTION_SOMETHING_ELSE": "x", "EMOTION_TTA": "none"})
    assert str(error.value).splitlines()[1:3] == [
        "  EMOTION_MAX_IMAGE_BYTE is not a setting (did you mean EMOTION_MAX_IMAGE_BYTES?)",
        "  EMOTION_SOMETHING_ELSE is not a setting",
    ]


def test_the_packages_own_variables_are_not_misspellings():
    # EMOTION_CACHE_DIR is read by emotion_recognition.runtime (where OpenVINO copies are cached)
    assert load_settings({"EMOTION_CACHE_DIR": "/tmp/x", "EMOTION_TTA": "none"}).tta == "none"
    with pytest.raises(SettingsError, match="EMOTION_CACHE_DIRS is not a setting"):
        load_settings({"EMOTION_CACHE_DIRS": "/tmp/x"})


@pytest.mark.parametrize("environ, threads", [
    ({"EMOTION_CPU_THREADS": "2"}, 1),  # the default 2 workers: one core each
    ({"EMOTION_CPU_THREADS": "8", "EMOTION_WORKERS": "2"}, 4),
    ({"EMOTION_CPU_THREADS": "2", "EMOTION_WORKERS": "1"}, 2),
    ({"EMOTION_CPU_THREADS": "1", "EMOTION_WORKERS": "3"}, 1),  # never 0 (0 would mean every core)
])
def test_each_http_worker_detects_on_its_share_of_the_cores(environ, threads):
    assert load_settings(environ).detection().threads == threads


def test_detection_threads_cannot_be_negative():
    with pytest.raises(ValueError, match="threads must be >= 0"):
        DetectionConfig(threads=-1)
