"""Replay a budgeted run's re-plans through the learning-rate schedule under both refit rules.

Usage: dvc repro > repro.log 2>&1; python bench/schedule_replay.py repro.log
       [--learning-rate 0.002] [--warmup-epochs 1] [--decay-share 1]

Reads the train stage's output (``Epoch k/N``, ``201/201 - ...``, ``time budget ...: planning /
re-planned to P of N epochs`` and the logged ``learning_rate``), refits ``WarmupCosine`` at the
same epochs to the same plans, and prints the rate at the end of every 5th epoch: as the run logged
it, under ``train.lr_refit: restart`` (each refit a new half-cosine from the rate reached; the only
rule before 2026-12-04), under ``keep_phase`` (the same cosine, from the phase reached), and one
cosine over the final plan (from the end of the warm-up, or of the hold with ``--decay-share``).
The logged column matches the rule the run used (given the run's ``train.lr_decay_share`` as
``--decay-share``).
"""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

from emotion_recognition.training import WarmupCosine


def read_train_log(path: Path) -> tuple[int, int, dict[int, int], dict[int, float]]:
    """Epochs asked for, steps per epoch, {epoch: plan made at its end}, {epoch: logged rate}."""
    asked = steps = epoch = 0
    plans: dict[int, int] = {}
    rates: dict[int, float] = {}
    for line in path.read_text().splitlines():
        if match := re.match(r"Epoch (\d+)/(\d+)", line):
            epoch, asked = int(match.group(1)), int(match.group(2))
        elif match := re.search(r"(?:planning|re-planned to) (\d+) of", line):
            plans[epoch] = int(match.group(1))
        if match := re.match(r"(\d+)/\1 - ", line):
            steps = int(match.group(1))
        if match := re.search(r"learning_rate: ([0-9.e+-]+)", line):
            rates[epoch] = float(match.group(1))
    if not (asked and steps and plans):
        raise SystemExit(f"{path}: no budgeted train-stage epochs found (needs the train stage's output "
                         "with train.time_budget_minutes > 0)")
    return asked, steps, plans, rates


def replay(asked: int, steps: int, plans: dict[int, int], peak: float, warmup_epochs: float,
           rule: str, decay_share: float = 1.0) -> dict[int, float]:
    schedule = WarmupCosine(peak, int(warmup_epochs * steps), asked * steps, refit=rule, decay_share=decay_share)
    rates = {}
    for epoch in range(1, max(plans.values()) + 1):
        if epoch in plans and plans[epoch] * steps != int(schedule.total_steps.numpy()):
            schedule.fit_to(plans[epoch] * steps, epoch * steps)
        rates[epoch] = float(schedule(epoch * steps))
        if epoch >= int(schedule.total_steps.numpy()) // steps:
            break
    return rates


def one_cosine(step: float, total: float, peak: float, warmup: float, decay_share: float = 1.0) -> float:
    """The rate of a run planned at ``total`` steps from the start: the peak until the hold ends,
    then one cosine to 0 at ``total``."""
    start = warmup + (1 - decay_share) * (total - warmup)
    if step <= start:
        return peak
    return 0.5 * peak * (1 + math.cos(math.pi * (step - start) / (total - start)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log", type=Path)
    parser.add_argument("--learning-rate", type=float, default=0.002, help="train.learning_rate of the run")
    parser.add_argument("--warmup-epochs", type=float, default=1.0, help="train.warmup_epochs of the run")
    parser.add_argument("--decay-share", type=float, default=1.0, help="train.lr_decay_share of the run")
    args = parser.parse_args()
    asked, steps, plans, logged = read_train_log(args.log)
    restart = replay(asked, steps, plans, args.learning_rate, args.warmup_epochs, rule="restart",
                     decay_share=args.decay_share)
    keep_phase = replay(asked, steps, plans, args.learning_rate, args.warmup_epochs, rule="keep_phase",
                        decay_share=args.decay_share)
    final = max(restart)
    warmup = args.warmup_epochs * steps
    print(f"{args.log}: {len(plans)} plans, final {final} epochs of {steps} steps")
    print(f"{'epoch':>5} {'logged':>9} {'restart':>9} {'keep_phase':>10} {'one cosine':>10}")
    for epoch in sorted(restart):
        if epoch % 5 and epoch < final - 2:
            continue
        one = one_cosine(epoch * steps, final * steps, args.learning_rate, warmup, args.decay_share)
        seen = f"{logged[epoch]:.2e}" if epoch in logged else "-"
        print(f"{epoch:>5} {seen:>9} {restart[epoch]:>9.2e} {keep_phase[epoch]:>10.2e} {one:>10.2e}")


if __name__ == "__main__":
    main()
