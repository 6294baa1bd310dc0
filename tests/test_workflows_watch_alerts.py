"""Alerts worth acting on: one per episode (hysteresis), ``critical`` only for what does not
recover, and every alert naming the training event it coincides with. Planted series with a
known answer; the runs made to show each fault are in ``test_workflows_watch.py``."""

from __future__ import annotations

import numpy as np
import pytest

from dimlapse.analyze.watch import Diagnoser, DiagnosisOptions
from dimlapse.analyze.watch._context import training_events

OPT = DiagnosisOptions()
W = OPT.window  # snapshots per window (12)
STEPS = np.arange(0, 5 * 400, 5)  # capture every 5 steps


def expanded(n_up: int = 40, top: float = 20.0) -> np.ndarray:
    """A layer that starts at 4 and expands to ``top`` over ``n_up`` snapshots (its peak)."""
    return np.r_[np.full(W + OPT.warmup, 4.0), np.linspace(4.0, top, n_up)]


def collapse_alerts(tail: np.ndarray, *, layers: int = 1) -> list:
    y = np.r_[expanded(), tail]
    series = {f"l{i}": y for i in range(layers)}
    return Diagnoser().update(STEPS[: y.size], series, dict.fromkeys(series, 64))


def test_a_collapse_hovering_at_its_threshold_is_one_episode():
    # at 47-53 % of the peak 20, crossing the 50 % threshold every 15 snapshots (more than a
    # window apart: the former rule alerted at every crossing)
    hover = np.concatenate([np.full(15, v) for v in (9.4, 10.6, 9.4, 10.6, 9.4, 10.6, 9.4)])
    alerts = collapse_alerts(hover)
    assert [(a.kind, a.severity) for a in alerts] == [("rank_collapse", "warning")]
    assert alerts[0].statistic < OPT.collapse


def test_a_recovered_collapse_re_arms_and_alerts_again():
    # below half, back above collapse / rearm (62.5 %) for more than `persist` windows, below
    tail = np.r_[np.full(20, 6.0), np.full(OPT.persist * W + 3, 16.0), np.full(20, 6.0)]
    alerts = collapse_alerts(tail)
    assert [a.severity for a in alerts] == ["warning", "warning"]
    first_low = STEPS[expanded().size]
    second_low = STEPS[expanded().size + 20 + OPT.persist * W + 3]
    # the running median (5 snapshots) puts each onset 2 snapshots after the drop
    assert [a.step for a in alerts] == [first_low + 10, second_low + 10]


def test_a_short_recovery_does_not_re_arm():
    # back above the re-arm level for less than `persist` windows: still the same episode
    tail = np.r_[np.full(20, 6.0), np.full(OPT.persist * W - 4, 16.0), np.full(20, 6.0)]
    assert len(collapse_alerts(tail)) == 1


def test_a_persisting_collapse_is_critical_once_and_a_recovering_one_is_not():
    severe = 0.1 * 20.0  # 10 % of the peak, below `severe` (25 %)
    held = OPT.persist * W
    persisting = collapse_alerts(np.full(held + 30, severe))
    assert [a.severity for a in persisting] == ["warning", "critical"]
    crit = persisting[1]
    # critical once the severe collapse held `persist` windows (the median lags 2 snapshots)
    onset = expanded().size + 2
    assert crit.step == STEPS[onset + held - 1]
    assert f"for {held} snapshots" in crit.message and crit.statistic < OPT.severe
    recovering = collapse_alerts(np.r_[np.full(held - 6, severe), np.full(60, 19.0)])
    assert [a.severity for a in recovering] == ["warning"]
    mild = collapse_alerts(np.full(held + 30, 0.4 * 20.0))  # long, but not severe: compression
    assert [a.severity for a in mild] == ["warning"]


def test_layers_that_collapse_together_are_one_alert_naming_them():
    alerts = collapse_alerts(np.full(30, 6.0), layers=3)
    assert len(alerts) == 1 and alerts[0].layer == "l0,l1,l2"
    assert "(also l1, l2)" in alerts[0].message


