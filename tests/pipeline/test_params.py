"""params.yaml validation: every problem is refused with a message naming the field."""

from pathlib import Path

import pytest
import yaml

from emotion_recognition.pipeline.params import ParamsError, Params, flat_params, load_params

REPO_PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


@pytest.fixture
def write(tmp_path):
    """Write the repository's params.yaml with ``changes`` applied; returns its path."""

    def write(changes: dict | None = None, text: str | None = None) -> Path:
        path = tmp_path / "params.yaml"
        if text is not None:
            path.write_text(text)
            return path
        params = yaml.safe_load(REPO_PARAMS.read_text())
        for dotted, value in (changes or {}).items():
            group, key = dotted.split(".")
            if value is DELETE:
                del params[group][key]
            else:
                params.setdefault(group, {})[key] = value
        path.write_text(yaml.safe_dump(params))
        return path

    return write


DELETE = object()


def test_the_repository_params_are_valid():
    params = load_params(REPO_PARAMS)
    assert isinstance(params, Params)
    assert params.model.architecture in ("vgg", "mobilenetv2")


@pytest.mark.parametrize(
    "changes, field, detail",
    [
        ({"train.epochs": 0}, "train.epochs", "greater than or equal to 1"),
        ({"train.epoch": 3}, "train.epoch", "Extra inputs are not permitted"),
        ({"split.val_fraction": 0.5}, "split.val_fraction", "less than 0.5"),
        ({"split.val_fraction": "a tenth"}, "split.val_fraction", "valid number"),
        ({"train.precision": "float16"}, "train.precision", "'auto', 'float32' or 'mixed_bfloat16'"),
        ({"model.architecture": "resnet"}, "model.architecture", "'vgg' or 'mobilenetv2'"),
        ({"train.time_budget_minutes": 120}, "train.time_budget_minutes", "Extra inputs are not permitted"),
        ({"train.batch_size": 10000}, "train.batch_size", "above 4096"),
        ({"augment.copies": -1}, "augment.copies", "greater than or equal to 0"),
        ({"data.source": DELETE}, "data.source", "missing (params.yaml must set it"),
        ({"train.epochs": DELETE}, "train.epochs", "missing (params.yaml must set it"),
        ({"fetch.skip_bad_images": "sometimes"}, "fetch.skip_bad_images", "valid boolean"),
        ({"evaluate.tta_zoom_crops": [44, 52]}, "evaluate", "zoom crop 52 px: expected 24-47"),
        ({"evaluate.tta_shift": 12}, "evaluate", "shift 12 px: expected 0-8"),
        ({"evaluate.tta_zoom_crops": 44}, "evaluate.tta_zoom_crops", "valid list"),
        ({"train.early_stopping_patience": -1}, "train.early_stopping_patience", "greater than or equal to 0"),
    ],
)
def test_invalid_params_are_refused_naming_the_field(write, changes, field, detail):
    path = write(changes)
    with pytest.raises(ParamsError) as error:
        load_params(path)
    message = str(error.value)
    assert message.startswith(f"{path}: ")
    assert f"{field}: " in message
    assert detail in message


def test_unknown_group_is_refused(write):
    path = write({"trian.epochs": 3})
    with pytest.raises(ParamsError, match=r"trian: Extra inputs are not permitted"):
        load_params(path)


def test_every_problem_is_reported_at_once(write):
    with pytest.raises(ParamsError) as error:
        load_params(write({"train.epochs": 0, "split.seed": "x"}))
    assert "train.epochs" in str(error.value) and "split.seed" in str(error.value)


def test_invalid_yaml_and_missing_file_are_explained(write, tmp_path):
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(write(text="train: [epochs: 1\n"))
    with pytest.raises(ParamsError, match="run the stages from the project root"):
        load_params(tmp_path / "absent.yaml")


def test_params_yaml_is_the_only_source_of_defaults(write):
    """No field has a default in code, so a value can't silently differ from params.yaml's."""
    from emotion_recognition.pipeline.params import Group

    groups = [field.annotation for field in Params.model_fields.values()]
    assert all(issubclass(group, Group) for group in groups)
    with_defaults = [f"{group.__name__}.{name}" for group in [Params, *groups]
                     for name, field in group.model_fields.items() if not field.is_required()]
    assert not with_defaults
    with pytest.raises(ParamsError, match=r"train: missing .*evaluate: missing"):
        load_params(write(text="data:\n  source: x.zip\n  sha256: null\nfetch: {skip_bad_images: false}\n"
                                "split: {val_fraction: 0.1, seed: 1, drop_duplicates: true}\n"
                                "augment: {seed: 1, copies: 0, min_per_class: 0, flip: true, max_rotation: 0, "
                                "max_shift: 0, zoom: 0, brightness: 0, contrast: 0, preview_images: 1}\n"
                                "model: {architecture: vgg, widths: [8], convs_per_block: 1, dense_units: 8, "
                                "dropout: 0, input_size: 96, weights: none, alpha: 1.0}\n"))


def test_flat_params_name_every_field_by_group():
    params = load_params(REPO_PARAMS)
    flat = flat_params(params)
    assert flat["train.epochs"] == params.train.epochs
    assert flat["data.source"] == params.data.source
    groups = params.model_dump()
    assert len(flat) == sum(len(values) for values in groups.values())
