"""The bundled model's card is written from the pipeline's own params and metrics."""

import json
from pathlib import Path

import numpy as np
import yaml

from emotion_recognition.pipeline.bundle import model_card

ROOT = Path(__file__).resolve().parents[2]


def card_inputs():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    metrics = {name: json.loads((ROOT / f"metrics/{name}.json").read_text()) for name in ("train", "evaluate", "split")}
    return params, metrics["train"], metrics["evaluate"], metrics["split"], np.arange(49).reshape(7, 7)


def test_card_states_the_precision_and_cpu_the_run_used_not_the_auto_param():
    params, train, evaluation, split, matrix = card_inputs()
    params["train"]["precision"] = "auto"
    card = model_card(params, train, evaluation, split, matrix, {"precision": "float32", "cpu": "AMD EPYC"})
    assert "float32" in card and "2-core CPU (AMD EPYC)" in card and ", auto," not in card
    assert f"**{evaluation['accuracy']:.4f}**" in card
    assert "    angry    0    1    2    3    4    5    6\n  disgust    7    8" in card  # the matrix, rows true


def test_card_names_the_commit_and_mlflow_run_that_made_the_model():
    params, train, evaluation, split, matrix = card_inputs()
    run = {"precision": "float32", "cpu": "AMD EPYC", "run_id": "0123abcd", "git_commit": "8db14cf" + "0" * 33}
    card = model_card(params, train, evaluation, split, matrix, run)
    assert "from commit `8db14cf00000`, MLflow run `0123abcd`" in card
    assert "MLflow run" not in model_card(params, train, evaluation, split, matrix, {**run, "git_commit": ""})


def test_card_says_when_training_started_from_a_trained_model():
    params, train, evaluation, split, matrix = card_inputs()
    params["train"]["initial_model"] = "none"
    assert "initial_model" not in model_card(params, train, evaluation, split, matrix)
    params["train"]["initial_model"] = "default"
    assert "started from the weights of `default`" in model_card(params, train, evaluation, split, matrix)


def test_card_names_the_test_time_views_and_the_accuracy_of_fewer_views():
    params, train, evaluation, split, matrix = card_inputs()
    old = model_card(params, train, {k: v for k, v in evaluation.items() if k not in ("tta", "accuracy_single_view", "accuracy_flip")}, split, matrix)
    assert "horizontal-flip test-time augmentation" in old and "face alone" not in old  # metrics of an older evaluate stage
    evaluation = {**evaluation, "tta": "16 views (flip, zoom 44px, zoom 42px, zoom 40px, shift 3px x4)",
                  "accuracy": 0.6771, "accuracy_single_view": 0.6506, "accuracy_flip": 0.6659}
    card = model_card(params, train, evaluation, split, matrix)
    assert "(3589 images, 16 views (flip, zoom 44px, zoom 42px, zoom 40px, shift 3px x4))" in card
    assert "**0.6771**" in card and "one view, `EMOTION_TTA=none`): 0.6506" in card and "its check recorded there): 0.6659" in card


def test_card_quotes_the_starting_models_training_when_it_continued_the_bundled_model():
    params, train, evaluation, split, matrix = card_inputs()
    previous = model_card(params, {**train, "train_seconds": 4440}, evaluation, split, matrix,
                          {"precision": "mixed_bfloat16", "cpu": "Intel Xeon"})
    params["train"].update(initial_model="default", learning_rate=0.0005)
    card = model_card(params, train, evaluation, split, matrix, previous_card=previous)
    quote = card.split("The starting model (the card bundled with it):\n\n", 1)[1].split("\n## ", 1)[0]
    assert "> Trained on a 2-core CPU (Intel Xeon) (no GPU) in 74 minutes" in quote
    assert all(line.startswith(">") for line in quote.strip().splitlines())
    assert "peak lr 0.0005" in card.split("The starting model")[0]  # this model's, outside the quote
    # the next generation quotes this card's own training, not the quote within it
    grandchild = model_card(params, train, evaluation, split, matrix, previous_card=card)
    assert "> >" not in grandchild and grandchild.count("The starting model") == 1
    params["train"]["initial_model"] = "data/other.keras"  # not the bundled model: its card says nothing about it
    assert "The starting model" not in model_card(params, train, evaluation, split, matrix, previous_card=previous)


def test_the_bundled_card_is_quoted_only_if_training_started_from_that_very_file(tmp_path):
    from emotion_recognition.pipeline.bundle import starting_model_card
    from emotion_recognition.model_files import sha256_file

    model, card = tmp_path / "model.keras", tmp_path / "MODEL_CARD.md"
    model.write_bytes(b"weights"), card.write_text("# card")
    assert starting_model_card({"initial_model_sha256": sha256_file(model)}, card, model) == "# card"
    assert starting_model_card({"initial_model_sha256": "0" * 64}, card, model) == ""  # e.g. bundled twice
    assert starting_model_card({"initial_model_sha256": None}, card, model) == ""
    assert starting_model_card(None, card, model) == ""


def test_known_limits_name_this_models_hardest_classes_and_their_confusions():
    from emotion_recognition.pipeline.bundle import hardest_classes
    from emotion_recognition.labels import EMOTIONS

    recall = {"angry": 0.57, "disgust": 0.64, "fear": 0.43, "happy": 0.89, "neutral": 0.69, "sad": 0.55, "surprise": 0.81}
    support = {name: (56 if name == "disgust" else 500) for name in EMOTIONS}
    per_class = {name: {"recall": recall[name], "support": support[name]} for name in EMOTIONS}
    matrix = np.zeros((7, 7), int)
    fear, sad, neutral, angry = (EMOTIONS.index(n) for n in ("fear", "sad", "neutral", "angry"))
    matrix[fear, [fear, sad, neutral, angry]] = [213, 109, 60, 46]
    matrix[sad, [sad, neutral, fear]] = [359, 138, 58]
    line = hardest_classes(per_class, matrix)
    assert line.startswith("- The hardest classes for this model on PublicTest: fear (recall 0.43; mostly mistaken "
                           "for sad (109) and neutral (60)) and sad (recall 0.55; mostly mistaken for neutral (138) "
                           "and fear (58)).")
    assert "disgust (56 faces)" in line and "angry" not in line  # only the two lowest recalls, two confusions each
    counts = {name: 3000 for name in EMOTIONS} | {"disgust": 329}
    assert hardest_classes(per_class, matrix, train_counts=counts).endswith(
        "disgust also has the fewest training images (329, topped up with augmented copies).")
    assert hardest_classes(per_class, matrix).endswith("so those figures are noisy.")  # no counts: no claim
    # no matrix (e.g. a card written without plots/confusion.csv): recall only; no rare class: no caveat
    per_class["disgust"]["support"] = 500
    assert hardest_classes(per_class) == ("- The hardest classes for this model on PublicTest: fear (recall 0.43) "
                                          "and sad (recall 0.55).")
    # a class with no test faces is neither "hardest" (its recall 0 means nothing) nor "few"
    per_class["fear"]["support"] = 0
    assert hardest_classes(per_class) == ("- The hardest classes for this model on PublicTest: sad (recall 0.55) "
                                          "and angry (recall 0.57).")
    assert hardest_classes({}) == ""



def test_card_states_the_fixed_plan():
    params, train, evaluation, split, matrix = card_inputs()
    card = model_card(params, {**train, "epochs_run": 12, "best_epoch": 11}, evaluation, split, matrix)
    assert (f"{params['train']['warmup_epochs']} warm-up epoch, then cosine decay to 0 at the last planned epoch" in card
            and f"12 of {params['train']['epochs']} planned epochs" in card and "at epoch 11" in card)
