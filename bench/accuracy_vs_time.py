"""How accuracy grows with training time: every finished training run in the project's MLflow store.

Usage: python bench/accuracy_vs_time.py [--out bench/results/accuracy_vs_time.png] [--checkpoints 15,30,45,60,90,120]
       [--store sqlite:///other/mlflow.db ...]

Reads the per-epoch ``epoch_seconds`` and ``val_accuracy`` that the train stage logs, and the
``test_accuracy`` (PublicTest) that the evaluate stage adds to the same run. Prints a Markdown table
(one row per run: model, epochs, training minutes, validation accuracy reached after N minutes,
PublicTest accuracy) and saves a plot of validation accuracy against cumulative training minutes.
``--store`` (repeatable) reads runs from other MLflow stores too, e.g. experiments run in other
checkouts; the default is the project's own store (``MLFLOW_TRACKING_URI`` or ``mlflow.db``).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emotion_recognition.stage_io import atomic_path


@dataclass
class RunCurve:
    run_id: str
    label: str
    minutes: np.ndarray  # cumulative training minutes at the end of each epoch
    val_accuracy: np.ndarray
    test_accuracy: float | None
    epochs_planned: int  # the time budget's plan (`planned_epochs`) if it had one, else train.epochs

    def val_accuracy_at(self, minute: float) -> float | None:
        """Best validation accuracy among epochs finished within ``minute`` minutes."""
        done = self.minutes <= minute
        return float(self.val_accuracy[done].max()) if done.any() else None


def describe(params: dict) -> str:
    architecture = params.get("model.architecture", "?")
    if architecture in ("vgg", "resnet"):
        return f"{architecture} {params.get('model.widths', '?')} x{params.get('model.convs_per_block', '?')}"
    return f"{architecture} {params.get('model.input_size', '?')}px"


def load_curves(tracking_uri: str, experiment_name: str) -> list[RunCurve]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return []
    curves = []
    runs = client.search_runs([experiment.experiment_id], filter_string="attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time ASC"])
    for run in runs:
        seconds = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "epoch_seconds")}
        val = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "val_accuracy")}
        steps = sorted(set(seconds) & set(val))
        if not steps:
            continue
        minutes = np.cumsum([seconds[s] for s in steps]) / 60.0
        curves.append(RunCurve(
            run_id=run.info.run_id,
            label=describe(run.data.params),
            minutes=minutes,
            val_accuracy=np.array([val[s] for s in steps]),
            test_accuracy=run.data.metrics.get("test_accuracy"),
            epochs_planned=int(run.data.metrics.get("planned_epochs") or run.data.params.get("train.epochs", len(steps))),
        ))
    return curves


def markdown_table(curves: list[RunCurve], checkpoints: list[float]) -> str:
    def pct(value: float | None) -> str:
        return "–" if value is None else f"{100 * value:.1f}%"

    header = (["run", "model", "epochs run / planned", "train min"]
              + [f"val @ {m:g} min" for m in checkpoints] + ["best val", "PublicTest"])
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for curve in curves:
        cells = [curve.run_id[:8], curve.label, f"{len(curve.minutes)} / {curve.epochs_planned}",
                 f"{curve.minutes[-1]:.0f}"]
        cells += [pct(curve.val_accuracy_at(m)) for m in checkpoints]
        cells += [pct(float(curve.val_accuracy.max())), pct(curve.test_accuracy)]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def save_plot(curves: list[RunCurve], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for curve in curves:
        test = "" if curve.test_accuracy is None else f", PublicTest {100 * curve.test_accuracy:.1f}%"
        ax.plot(curve.minutes, 100 * curve.val_accuracy, marker=".", label=f"{curve.run_id[:8]} {curve.label}{test}")
    ax.set_xlabel("cumulative training time (minutes, this 2-core CPU)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title("FER2013: validation accuracy vs training time")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def main() -> None:
    from emotion_recognition.tracking import EXPERIMENT_NAME, tracking_uri

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/accuracy_vs_time.png"))
    parser.add_argument("--checkpoints", default="15,30,45,60,90,120",
                        help="comma-separated minutes at which to read the validation accuracy")
    parser.add_argument("--store", action="append", metavar="URI",
                        help="an MLflow tracking URI to read runs from (repeatable; default: the project's store)")
    args = parser.parse_args()
    checkpoints = [float(m) for m in args.checkpoints.split(",")]
    uris = args.store or [tracking_uri()]
    curves = [curve for uri in uris for curve in load_curves(uri, EXPERIMENT_NAME)]
    if not curves:
        raise SystemExit(f"no finished training runs with per-epoch metrics in {', '.join(uris)} (run `dvc repro` first)")
    print(markdown_table(curves, checkpoints))
    save_plot(curves, args.out)
    print(f"\nplot: {args.out}")


if __name__ == "__main__":
    main()
