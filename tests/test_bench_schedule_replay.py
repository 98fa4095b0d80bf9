"""bench/schedule_replay.py reads a train-stage log and replays its plans through the schedule."""

import importlib.util
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("schedule_replay", REPO_ROOT / "bench" / "schedule_replay.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def train_log(plans: dict[int, int], asked: int = 20, steps: int = 10) -> str:
    lines = []
    for epoch in range(1, max(plans.values()) + 1):
        lines.append(f"Epoch {epoch}/{asked}")
        if epoch in plans:
            verb = "planning" if epoch == 1 else "re-planned to"
            lines.append(f"train: time budget 10 min: {verb} {plans[epoch]} of {asked} epochs (9 s per epoch, 5 min left)")
        lines.append(f"{steps}/{steps} - 9s - 900ms/step - accuracy: 0.5 - learning_rate: 1.0e-03")
    return "\n".join(lines)


def test_the_log_is_read_and_the_old_rule_stays_higher_than_the_new(tmp_path):
    log = tmp_path / "repro.log"
    log.write_text(train_log({1: 12, 3: 13, 5: 12, 7: 13, 9: 12}))
    asked, steps, plans, rates = bench.read_train_log(log)
    assert (asked, steps, plans[9], rates[4]) == (20, 10, 12, 1.0e-3)
    old = bench.replay(asked, steps, plans, peak=0.01, warmup_epochs=1, rule="restart")
    new = bench.replay(asked, steps, plans, peak=0.01, warmup_epochs=1, rule="keep_phase")
    assert max(old) == max(new) == 12 and old[12] == new[12] == 0.0  # both end at the final plan
    assert old[10] > 2 * new[10]  # each old refit restarted flat: the rate lagged behind the cosine
    # with a hold: the final plan (12 epochs) decays over a quarter of its 11 epochs after the warm-up
    held = bench.replay(asked, steps, plans, peak=0.01, warmup_epochs=1, rule="restart", decay_share=0.25)
    assert held[9] == pytest.approx(0.01)
    for epoch in (10, 11):  # no re-plan in the decay: the replay is the final plan's hold-then-cosine
        expected = bench.one_cosine(epoch * steps, 120, 0.01, warmup=10, decay_share=0.25)
        assert 0 < held[epoch] < 0.01 and held[epoch] == pytest.approx(expected, rel=1e-4)


def test_a_log_without_a_budget_is_named(tmp_path):
    log = tmp_path / "plain.log"
    log.write_text("Epoch 1/5\n10/10 - 9s - learning_rate: 1.0e-03\n")
    with pytest.raises(SystemExit, match="plain.log: no budgeted train-stage epochs"):
        bench.read_train_log(log)
