"""Bundle the pipeline's latest model as the project's default model, with its model card.

    python -m emotion_recognition.pipeline.bundle

Copies the train stage's output (data/model: model.keras and run.json, the MLflow run that made it)
to emotion_recognition/default_model/ with its recorded PublicTest accuracy (evaluation.json), makes its INT8 OpenVINO copy (default_model/openvino/) and
writes MODEL_CARD.md beside it from params.yaml and the metrics the DVC stages wrote, so every
figure in the card comes from the run that produced the file. tests/test_dvc_lock.py checks that
the two copied files are dvc.lock's ``data/model``.
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import yaml

from emotion_recognition.pipeline.data import load_split
from emotion_recognition.model_files import sha256_file, BUNDLED_MODEL, REGISTERED_MODEL_NAME
from emotion_recognition.pipeline.evaluation import confusion_matrix
from emotion_recognition.labels import EMOTION_INDEX, EMOTIONS
from emotion_recognition.pipeline.stage_io import atomic_path

DEFAULT_MODEL_DIR = BUNDLED_MODEL.parent


def fewer_views(evaluation: dict) -> str:
    """The accuracy of the face alone and with its mirror, when the evaluate stage measured them."""
    lines = [f"- Accuracy of the face alone (one view, `EMOTION_TTA=none`): {evaluation['accuracy_single_view']:.4f}"
             if "accuracy_single_view" in evaluation else "",
             f"- Accuracy of the face and its mirror (`EMOTION_TTA=flip`, Keras; the service and the CLI run the INT8 copy in `openvino/`, its check recorded there): {evaluation['accuracy_flip']:.4f}"
             if "accuracy_flip" in evaluation else ""]
    return "".join(line + "\n" for line in lines if line)


STARTING_MODEL = "The starting model (the card bundled with it):"


def training_section(card: str) -> str:
    """The text under '## Training' in a model card ('' if it has none), without the quote of its
    own starting model's card, so quotes do not nest generation after generation."""
    _, found, rest = card.partition("\n## Training\n")
    return rest.split("\n## ", 1)[0].split(STARTING_MODEL, 1)[0].strip() if found else ""


def hardest_classes(per_class: dict, matrix: np.ndarray | None = None, count: int = 2, few: int = 100,
                    train_counts: dict | None = None) -> str:
    """The known-limits line on classes, from this model's own PublicTest figures: the ``count``
    lowest-recall classes with what they are mistaken for (rows of ``matrix`` = true class, in
    EMOTIONS order), and the classes with fewer than ``few`` test faces, whose figures are noisy
    (with the rarest training class, from ``train_counts``, when it is one of them)."""
    tested = [name for name in per_class if per_class[name]["support"] > 0]  # recall of no faces is not 0
    if not tested:
        return ""
    ranked = sorted(tested, key=lambda name: per_class[name]["recall"])[:count]
    parts = []
    for name in ranked:
        text = f"{name} (recall {per_class[name]['recall']:.2f}"
        if matrix is not None:
            row = matrix[EMOTION_INDEX[name]].astype(int).copy()
            row[EMOTION_INDEX[name]] = -1
            mistaken = [EMOTIONS[i] for i in np.argsort(-row, kind="stable")[:2] if row[i] > 0]
            if mistaken:
                text += "; mostly mistaken for " + " and ".join(f"{m} ({row[EMOTION_INDEX[m]]})" for m in mistaken)
        parts.append(text + ")")
    line = f"- The hardest classes for this model on PublicTest: {' and '.join(parts)}."
    rare = [f"{name} ({v['support']} faces)" for name, v in per_class.items() if 0 < v["support"] < few]
    if rare:
        line += f" Few test faces for {', '.join(rare)}, so those figures are noisy"
        rarest = min(train_counts, key=train_counts.get) if train_counts else None
        line += (f"; {rarest} also has the fewest training images ({train_counts[rarest]}, topped up with "
                 "augmented copies)." if rarest in per_class and 0 < per_class[rarest]["support"] < few else ".")
    return line


def matrix_text(matrix: np.ndarray) -> str:
    """The confusion matrix as aligned text rows, each led by its true class."""
    return "\n".join(f"{name:>9} " + " ".join(f"{v:4d}" for v in row) for name, row in zip(EMOTIONS, matrix))


