"""``params.yaml``, validated in one place.

params.yaml is the only source of the pipeline's settings: this schema has no defaults, so every
field must be set there (a missing one is refused, as are unknown keys and wrong types, with a
message that names the field, the value and what was expected). Each DVC stage reads its own
group (``load_params().train`` ...).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from emotion_recognition.pipeline.distribute import Strategy
from emotion_recognition.pipeline.stage_io import StageInputError
from emotion_recognition.tta import TestTimeAugmentation


class Group(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class DataParams(Group):
    source: str
    sha256: str | None = Field(description="expected sha256 of the source file, or null not to check it")


class FetchParams(Group):
    skip_bad_images: bool


class SplitParams(Group):
    val_fraction: float = Field(gt=0.0, lt=0.5)
    seed: int
    drop_duplicates: bool


class AugmentParams(Group):
    seed: int
    copies: int = Field(ge=0, le=20, description="augmented copies of every training image")
    min_per_class: int = Field(ge=0, description="add augmented copies of rarer classes up to this many images")
    flip: bool
    max_rotation: float = Field(ge=0, le=45, description="degrees")
    max_shift: float = Field(ge=0, le=0.3, description="fraction of the image side")
    zoom: float = Field(ge=0, le=0.5, description="max zoom in/out as a fraction")
    brightness: float = Field(ge=0, le=1)
    contrast: float = Field(ge=0, le=1)
    preview_images: int = Field(ge=1, le=32)


class ModelParams(Group):
    architecture: Literal["vgg", "mobilenetv2"]
    widths: list[int]
    convs_per_block: int = Field(ge=1, le=4)
    dense_units: int = Field(ge=8)
    dropout: float = Field(ge=0, lt=1)
    # MobileNetV2 only
    input_size: int = Field(ge=32)
    weights: str = Field(description="'imagenet' (download), 'none', or a local weights file path")
    alpha: float


class TrainParams(Group):
    seed: int
    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    learning_rate: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    warmup_epochs: float = Field(ge=0)
    label_smoothing: float = Field(ge=0, lt=1)
    precision: Literal["auto", "float32", "mixed_bfloat16"] = Field(
        description="auto: mixed_bfloat16 on CPUs with bf16 instructions (AVX512_BF16 or AMX-BF16), "
        "float32 elsewhere, where emulated bf16 trains about 14x slower")
    online_flip: bool
    online_shift: float = Field(ge=0, le=0.3)
    online_rotation: float = Field(ge=0, le=45, description="degrees, drawn per image every epoch")
    online_zoom: float = Field(ge=0, le=0.5)
    online_contrast: float = Field(ge=0, le=1)
    early_stopping_patience: int = Field(ge=0, description="stop after this many epochs without a better "
                                         "validation accuracy; 0: never stop early. Either way the best epoch's "
                                         "weights are kept")
    initial_model: str = Field(description="start from these weights instead of random ones: 'none', "
                               "'default' (the bundled default model) or the path of a .keras model "
                               "with the same architecture; for fine-tuning or continued training")
    limit_per_class: int = Field(ge=0, description="use at most this many training images per class (0: all); for smoke runs")
    distribute: Strategy = Field(
        description="one_device: TensorFlow's default device; mirrored: MirroredStrategy over all local GPUs "
        "(without GPUs, 2 logical CPU devices); train.batch_size stays the global batch")

    @field_validator("batch_size")
    @classmethod
    def _reasonable_batch(cls, value: int) -> int:
        if value > 4096:
            raise ValueError("batch_size above 4096 will not fit the training machine")
        return value


class EvaluateParams(Group):
    flip_tta: bool = Field(description="test-time augmentation: also classify each face's mirror image")
    tta_zoom_crops: list[int] = Field(description="test-time augmentation: centre crops "
                                      "(pixels, 24-47) of each face resized back to 48x48, one extra view each")
    tta_shift: int = Field(description="test-time augmentation: also classify each face moved this many "
                           "pixels left, right, up and down (0-8; 0: no shifted views)")
    register_model: bool

    @model_validator(mode="after")
    def _valid_tta(self) -> "EvaluateParams":
        self.tta()  # a ValueError names the bad crop size or shift
        return self

    def tta(self) -> TestTimeAugmentation:
        return TestTimeAugmentation(flip=self.flip_tta, zoom_crops=tuple(self.tta_zoom_crops), shift=self.tta_shift)


class Params(Group):
    data: DataParams
    fetch: FetchParams
    split: SplitParams
    augment: AugmentParams
    model: ModelParams
    train: TrainParams
    evaluate: EvaluateParams


class ParamsError(StageInputError):
    """params.yaml is missing, not YAML, or has a value the schema refuses (the message names the field)."""


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"no {path} in {Path.cwd()}: run the stages from the project root")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ParamsError(f"{path} is not valid YAML: {error}") from None
    try:
        return Params.model_validate(raw)
    except ValidationError as error:
        problems = "; ".join(describe(e) for e in error.errors())
        raise ParamsError(f"{path}: {problems}") from None


def describe(error: dict) -> str:
    """One pydantic error as 'group.key: what is wrong (got value)'."""
    where = ".".join(str(p) for p in error["loc"])
    if error["type"] == "missing":
        return f"{where}: missing (params.yaml must set it: the code has no defaults)"
    return f"{where}: {error['msg'].removeprefix('Value error, ')} (got {error.get('input')!r})"


def flat_params(params: Params) -> dict[str, object]:
    """All params as ``group.key`` -> value, for MLflow."""
    flat: dict[str, object] = {}
    for group, values in params.model_dump().items():
        for key, value in values.items():
            flat[f"{group}.{key}"] = value
    return flat