def test_a_layer_joining_an_open_episode_is_silent_until_every_layer_recovered():
    rng = np.random.default_rng(1)
    n = 260
    calm = 10 * np.exp(0.005 * rng.standard_normal(n))
    a, b = calm.copy(), calm.copy() * 1.3
    burst = np.exp(0.3 * rng.standard_normal(n))
    a[80:120] *= burst[80:120]  # layer a erratic first
    b[95:130] *= burst[95:130]  # b joins while a's episode is open
    a[200:230] *= burst[200:230]  # a second, separate burst after both recovered
    alerts = Diagnoser().update(STEPS[:n], {"a": a, "b": b}, {"a": 64, "b": 64})
    inst = [x for x in alerts if x.kind == "instability"]
    assert [(x.layer, x.severity) for x in inst] == [("a", "warning"), ("a", "warning")]
    assert STEPS[80] <= inst[0].step < STEPS[95] and inst[1].step >= STEPS[200]


def test_alerts_name_the_training_event_they_coincide_with():
    rng = np.random.default_rng(0)
    y = np.r_[expanded(), np.full(30, 6.0)]
    t = STEPS[: y.size]
    scalar_steps = np.arange(1, t[-1] + 1)  # every optimizer step
    loss = np.exp(-scalar_steps / 400) * np.exp(0.02 * rng.standard_normal(scalar_steps.size))
    drop = int(t[expanded().size])  # the step at which the layer collapses
    loss[drop - 3 : drop + 2] *= 30.0  # a loss spike just before it shows
    acc = np.full(scalar_steps.size, np.nan)
    acc[np.isin(scalar_steps, t)] = 0.9
    acc[scalar_steps >= drop] = np.where(np.isnan(acc[scalar_steps >= drop]), np.nan, 0.2)
    lr = np.full(scalar_steps.size, 1e-3)
    scalars = (scalar_steps, {"loss": loss, "test_accuracy": acc, "lr": lr})
    (alert,) = Diagnoser().update(t, {"l0": y}, {"l0": 64}, scalars)
    assert alert.context[0].startswith(f"loss spike at steps {drop - 2}-")
    assert alert.context[1] == "held-out accuracy drop 0.90 -> 0.20"
    assert len(alert.context) == 2  # the learning rate did not change
    assert "coincides with loss spike" in alert.message
    quiet = (scalar_steps, {"loss": np.exp(-scalar_steps / 400), "lr": lr})
    (alert,) = Diagnoser().update(t, {"l0": y}, {"l0": 64}, quiet)
    assert alert.context == () and "training quiet" in alert.message


def test_training_events_against_planted_answers():
    steps = np.arange(1, 1001)
    rng = np.random.default_rng(3)
    grad = np.exp(0.05 * rng.standard_normal(1000))
    grad[600:603] *= 50.0  # steps 601-603
    lr = np.where(steps < 300, 1e-3, 3e-4)
    acc = np.where(steps % 5 == 0, np.where(steps < 800, 0.4, 0.95), np.nan)
    sc = {"grad_norm": grad, "lr": lr, "test_accuracy": acc}
    assert training_events(steps, sc, (100, 200)) == []
    assert training_events(steps, sc, (280, 320)) == ["learning-rate change 0.001 -> 0.0003"]
    assert training_events(steps, sc, (300, 320)) == ["learning-rate change 0.001 -> 0.0003"]
    assert training_events(steps, sc, (301, 320)) == []  # the change was before the window
    (spike,) = training_events(steps, sc, (590, 640))
    assert spike.startswith("gradient-norm spike at steps 601-603 (x")
    assert 40 <= float(spike.split("(x")[1][:-1]) <= 60  # x50 over a noisy running median
    assert training_events(steps, sc, (640, 700)) == []
    (late,) = training_events(steps, sc, (640, 700), margin=50)
    assert late.startswith("gradient-norm spike at steps 601-603 (x")
    assert training_events(steps, sc, (780, 820)) == ["held-out accuracy rise 0.40 -> 0.95"]
    # what happened after the window's end is not known at it
    assert training_events(steps, sc, (560, 600)) == []


def test_new_options_are_validated():
    with pytest.raises(ValueError, match="`persist` to be an int >= 1, got 0"):
        DiagnosisOptions(persist=0)
    with pytest.raises(ValueError, match=r"`rearm` in \(0, 1\), got 1.2"):
        DiagnosisOptions(rearm=1.2)
    with pytest.raises(ValueError, match="`severe` below `collapse`"):
        DiagnosisOptions(severe=0.6)
