"""The bundled model's card is written from the pipeline's own params and metrics."""

import json
from pathlib import Path

import yaml

from emotion_recognition.bundle import model_card

ROOT = Path(__file__).resolve().parents[1]


def card_inputs():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    metrics = {name: json.loads((ROOT / f"metrics/{name}.json").read_text()) for name in ("train", "evaluate", "split")}
    return params, metrics["train"], metrics["evaluate"], metrics["split"], ["angry 1 2 3"]


def test_card_states_the_precision_and_cpu_the_run_used_not_the_auto_param():
    params, train, evaluation, split, rows = card_inputs()
    params["train"]["precision"] = "auto"
    card = model_card(params, train, evaluation, split, rows, {"precision": "float32", "cpu": "AMD EPYC"})
    assert "float32" in card and "2-core CPU (AMD EPYC)" in card and ", auto," not in card
    assert f"**{evaluation['accuracy']:.4f}**" in card


def test_card_says_when_training_started_from_a_trained_model():
    params, train, evaluation, split, rows = card_inputs()
    params["train"]["initial_model"] = "none"
    assert "initial_model" not in model_card(params, train, evaluation, split, rows)
    params["train"]["initial_model"] = "default"
    assert "started from the weights of `default`" in model_card(params, train, evaluation, split, rows)


def test_card_says_when_the_model_was_distilled_from_a_teacher():
    params, train, evaluation, split, rows = card_inputs()
    params["train"]["teacher_model"] = "none"
    assert "distillation" not in model_card(params, train, evaluation, split, rows)
    params["train"].update(teacher_model="default", teacher_tta="crops", teacher_weight=0.75, label_smoothing=0.1)
    card = model_card(params, {**train, "teacher_val_accuracy": 0.6733}, evaluation, split, rows)
    assert ("0.25 x the one-hot label + 0.75 x the probabilities of the teacher `default` (train.teacher_model; "
            "the model bundled before this one) averaged over its `crops` test-time views, which scored 0.6733 "
            "on validation, before label smoothing 0.1.") in card


def test_card_names_the_test_time_views_and_the_accuracy_of_fewer_views():
    params, train, evaluation, split, rows = card_inputs()
    old = model_card(params, train, {k: v for k, v in evaluation.items() if k not in ("tta", "accuracy_single_view", "accuracy_flip")}, split, rows)
    assert "horizontal-flip test-time augmentation" in old and "face alone" not in old  # metrics of an older evaluate stage
    evaluation = {**evaluation, "tta": "16 views (flip, zoom 44px, zoom 42px, zoom 40px, shift 3px x4)",
                  "accuracy": 0.6771, "accuracy_single_view": 0.6506, "accuracy_flip": 0.6659}
    card = model_card(params, train, evaluation, split, rows)
    assert "(3589 images, 16 views (flip, zoom 44px, zoom 42px, zoom 40px, shift 3px x4))" in card
    assert "**0.6771**" in card and "one view, `EMOTION_TTA=none`): 0.6506" in card and "the service's default): 0.6659" in card
