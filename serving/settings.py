"""Every serving setting in one place: ``EMOTION_*`` environment variables, checked at start-up.

``load_settings()`` reads them; serving/service.py calls it once per process and passes the result
down. A bad value (``EMOTION_MAX_IMAGE_BYTES=lots``) stops the server with one line per problem
naming the variable, the value and what is expected, not a stack trace. Detection settings left
unset keep ``DetectionConfig``'s own defaults (so the detector module stays the one definition of
them). A misspelt variable is an error too, naming the close match.
"""

from __future__ import annotations

import difflib
import os

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from emotion_recognition.detection import DetectionConfig
from emotion_recognition.media import VideoLimits
from emotion_recognition.runtime import CACHE_DIR_VARIABLE, Runtime
from emotion_recognition.tta import Preset

MB = 1024 * 1024
ENV_PREFIX = "EMOTION_"


class ServingSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    # which model: a BentoML store tag; unset = fer-emotion:latest if imported, else the bundled model
    model_tag: str | None = None
    # classifier engine (emotion_recognition.runtime): openvino, Keras when it is not installed
    runtime: Runtime = "openvino"
    # OpenVINO threads per model call (0: every core): 1 leaves the other core to detection, which
    # runs beside it (views/s of 3 faces + mirrors 1.6x those of 2 threads, docs/decisions.md)
    runtime_threads: int = Field(1, ge=0)
    tta: Preset = "flip"  # test-time augmentation (emotion_recognition.tta.PRESETS)
    # detection (None: DetectionConfig's default)
    detector: str | None = None
    scale_factor: float | None = Field(None, gt=1.0)
    min_neighbors: int | None = Field(None, ge=0)
    min_face_size: int | None = Field(None, ge=1)
    face_margin: float | None = Field(None, ge=-0.3, le=1.0)  # None: the detector's calibrated framing
    yunet_model: str | None = None  # path of the YuNet ONNX file (docs/detection.md)
    # request limits (413 over them)
    max_request_bytes: int = Field(256 * MB, ge=1)
    max_image_bytes: int = Field(20 * MB, ge=1)
    max_image_pixels: int = Field(40_000_000, ge=1)
    max_frames_per_request: int = Field(64, ge=1)
    max_request_pixels: int = Field(64 * 1280 * 720, ge=1)  # all frames of one /analyze_frames request
    max_video_bytes: int = Field(200 * MB, ge=1)
    max_video_frames: int = Field(2000, ge=1)  # analysed frames per video
    max_video_decoded_frames: int = Field(VideoLimits.max_decoded_frames, ge=1)  # frames read from one video
    max_video_pixels: int = Field(VideoLimits.max_pixels, ge=1)  # decoded frames x width x height per video
    # work layout
    cpu_threads: int = Field(default_factory=lambda: max(os.cpu_count() or 1, 1), ge=1)
    # HTTP service processes (the classifier has one of its own): 2 hold 1.36x the requests/s of 1 at
    # 16 clients on 2 cores (detection holds the GIL, so one process detects on one core; bench/README.md)
    workers: int = Field(2, ge=1)
    model_batch: int = Field(256, ge=1)  # views per model call (faces x TTA views)
    # HTTP guard (serving/limits.py): API requests doing work at once (429 over it); an upload must
    # keep arriving at min_upload_rate bytes/s after upload_grace_s seconds (408 if slower)
    max_concurrency: int = Field(64, ge=1)
    upload_grace_s: float = Field(10.0, gt=0)
    min_upload_rate: int = Field(16 * 1024, ge=1)
    skip_startup_check: bool = False

    def detection_overrides(self) -> dict:
        """The detection settings that were set, under DetectionConfig's field names."""
        names = {"detector": "detector", "scale_factor": "scale_factor", "min_neighbors": "min_neighbors",
                 "min_face_size": "min_face_size", "face_margin": "margin",
                 "yunet_model": "yunet_model"}
        return {field: getattr(self, name) for name, field in names.items() if getattr(self, name) is not None}

    def detection(self) -> DetectionConfig:
        """The service's face detection: these settings over DetectionConfig's defaults, with a
        share of the cores per HTTP worker for yunet on OpenVINO (2 workers of 1 thread held
        65.7-67.4 requests/s at 16 clients, against 52.7-56.6 with every core each: bench/README.md)."""
        return DetectionConfig(**self.detection_overrides(), threads=max(1, self.cpu_threads // self.workers))


class SettingsError(ValueError):
    """Bad ``EMOTION_*`` values; the message has one line per variable."""


def load_settings(environ: dict[str, str] | None = None) -> ServingSettings:
    """The settings from the environment, or SettingsError naming each bad variable."""
    environ = os.environ if environ is None else environ
    values = {key[len(ENV_PREFIX):].lower(): value for key, value in environ.items() if key.startswith(ENV_PREFIX)}
    library = {CACHE_DIR_VARIABLE[len(ENV_PREFIX):].lower()}  # EMOTION_* variables the package reads itself
    unknown = sorted(set(values) - set(ServingSettings.model_fields) - library)
    if unknown:
        lines = [f"{ENV_PREFIX}{name.upper()} is not a setting" + "".join(
            f" (did you mean {ENV_PREFIX}{close.upper()}?)" for close in difflib.get_close_matches(name, ServingSettings.model_fields, 1))
            for name in unknown]
        raise SettingsError("invalid serving settings:\n  " + "\n  ".join(lines + ["(the settings are listed in docs/serving.md)"]))
    try:
        # init values (not the env source) so that a test can pass its own environment
        return ServingSettings.model_validate(values)
    except ValidationError as error:
        lines = []
        for problem in error.errors():
            name = ENV_PREFIX + str(problem["loc"][0]).upper() if problem["loc"] else "EMOTION_*"
            lines.append(f"{name}={values.get(str(problem['loc'][0]) if problem['loc'] else '', '')!r}: {problem['msg']}")
        raise SettingsError("invalid serving settings:\n  " + "\n  ".join(lines)) from None