def model_card(params: dict, train: dict, evaluation: dict, split: dict, matrix: np.ndarray,
               run: dict | None = None, previous_card: str = "") -> str:
    """``matrix``: PublicTest's confusion matrix (rows true, columns predicted, EMOTIONS order).
    ``previous_card``: the card of the model bundled before this one, quoted as the starting
    point when training started from it (``train.initial_model: default``)."""
    per_class = "\n".join(
        f"| {name} | {v['precision']:.3f} | {v['recall']:.3f} | {v['f1']:.3f} | {v['support']} |"
        for name, v in evaluation["per_class"].items()
    )
    m, t = params["model"], params["train"]
    run = run or {}
    precision = run.get("precision", t["precision"])
    where = f" ({run['cpu']})" if run.get("cpu") else ""
    made_by = (f" Made by `dvc repro` from commit `{run['git_commit'][:12]}`, MLflow run `{run['run_id']}` "
               "(`data/model/run.json`, bundled beside the model)." if run.get("run_id") and run.get("git_commit") else "")
    initial = t["initial_model"]
    start = "" if initial == "none" else (f" Training started from the weights of `{initial}` (train.initial_model"
                                          f"{'; the model bundled before this one' if initial == 'default' else ''}), not from random ones.")
    earlier = training_section(previous_card) if initial == "default" else ""
    if earlier:  # last: the quote is a block of its own
        start += f"\n\n{STARTING_MODEL}\n\n" + "\n".join(f"> {line}".rstrip() for line in earlier.splitlines())
    epochs = (f"{train['epochs_run']} of {t['epochs']} planned epochs (best validation accuracy {train['val_accuracy']:.4f} "
              f"at epoch {train['best_epoch']})")
    return f"""# Model card: bundled default emotion classifier

## What it is
- Architecture: `{m['architecture']}` (widths {m['widths']}, {m['convs_per_block']} convs per block, dense {m['dense_units']}, dropout {m['dropout']}), {train['parameters']:,} parameters, float32 Keras 3 file (`model.keras`).
- Input: (N, 48, 48, 1) float32 grayscale faces, raw pixel values 0-255 (scaling is inside the model).
- Output: (N, 7) softmax probabilities in this order: {', '.join(EMOTIONS)}.

## Data
FER2013 (Goodfellow et al., 2013), the image-folder release (train 28,709 / PublicTest 3,589).
Exact pixel duplicates were removed from train ({split['duplicates_within_train']} repeated copies, {split['train_images_also_in_test']} train images whose pixels also appear in PublicTest), then a stratified {params['split']['val_fraction']:.0%} validation split:
train {split['sizes']['train']}, validation {split['sizes']['val']}, test {split['sizes']['test']} images.
Augment stage: {params['augment']['copies']} stored augmented copies per image (flip, rotation ±{params['augment']['max_rotation']}°, shift, zoom, brightness/contrast), rarer classes topped up to {params['augment']['min_per_class']} images with such copies.
Online augmentation drawn afresh every epoch: flip {t['online_flip']}, shift {t['online_shift']}, rotation ±{t['online_rotation']}°, zoom {t['online_zoom']}, contrast {t['online_contrast']} (0: off).

## Training
`dvc repro` with these `params.yaml` values: AdamW (peak lr {t['learning_rate']}, weight decay {t['weight_decay']}, {t['warmup_epochs']} warm-up epoch, then cosine decay to 0 at the last planned epoch), batch {t['batch_size']}, label smoothing {t['label_smoothing']}, {precision}, {epochs}.
Trained on a 2-core CPU{where} (no GPU) in {train['train_seconds'] / 60:.0f} minutes, median {train['images_per_second']:.0f} images/s (`metrics/train.json`).{made_by}{start}

## Results on FER2013 PublicTest ({evaluation['images']} images, {evaluation.get('tta') or ('horizontal-flip test-time augmentation' if evaluation['flip_tta'] else 'no test-time augmentation')})
Written by the evaluate stage of the run that made this file (`metrics/evaluate.json`, `dvc metrics show`); `python -m pytest tests/test_bundled_model_quality.py -s` re-measures the file on a fixed 1,000-face PublicTest subset with the mirror.

- Accuracy: **{evaluation['accuracy']:.4f}**
- Macro-F1: **{evaluation['macro_f1']:.4f}**
{fewer_views(evaluation)}
| emotion | precision | recall | F1 | support |
| --- | --- | --- | --- | --- |
{per_class}

Confusion matrix (rows true, columns predicted, order as above):

```
{matrix_text(matrix)}
```

![confusion matrix](confusion_matrix.png)

## Known limits
{hardest_classes(evaluation["per_class"], matrix, train_counts=split.get("counts", {}).get("train"))}
- FER2013 faces are 48x48, mostly frontal, tightly cropped, low-resolution web images: side views, small or occluded faces, strong lighting and faces framed differently from FER2013 crops degrade accuracy.
- Labels are the seven FER2013 categories of posed/spontaneous expressions; they say what a face shows, not what a person feels.
- Dataset biases of FER2013 (age, ethnicity, image sources) carry over to the model.

## Retrain
`make repro` (or `dvc repro`), then `python -m emotion_recognition.pipeline.bundle` to make the new model the bundled default.
Change knobs with e.g. `dvc exp run -S train.epochs=50`; every run is logged to MLflow and registered as `{REGISTERED_MODEL_NAME}`.
"""


