"""Test-time augmentation views on the validation split and PublicTest: which views pay off.

Usage: python bench/tta_views.py [--model emotion_recognition/default_model/model.keras]
       [--zooms 46,44,42,40,38] [--shift 3]

Needs data/split/{val,test}.npz (`dvc repro split`). Every view of ``emotion_recognition.tta``
(the face, centre zooms, shifts, and the mirror image of each) is classified once; accuracy is
then printed for sets of those views, so a set can be chosen on validation and read on test.
The `crops` preset (the evaluate stage's default and the service's ``EMOTION_TTA=crops``) was
chosen this way.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from emotion_recognition.data import load_split
from emotion_recognition.evaluation import predict_view_probabilities
from emotion_recognition.model import load_model
from emotion_recognition.model_files import BUNDLED_MODEL
from emotion_recognition.tta import PRESETS, TestTimeAugmentation


def view_sets(zooms: tuple[int, ...], shift: int) -> dict[str, list[int]]:
    """Named sets of view indices into ``TestTimeAugmentation(True, zooms, shift).views`` (no flip half)."""
    zoom_index = {crop: 1 + i for i, crop in enumerate(zooms)}
    shifts = list(range(1 + len(zooms), 5 + len(zooms))) if shift else []
    sets = {"face only": [0]} | ({f"shift {shift}px x4": [0, *shifts]} if shift else {})
    sets |= {f"zoom {crop}px": [0, index] for crop, index in zoom_index.items()}
    sets["all zooms"] = [0, *zoom_index.values()]
    if shift:
        sets[f"all zooms + shift {shift}px x4"] = [0, *zoom_index.values(), *shifts]
    for name, preset in PRESETS.items():
        if preset.zoom_crops and set(preset.zoom_crops) <= set(zooms) and preset.shift in (0, shift):
            sets[f"preset {name!r}"] = [0, *(zoom_index[c] for c in preset.zoom_crops), *(shifts if preset.shift else [])]
    return sets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(BUNDLED_MODEL))
    parser.add_argument("--zooms", default="46,44,42,40,38")
    parser.add_argument("--shift", type=int, default=3)
    args = parser.parse_args()
    zooms = tuple(int(v) for v in args.zooms.split(","))
    tta = TestTimeAugmentation(flip=True, zoom_crops=zooms, shift=args.shift)
    model = load_model(args.model)
    half = tta.view_count // 2
    results = {}
    for split in ("val", "test"):
        path = Path(f"data/split/{split}.npz")
        if not path.is_file():
            raise SystemExit(f"{path} is missing: run `dvc repro split` first")
        data = load_split(path)
        views = predict_view_probabilities(model, data.images, tta)
        for name, indices in view_sets(zooms, args.shift).items():
            for flip in (False, True):
                chosen = indices + [half + i for i in indices] if flip else indices
                accuracy = float((views[chosen].mean(axis=0).argmax(axis=1) == data.labels).mean())
                results.setdefault((name, flip, len(chosen)), {})[split] = accuracy
    print(f"{args.model}: accuracy by test-time views (validation {len(load_split('data/split/val.npz'))} faces, "
          f"PublicTest {len(load_split('data/split/test.npz'))})")
    print(f"{'views':<40} {'flip':<5} {'count':>5} {'validation':>10} {'PublicTest':>10}")
    for (name, flip, count), accuracy in results.items():
        print(f"{name:<40} {'yes' if flip else 'no':<5} {count:>5} {accuracy['val']:>10.2%} {accuracy['test']:>10.2%}")


if __name__ == "__main__":
    main()
