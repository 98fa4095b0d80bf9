"""``params.yaml``, validated in one place.

Each DVC stage reads its own group (``load_params().train`` ...). Unknown keys and wrong types
are refused with a message that names the field, the value and what was expected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from emotion_recognition.tta import TestTimeAugmentation


class Group(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class DataParams(Group):
    source: str = Field(description="local path or http(s) URL of fer2013.zip (image folders) or fer2013.csv")
    sha256: str | None = Field(default=None, description="expected sha256 of the source file (optional)")


class FetchParams(Group):
    skip_bad_images: bool = False


class SplitParams(Group):
    val_fraction: float = Field(0.1, gt=0.0, lt=0.5)
    seed: int = 42
    drop_duplicates: bool = True


class AugmentParams(Group):
    seed: int = 7
    copies: int = Field(1, ge=0, le=20, description="augmented copies of every training image")
    min_per_class: int = Field(0, ge=0, description="add augmented copies of rarer classes up to this many images")
    flip: bool = True
    max_rotation: float = Field(10.0, ge=0, le=45, description="degrees")
    max_shift: float = Field(0.1, ge=0, le=0.3, description="fraction of the image side")
    zoom: float = Field(0.1, ge=0, le=0.5, description="max zoom in/out as a fraction")
    brightness: float = Field(0.2, ge=0, le=1)
    contrast: float = Field(0.2, ge=0, le=1)
    preview_images: int = Field(8, ge=1, le=32)


class ModelParams(Group):
    architecture: Literal["vgg", "mobilenetv2"] = "vgg"
    widths: list[int] = [32, 64, 128, 256]
    convs_per_block: int = Field(2, ge=1, le=4)
    dense_units: int = Field(256, ge=8)
    dropout: float = Field(0.4, ge=0, lt=1)
    # MobileNetV2 only
    input_size: int = Field(96, ge=32)
    weights: str = Field("none", description="'imagenet' (download), 'none', or a local weights file path")
    alpha: float = 1.0


class TrainParams(Group):
    seed: int = 1
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(128, ge=1)
    learning_rate: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    warmup_epochs: float = Field(1.0, ge=0)
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    precision: Literal["auto", "float32", "mixed_bfloat16"] = Field(
        "auto", description="auto: mixed_bfloat16 on CPUs with bf16 instructions (AVX512_BF16 or AMX-BF16), "
        "float32 elsewhere, where emulated bf16 trains about 14x slower")
    online_flip: bool = True
    online_shift: float = Field(0.1, ge=0, le=0.3)
    online_rotation: float = Field(0.0, ge=0, le=45, description="degrees, drawn per image every epoch")
    online_zoom: float = Field(0.0, ge=0, le=0.5)
    online_contrast: float = Field(0.0, ge=0, le=1)
    early_stopping_patience: int = Field(10, ge=0, description="stop after this many epochs without a better "
                                         "validation accuracy; 0: never stop early. Either way the best epoch's "
                                         "weights are kept")
    initial_model: str = Field("none", description="start from these weights instead of random ones: 'none', "
                               "'default' (the bundled default model) or the path of a .keras model "
                               "with the same architecture; for fine-tuning or continued training")
    limit_per_class: int = Field(0, ge=0, description="use at most this many training images per class (0: all); for smoke runs")

    @field_validator("batch_size")
    @classmethod
    def _reasonable_batch(cls, value: int) -> int:
        if value > 4096:
            raise ValueError("batch_size above 4096 will not fit the training machine")
        return value


class EvaluateParams(Group):
    flip_tta: bool = Field(True, description="test-time augmentation: also classify each face's mirror image")
    tta_zoom_crops: list[int] = Field(default_factory=list, description="test-time augmentation: centre crops "
                                      "(pixels, 24-47) of each face resized back to 48x48, one extra view each")
    tta_shift: int = Field(0, description="test-time augmentation: also classify each face moved this many "
                           "pixels left, right, up and down (0-8; 0: no shifted views)")
    register_model: bool = True

    @model_validator(mode="after")
    def _valid_tta(self) -> "EvaluateParams":
        self.tta()  # a ValueError names the bad crop size or shift
        return self

    def tta(self) -> TestTimeAugmentation:
        return TestTimeAugmentation(flip=self.flip_tta, zoom_crops=tuple(self.tta_zoom_crops), shift=self.tta_shift)


class Params(Group):
    data: DataParams
    fetch: FetchParams = FetchParams()
    split: SplitParams = SplitParams()
    augment: AugmentParams = AugmentParams()
    model: ModelParams = ModelParams()
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()


class ParamsError(ValueError):
    pass


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
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg'].removeprefix('Value error, ')} (got {e.get('input')!r})" for e in error.errors()
        )
        raise ParamsError(f"{path}: {problems}") from None


def flat_params(params: Params) -> dict[str, object]:
    """All params as ``group.key`` -> value, for MLflow."""
    flat: dict[str, object] = {}
    for group, values in params.model_dump().items():
        for key, value in values.items():
            flat[f"{group}.{key}"] = value
    return flat