def starting_model_card(run: dict | None, card_path: Path, model_path: Path) -> str:
    """The bundled card if the bundled model is the very file training started from (its sha256 is
    in data/model/run.json), else '': bundling twice, or after another model, must not quote the
    wrong card."""
    wanted = (run or {}).get("initial_model_sha256")
    if not wanted or not card_path.is_file() or not model_path.is_file() or sha256_file(model_path) != wanted:
        return ""
    return card_path.read_text()


def bundle_openvino(model_path: Path, split_dir: Path = Path("data/split")) -> Path:
    """The bundled model's INT8 OpenVINO copy, alone in default_model/openvino/: calibrated on the
    validation split, checked against Keras on PublicTest (emotion_recognition/runtime.py)."""
    from emotion_recognition.model_files import load_model
    from emotion_recognition.runtime import CALIBRATION_FACES, convert

    val, test = (load_split(split_dir / f"{name}.npz") for name in ("val", "test"))
    folder = DEFAULT_MODEL_DIR / "openvino"
    shutil.rmtree(folder, ignore_errors=True)
    return convert(load_model(model_path), folder, sha256_file(model_path), test.images, "PublicTest faces",
                   val.images[:CALIBRATION_FACES])


def write_evaluation_record(accuracy: float, split_dir: Path = Path("data/split")) -> None:
    """default_model/evaluation.json: the PublicTest accuracy the evaluate stage measured for this
    file with params.yaml's views, so that stage need not measure the bundled yardstick again
    (emotion_recognition/pipeline/registry.py reads it only for this very file, faces and views)."""
    from emotion_recognition.pipeline.params import load_params
    from emotion_recognition.pipeline.registry import BUNDLED_EVALUATION, evaluation_record

    test = load_split(split_dir / "test.npz")
    record = evaluation_record(BUNDLED_MODEL, accuracy, test.images, test.labels, load_params().evaluate.tta())
    with atomic_path(DEFAULT_MODEL_DIR / BUNDLED_EVALUATION) as tmp:
        tmp.write_text(json.dumps(record, indent=1) + "\n")


def run_commit(run_id: str) -> str:
    """The commit the train stage ran from: its MLflow run's ``git_commit`` tag ('' with a warning
    when the tracking store cannot tell)."""
    import mlflow

    from emotion_recognition.pipeline.tracking import configure_mlflow

    try:
        configure_mlflow()
        return mlflow.get_run(run_id).data.tags.get("git_commit", "")
    except Exception as error:  # the card is still right without it; say why it is missing
        print(f"bundle: warning: no commit for MLflow run {run_id}: {error}", file=sys.stderr)
        return ""


def main() -> None:
    source = Path("data/model/model.keras")
    if not source.is_file():
        print("error: no data/model/model.keras: run `dvc repro` first", file=sys.stderr)
        sys.exit(2)
    params = yaml.safe_load(Path("params.yaml").read_text())
    metrics = {name: json.loads(Path(f"metrics/{name}.json").read_text()) for name in ("train", "evaluate", "split")}
    with open("plots/confusion.csv") as f:
        rows = list(csv.DictReader(f))
    matrix = confusion_matrix(
        np.array([EMOTION_INDEX[r["actual"]] for r in rows]), np.array([EMOTION_INDEX[r["predicted"]] for r in rows])
    )
    run_file = Path("data/model/run.json")
    run = json.loads(run_file.read_text()) if run_file.is_file() else None
    card_path = DEFAULT_MODEL_DIR / "MODEL_CARD.md"
    previous_card = starting_model_card(run, card_path, BUNDLED_MODEL)  # before the file is replaced
    DEFAULT_MODEL_DIR.mkdir(exist_ok=True)
    with atomic_path(BUNDLED_MODEL) as tmp:
        shutil.copyfile(source, tmp)
    if run is not None:  # the run's record: with model.keras, byte for byte dvc.lock's data/model
        with atomic_path(DEFAULT_MODEL_DIR / run_file.name) as tmp:
            shutil.copyfile(run_file, tmp)
        run = {**run, "git_commit": run_commit(run["run_id"])}
    shutil.copyfile("plots/confusion_matrix.png", DEFAULT_MODEL_DIR / "confusion_matrix.png")
    write_evaluation_record(metrics["evaluate"]["accuracy"])
    bundle_openvino(BUNDLED_MODEL)
    card = model_card(params, metrics["train"], metrics["evaluate"], metrics["split"], matrix, run, previous_card)
    with atomic_path(card_path) as tmp:
        tmp.write_text(card)
    print(f"bundled {BUNDLED_MODEL} ({BUNDLED_MODEL.stat().st_size / 1e6:.1f} MB) and MODEL_CARD.md")


if __name__ == "__main__":
    main()
