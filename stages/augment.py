"""DVC stage `augment`: materialise the training set with augmented copies (optionally rebalanced).

`python stages/augment.py TRAIN_NPZ OUT_DIR` (dvc.yaml: data/split/train.npz data/augmented) writes
OUT_DIR/train.npz, plots/augment_preview.png and metrics/augment.json.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from emotion_recognition.pipeline.augment import AugmentConfig, augment_image, augment_split
from emotion_recognition.pipeline.data import Split, class_counts, load_split, save_split
from emotion_recognition.labels import EMOTIONS
from emotion_recognition.pipeline.params import load_params
from emotion_recognition.pipeline.stage_io import run_stage, save_figure, write_json

PREVIEW = Path("plots/augment_preview.png")
METRICS = Path("metrics/augment.json")


def save_preview(split: Split, config: AugmentConfig, n: int, seed: int, path: Path, variants: int = 5) -> None:
    """Grid: one row per original (first column) beside ``variants`` augmentations of it."""
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(split), size=min(n, len(split)), replace=False)
    fig, axes = plt.subplots(len(picks), variants + 1, figsize=(1.2 * (variants + 1), 1.3 * len(picks)), squeeze=False)
    for row, index in enumerate(picks):
        images = [split.images[index]] + [augment_image(split.images[index], config, rng) for _ in range(variants)]
        for col, image in enumerate(images):
            axes[row, col].imshow(image, cmap="gray", vmin=0, vmax=255)
            axes[row, col].axis("off")
        axes[row, 0].set_title(f"{EMOTIONS[split.labels[index]]}", fontsize=7)
    fig.suptitle("original | augmented copies", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def main(train_path: str, out_dir: str) -> None:
    p = load_params().augment
    config = AugmentConfig(p.flip, p.max_rotation, p.max_shift, p.zoom, p.brightness, p.contrast)
    train = load_split(train_path)
    augmented = augment_split(train, config, p.copies, p.min_per_class, p.seed)
    save_split(augmented, Path(out_dir) / "train.npz")
    save_preview(train, config, p.preview_images, p.seed, PREVIEW)
    metrics = {"images_before": len(train), "images_after": len(augmented), "counts": class_counts(augmented.labels)}
    write_json(METRICS, metrics)
    print(f"augment: {len(train)} -> {len(augmented)} images; {metrics['counts']}")


if __name__ == "__main__":
    run_stage(main)
