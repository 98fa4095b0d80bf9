"""Model soup: average the weights of several fine-tunes of one model and compare accuracy.

Usage: python bench/model_soup.py MODEL.keras MODEL.keras [...] [--views none,flip,crops]
       [--recalibrate-bn] [--out soup.keras]

Needs data/split/{val,test}.npz (`dvc repro split`). The models must share one architecture and
should be fine-tuned from the same starting weights (e.g. runs with `train.initial_model=default`):
averaging unrelated runs gives a broken model. Every weight is averaged, batch-norm moving
statistics included; --recalibrate-bn instead re-estimates those statistics for the averaged
weights on 50 batches of data/augmented/train.npz (as `train.average_last_epochs` does).

Prints the accuracy of each model and of the average on validation and PublicTest for each
test-time-augmentation preset in --views (default: the face alone and with its mirror image;
`crops`, 16 views, takes about 8x as long). Wortsman et al. 2022, "Model soups": like SWA, but
across runs rather than along one.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from emotion_recognition.data import load_split
from emotion_recognition.evaluation import predict_probabilities
from emotion_recognition.model import load_model
from emotion_recognition.training import average_weights, recalibrate_batch_norm
from emotion_recognition.tta import from_preset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help=".keras models fine-tuned from the same weights")
    parser.add_argument("--views", default="none,flip", help="comma-separated presets: none, flip, crops")
    parser.add_argument("--recalibrate-bn", action="store_true",
                        help="re-estimate batch-norm statistics of the average on training images")
    parser.add_argument("--out", help="save the averaged model here")
    args = parser.parse_args()
    try:
        views = {name: from_preset(name) for name in args.views.split(",")}
    except ValueError as error:
        raise SystemExit(f"--views: {error}") from None
    if len(set(args.models)) < 2:
        raise SystemExit("give at least two different models to average")
    splits = {}
    for name in ("val", "test"):
        path = Path(f"data/split/{name}.npz")
        if not path.is_file():
            raise SystemExit(f"{path} is missing: run `dvc repro split` first")
        splits[name] = load_split(path)
    models = {path: load_model(path) for path in args.models}
    soup = load_model(args.models[0])
    try:
        soup.set_weights(average_weights([model.get_weights() for model in models.values()]))
    except ValueError as error:
        raise SystemExit(str(error)) from None
    if args.recalibrate_bn:
        recalibrate_batch_norm(soup, load_split("data/augmented/train.npz").images)
    if args.out:
        soup.save(args.out)
    print(f"{'model':<50} " + " ".join(f"{split + ' ' + view:>12}" for split in splits for view in views))
    soup_name = f"average of {len(models)}" + (", BN recalibrated" if args.recalibrate_bn else "")
    for name, model in [*models.items(), (soup_name, soup)]:
        cells = []
        for data in splits.values():
            for tta in views.values():
                probabilities = predict_probabilities(model, data.images, tta)
                cells.append(float((probabilities.argmax(axis=1) == data.labels).mean()))
        print(f"{name[-50:]:<50} " + " ".join(f"{cell:>12.2%}" for cell in cells), flush=True)


if __name__ == "__main__":
    main()
