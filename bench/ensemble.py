"""Accuracy of several models averaged (an ensemble), on the validation split and PublicTest.

Usage: python bench/ensemble.py MODEL.keras MODEL.keras [...] [--tta none|flip|crops]

Needs data/split/{val,test}.npz (`dvc repro split`). Each model classifies every face once (with
the chosen test-time views); the script then prints the accuracy of every model alone and of every
subset of two or more, their probabilities averaged. This is how an ensemble teacher for
`train.teacher_model: [a.keras, b.keras, ...]` can be chosen before a 2-hour training run.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np

from emotion_recognition.data import load_split
from emotion_recognition.evaluation import predict_probabilities
from emotion_recognition.model import load_model
from emotion_recognition.tta import PRESETS, from_preset


def subset_accuracies(probabilities: list[np.ndarray], labels: np.ndarray) -> dict[tuple[int, ...], float]:
    """Accuracy of every non-empty subset of the models (by index), their probabilities averaged."""
    return {
        subset: float((np.mean([probabilities[i] for i in subset], axis=0).argmax(axis=1) == labels).mean())
        for size in range(1, len(probabilities) + 1)
        for subset in itertools.combinations(range(len(probabilities)), size)
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help=".keras files, each taking 48x48x1 faces and returning 7 probabilities")
    parser.add_argument("--tta", default="none", choices=sorted(PRESETS), help="each model's test-time views")
    args = parser.parse_args()
    tta = from_preset(args.tta)
    for model in args.models:
        if not Path(model).is_file():
            raise SystemExit(f"error: {model}: no such model file")
    splits = {}
    for split in ("val", "test"):
        path = Path(f"data/split/{split}.npz")
        if not path.is_file():
            raise SystemExit(f"error: {path} is missing: run `dvc repro split` first")
        splits[split] = load_split(path)
    probabilities = {split: [] for split in splits}
    for model_path in args.models:
        model = load_model(model_path)
        for split, data in splits.items():
            probabilities[split].append(predict_probabilities(model, data.images, tta))
    results = {split: subset_accuracies(probabilities[split], data.labels) for split, data in splits.items()}
    print(f"accuracy with {tta.describe()} per model (validation {len(splits['val'])} faces, "
          f"PublicTest {len(splits['test'])})")
    print(f"{'models':<60} {'validation':>10} {'PublicTest':>10}")
    for subset in results["val"]:
        names = " + ".join(Path(args.models[i]).name for i in subset)
        print(f"{names:<60} {results['val'][subset]:>10.2%} {results['test'][subset]:>10.2%}")


if __name__ == "__main__":
    main()
