"""DVC stage `split`: report/remove pixel duplicates, stratified train/validation split.

`python stages/split.py IN_DIR OUT_DIR` (dvc.yaml: data/fer2013 data/split) writes OUT_DIR/{train,val,test}.npz
and metrics/split.json.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from emotion_recognition.pipeline.data import class_counts, load_split, save_split
from emotion_recognition.pipeline.params import load_params
from emotion_recognition.pipeline.split import find_duplicates, stratified_split
from emotion_recognition.pipeline.stage_io import run_stage, write_json

METRICS = Path("metrics/split.json")


def split(
    val_fraction: float, seed: int, drop_duplicates: bool,
    in_dir: Path, out_dir: Path, metrics_path: Path = METRICS,
) -> dict:
    train, test = load_split(in_dir / "train.npz"), load_split(in_dir / "test.npz")
    duplicates = find_duplicates(train, test)
    dropped = duplicates["repeated_in_train"] | duplicates["in_test"]
    if drop_duplicates:
        train = train.subset(np.flatnonzero(~dropped))
    train_index, val_index = stratified_split(train.labels, val_fraction, seed)
    parts = {"train": train.subset(train_index), "val": train.subset(val_index), "test": test}
    for name, part in parts.items():
        save_split(part, out_dir / f"{name}.npz")
    metrics = {
        "duplicates_within_train": int(duplicates["repeated_in_train"].sum()),
        "train_images_also_in_test": int(duplicates["in_test"].sum()),
        "duplicates_removed": int(dropped.sum()) if drop_duplicates else 0,
        "sizes": {name: len(part) for name, part in parts.items()},
        "counts": {name: class_counts(part.labels) for name, part in parts.items()},
    }
    write_json(metrics_path, metrics)
    return metrics


def main(in_dir: str, out_dir: str) -> None:
    p = load_params().split
    metrics = split(p.val_fraction, p.seed, p.drop_duplicates, Path(in_dir), Path(out_dir))
    print(
        f"split: {metrics['sizes']}; {metrics['duplicates_within_train']} duplicate copies in train, "
        f"{metrics['train_images_also_in_test']} train images also in test, {metrics['duplicates_removed']} removed"
    )


if __name__ == "__main__":
    run_stage(main)
