"""``params.yaml``, validated in one place.

Each DVC stage reads its own group (``load_params().train`` ...). Unknown keys and wrong types
are refused with a message that names the field, the value and what was expected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from emotion_recognition.tta import TestTimeAugmentation, from_preset


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
    architecture: Literal["vgg", "resnet", "mobilenetv2"] = "vgg"
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
    optimizer: Literal["adamw", "sgd"] = "adamw"
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
    online_erasing: float = Field(0.0, ge=0, le=1, description="random erasing (Keras factor): a rectangle of "
                                  "2-33% of the face replaced by noise with probability drawn in [0, factor]")
    mixup_alpha: float = Field(0.0, ge=0, le=10, description="mixup: 0 off; > 0 blends each training batch's "
                               "faces and targets pairwise with a ratio drawn from Beta(alpha, alpha) (0.2-0.4 is usual)")
    cutmix_alpha: float = Field(0.0, ge=0, le=10, description="CutMix: 0 off; > 0 pastes a box from a partner face, "
                                "its area share drawn from Beta(alpha, alpha) (1.0 is usual); with mixup on too, each batch "
                                "uses one of the two at even odds")
    early_stopping_patience: int = Field(10, ge=0, description="stop after this many epochs without a better "
                                         "validation accuracy; 0: never stop early. Either way the best epoch's "
                                         "weights are kept")
    time_budget_minutes: float = Field(0, ge=0, description="0: train `epochs` epochs; > 0: end training "
                                       "within this many minutes from the stage's start (a teacher's pass counts; "
                                       "saving and logging afterwards do not): after each epoch, plan as many epochs "
                                       "(at most `epochs`) as fit at the pace of the last 3 epochs, with the learning-rate "
                                       "decay and the averaging window fitted to them")
    lr_refit: Literal["restart", "keep_phase"] = Field(
        "restart", description="how a time-budget re-plan during the learning-rate decay refits it: restart: a new "
        "half-cosine from the rate reached over the epochs left (re-plans every few epochs keep the rate near its "
        "peak until the last epochs); keep_phase: the rest of one cosine over the final plan")
    lr_decay_share: float = Field(1.0, gt=0, le=1, description="share of the run after the warm-up over which "
                                  "the learning rate decays to 0; below 1 the peak is held until then (warm-up, "
                                  "hold, decay), and a time-budget re-plan during the hold moves the decay to "
                                  "the same share of the new plan (or starts it at once if that point has passed)")
    average_last_epochs: int = Field(0, ge=0, description="0: keep the best epoch; N: also average the weights "
                                     "of the last N epochs (SWA) and keep the average if its validation accuracy is higher")
    initial_model: str = Field("none", description="start from these weights instead of random ones: 'none', "
                               "'default' (the bundled default model) or the path of a .keras model "
                               "with the same architecture; for fine-tuning or continued training")
    teacher_model: str | list[str] = Field("none", description="knowledge distillation: 'none', 'default' (the bundled "
                               "default model), the path of a .keras model (any architecture taking 48x48x1 faces and returning "
                               "the 7 probabilities) or a list of them (an ensemble teacher: their probabilities averaged), whose "
                               "test-time-augmented predictions on the training images become part of the targets")
    teacher_tta: str = Field("crops", description="the teacher's test-time augmentation preset: none, flip or crops")
    teacher_weight: float = Field(0.5, ge=0, le=1, description="share of each training target taken from the "
                                  "teacher's probabilities; the rest is the one-hot label")
    teacher_weight_end: float | None = Field(None, ge=0, le=1, description="null: the teacher's share stays "
                                             "`teacher_weight` throughout; a number: the share falls linearly from "
                                             "`teacher_weight` at the first epoch to this at the last planned one")
    teacher_views: Literal["stored", "augmented"] = Field("stored", description="stored: the teacher scores each "
                                                          "training face once, before training, and every augmented view "
                                                          "of it gets that target; augmented: the teacher scores every "
                                                          "augmented view the student trains on, during training (its "
                                                          "forward pass costs time every step; needs teacher_tta none)")
    soup_runs: int = Field(1, ge=1, le=16, description="1: one run; N > 1: N runs from `initial_model` with seeds "
                           "seed, seed+1, ... (each at most `epochs` long, a time budget shared between them), whose weights "
                           "are averaged (a model soup) and the average kept if it beats every run on validation")
    limit_per_class: int = Field(0, ge=0, description="use at most this many training images per class (0: all); for smoke runs")

    @field_validator("batch_size")
    @classmethod
    def _reasonable_batch(cls, value: int) -> int:
        if value > 4096:
            raise ValueError("batch_size above 4096 will not fit the training machine")
        return value

    @field_validator("soup_runs")
    @classmethod
    def _soup_needs_a_shared_start(cls, value: int, info: ValidationInfo) -> int:
        if value > 1 and info.data.get("initial_model", "none") in ("none", ""):
            raise ValueError(f"{value} runs need train.initial_model (default or a .keras path): averaging the "
                             "weights of runs from different random starts gives a broken model")
        return value

    @field_validator("teacher_model")
    @classmethod
    def _teachers(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list):
            if not value or any(v in ("none", "") for v in value):
                raise ValueError("a list of teachers needs at least one model, and no 'none' in it")
            if len(set(value)) < len(value):
                raise ValueError(f"a teacher is listed twice in {value}: each one counts once in the average")
            return value[0] if len(value) == 1 else value
        return value

    @field_validator("teacher_weight_end")
    @classmethod
    def _decay_needs_a_teacher(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is not None and info.data.get("teacher_model", "none") in ("none", ""):
            raise ValueError(f"{value} is the teacher's share at the end, but train.teacher_model is 'none': "
                             "set a teacher or leave teacher_weight_end null")
        return value

    @field_validator("teacher_tta")
    @classmethod
    def _known_teacher_tta(cls, value: str) -> str:
        from_preset(value)  # a ValueError lists the presets
        return value.strip().lower()

    @model_validator(mode="after")
    def _augmented_views_need_one_view(self) -> "TrainParams":
        if self.teacher_views == "augmented" and self.teacher_tta != "none":
            raise ValueError(f"teacher_views 'augmented' scores each augmented view the student sees, so "
                             f"teacher_tta must be 'none', not {self.teacher_tta!r}")
        return self


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
