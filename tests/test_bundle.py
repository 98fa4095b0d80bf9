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
