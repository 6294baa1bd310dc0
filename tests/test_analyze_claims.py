"""Claims as tests: verdicts against planted answers (episodes, binomial tails by hand)."""

from math import comb

import numpy as np
import pytest
import xarray as xr

from dimlapse.analyze.jobs import (
    MIN_CLAIM_SNAPSHOTS,
    accuracy_rise,
    claims,
    context_windows,
    episode_table,
    phases,
    training_dynamics,
)
from dimlapse.analyze.jobs._claims import coupling_claim, phases_claim, sampling_claim

LAYERS = ["fc1", "fc2", "fc3"]
STEPS = np.arange(0, 8001, 5.0)


def upper_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), summed by hand."""
    return sum(comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))


def planted(events: dict[tuple[str, str], list[float]]) -> xr.Dataset:
    """A transitions Dataset with notable events at the given steps per (kind, layer)."""
    width = max(len(v) for v in events.values())
    step = np.full((2, len(LAYERS), 1, 1, width), np.nan)
    for (kind, layer), steps in events.items():
        step[["activation", "weight"].index(kind), LAYERS.index(layer), 0, 0, : len(steps)] = steps
    dims = ("kind", "layer", "metric", "detector", "transition")
    return xr.Dataset(
        {
            "step": (dims, step),
            "onset": (dims, step),  # instantaneous events: onset = centre, no duration
            "duration": (dims, np.where(np.isfinite(step), 0.0, np.nan)),
            "significant": (dims, np.isfinite(step)),
            "notable": (dims, np.isfinite(step)),
        },
        coords={
            "kind": ["activation", "weight"],
            "layer": LAYERS,
            "metric": ["stable_rank"],
            "detector": ["pelt"],
        },
    )


def coupling_ds(diff: list[tuple[float, float, float]], raw: list[tuple[float, float, float]]):
    """Coupling rows (rho, low, high) per layer for one target, raw and differenced."""
    data = np.array([raw, diff]).transpose(1, 0, 2)  # (layer, transform, stat)
    names = ("rho", "rho_low", "rho_high")
    return xr.Dataset(
        {n: (("layer", "transform"), data[..., i]) for i, n in enumerate(names)},
        coords={"layer": LAYERS[: len(diff)], "transform": ["raw", "diff"]},
    )


def test_simultaneous_collapse_of_three_layers_is_one_episode_and_not_a_timing_claim():
    # the case: 4 events, 3 of them the initial collapse of three layers, 1 late
    trans = planted(
        {
            ("activation", "fc1"): [20.0],
            ("activation", "fc2"): [25.0],
            ("activation", "fc3"): [30.0, 6000.0],
            ("weight", "fc1"): [],
        }
    )
    cl = claims_of_planted(trans)
    row = cl.sel(claim="timing", space="activation")
    assert int(row.n) == 2  # two episodes, not four events
    assert float(row.statistic) == 0.5
    assert float(row.p_value) == pytest.approx(upper_tail(1, 2, 0.25))  # 0.4375
    assert row.verdict.item() == "inconclusive"
    # raw events would have said 3 of 4 early: P = 0.05, the overreach the claims job removes
    assert upper_tail(3, 4, 0.25) == pytest.approx(0.05078125)


def test_timing_reproduced_only_when_episodes_cluster_early_and_refuted_when_uniform():
    early = {("activation", layer): [100.0 + 150 * k for k in range(10)] for layer in LAYERS}
    early[("activation", "fc1")] += [5000.0, 7000.0]
    cl = claims_of_planted(planted(early))
    row = cl.sel(claim="timing", space="activation")
    assert int(row.n) == 12 and float(row.statistic) == pytest.approx(10 / 12)
    assert float(row.p_value) == pytest.approx(upper_tail(10, 12, 0.25))
    assert row.verdict.item() == "reproduced"
    uniform = {("activation", "fc1"): list(np.linspace(100, 7900, 40))}
    row = claims_of_planted(planted(uniform)).sel(claim="timing", space="activation")
    assert int(row.n) == 40 and float(row.statistic) == pytest.approx(10 / 40)
    assert float(row.high) < 2 / 3 and row.verdict.item() == "not reproduced"


def test_counts_test_episodes_not_events():
    # 15 activation events in 5 episodes (each moves three layers) vs 1 weight episode
    act = {("activation", layer): [1000.0 * k for k in range(1, 6)] for layer in LAYERS}
    cl = claims_of_planted(planted(act | {("weight", "fc2"): [3000.0]}))
    row = cl.sel(claim="counts", space="activation")
    assert int(row.n) == 6 and float(row.statistic) == pytest.approx(5 / 6)
    assert float(row.p_value) == pytest.approx(upper_tail(5, 6, 0.5))  # 7/64, not significant
    assert row.verdict.item() == "inconclusive"
    assert list(cl.episode_n_layers.values[cl.episode_space.values == "activation"]) == [3] * 5


def test_episode_is_labelled_with_the_training_context_it_falls_in():
    trans = planted({("activation", layer): [2000.0, 6005.0] for layer in LAYERS})
    ep, ids, source = episode_table(
        trans.sel(detector="pelt", metric="stable_rank"),
        window=50,
        context={"loss spike": [(5990.0, 6010.0)], "accuracy jump": [(1500.0, 1700.0)]},
    )
    assert source in ("fallback", "transitions.episodes")
    assert list(ep.context.values) == ["", "loss spike"]
    assert (ids.values >= 0).sum() == 6 and set(np.unique(ids.values)) == {-1, 0, 1}


def test_coupling_reproduced_only_when_differenced_intervals_exclude_zero_with_the_sign():
    good = coupling_ds([(-0.4, -0.5, -0.2)] * 2, [(-0.9, -0.95, -0.8)] * 2)
    assert coupling_claim(good, study_sign=-1, level=0.95)["verdict"] == "reproduced"
    trend = coupling_ds(
        [(-0.02, -0.05, 0.02), (0.05, 0.01, 0.09)], [(-0.95, -0.97, -0.9), (-0.9, -0.95, -0.8)]
    )
    row = coupling_claim(trend, study_sign=-1, level=0.95)
    assert row["verdict"] == "not reproduced"
    assert row["detail"].startswith("shared trend only")
    assert "opposite sign in 1 layer(s)" in row["detail"]
    assert (row["low"], row["high"]) == (-0.05, 0.09)


def test_a_near_constant_weight_series_is_no_collapse_and_a_fast_rise_is_stated_with_size():
    rng = np.random.default_rng(0)
    flat = 16.66 - 0.02 * STEPS / STEPS[-1] + rng.normal(0, 0.002, STEPS.size)  # 16.66 -> 16.64
    fast = np.where(STEPS < 500, 5.0, 10.0) + rng.normal(0, 0.05, STEPS.size)  # a 2x rise
    dim = xr.DataArray(
        np.stack([flat, fast]), dims=("layer", "step"), coords={"layer": LAYERS[:2], "step": STEPS}
    )
    ph = phases(dim)
    assert (ph.segment_trend.sel(layer="fc1").values == 0).all()  # 0.1 % of the level
    row = phases_claim(ph)
    assert "fc1: stabilisation 0-8,000" in row["detail"]
    fast_text = row["detail"].split("fc2: ")[1]
    assert "unresolved" in fast_text and "x2)" in fast_text
    low, high = (float(x) for x in fast_text.split("fast rise ")[1].split(" (")[0].split(" -> "))
    assert low == pytest.approx(5, abs=0.2) and high == pytest.approx(10, abs=0.2)
    assert row["verdict"] == "not reproduced" and row["n"] == 2


def sampling_ds(base: list[float], next_found: list[int], coarse_found: list[int]):
    """Sampling job rows for one layer: intervals 5, 10, 100 and per-event found flags."""
    n = len(base)
    found = np.array([[1] * n, next_found, coarse_found], dtype=float)
    return xr.Dataset(
        {
            "base_step": (("interval", "transition"), np.tile(base, (3, 1))),
            "base_found": (("interval", "transition"), found),
            "effective_interval": ("interval", [5, 10, 100]),
        },
        coords={"interval": [5, 10, 100]},
    )


def test_sampling_excludes_edge_and_unstable_events_before_saying_coarse_sampling_misses():
    # the case: 3 of 4 events in the first 35 steps, the fourth not found at 10
    sm = sampling_ds([5.0, 20.0, 35.0, 4000.0], [1, 1, 1, 0], [0, 0, 0, 0])
    row = sampling_claim(sm, every=5, first=0, last=8000, window=50, alpha=0.05)
    assert row["verdict"] == "inconclusive" and row["n"] == 0
    assert "3 at the edges" in row["detail"] and "no stable event" in row["detail"]
    # 8 stable interior episodes, all missed at 100 steps: P = 0.5 ** 8
    steps = [900.0 * k for k in range(1, 9)]
    row = sampling_claim(
        sampling_ds(steps, [1] * 8, [0] * 8), every=5, first=0, last=8000, window=50, alpha=0.05
    )
    assert row["n"] == 8 and row["p_value"] == pytest.approx(0.5**8)
    assert row["verdict"] == "reproduced"
    row = sampling_claim(
        sampling_ds(steps, [1] * 8, [1] * 8), every=5, first=0, last=8000, window=50, alpha=0.05
    )
    assert row["verdict"] == "not reproduced" and row["statistic"] == 0


def test_a_short_run_gets_only_inconclusive_verdicts():
    act = {("activation", layer): [100.0 * k for k in range(1, 6)] for layer in LAYERS}
    cl = claims_of_planted(planted(act), n_snapshots=17)
    assert cl.attrs["short_run"] and 17 < MIN_CLAIM_SNAPSHOTS
    assert set(cl.verdict.values.ravel()) == {"inconclusive"}
    detail = cl.detail.sel(claim="timing", space="activation").item()
    assert detail.startswith("run too short (17 snapshots)")


@pytest.mark.parametrize("centre", [800.0, 1760.0])
def test_accuracy_t50_t90_of_a_planted_sigmoid(centre):
    steps = np.arange(0, 4001, 5.0)
    acc = 0.1 + 0.9 / (1 + np.exp(-(steps - centre) / 40))
    first, top, (t50, t90) = accuracy_rise(steps, acc)
    level50 = first + 0.5 * (top - first)
    level90 = first + 0.9 * (top - first)
    assert t50 == steps[np.argmax(acc >= level50)] and abs(t50 - centre) <= 5
    # closed form: the sigmoid reaches 90 % of its rise at centre + 40 ln 9
    assert abs(t90 - (centre + 40 * np.log(9))) <= 5
    assert acc[steps == t90][0] >= level90 > acc[steps == t90 - 5][0]


def test_flat_accuracy_has_no_rise_and_the_jump_is_a_context_window():
    steps = np.arange(1, 3001.0)
    flat = np.where(steps % 10 == 0, 0.97, np.nan)
    assert np.isnan(accuracy_rise(steps, flat)[2]).all()
    acc = np.where(steps % 10 == 0, np.where(steps < 1500, 0.1, 0.95), np.nan)
    scalars = xr.Dataset(
        {
            "loss": ("step", np.exp(-steps / 1000)),
            "test_accuracy": ("step", acc),
            "lr": ("step", np.where(steps < 2000, 1e-3, 1e-4)),
        },
        coords={"step": steps},
    )
    tr = training_dynamics(scalars)
    assert float(tr.accuracy_t50) == 1500 and float(tr.accuracy_t90) == 1500
    ctx = context_windows(tr, margin=10)
    assert ctx["accuracy jump"] == [(1490.0, 1510.0)]
    assert ctx["learning-rate change"] == [(1990.0, 2010.0)]


def claims_of_planted(trans: xr.Dataset, *, n_snapshots: int = STEPS.size) -> xr.Dataset:
    """The claims job on planted transitions, with flat phases, coupling and sampling."""
    dim = xr.DataArray(
        np.ones((2, len(LAYERS), STEPS.size, 1)) * np.linspace(1, 2, STEPS.size)[:, None],
        dims=("kind", "layer", "step", "metric"),
        coords={
            "kind": ["activation", "weight"],
            "layer": LAYERS,
            "step": STEPS,
            "metric": ["stable_rank"],
        },
    )
    cp = xr.Dataset(
        {
            v: (("kind", "layer", "metric", "target", "transform"), np.full((2, 3, 1, 1, 2), x))
            for v, x in (("rho", -0.5), ("rho_low", -0.6), ("rho_high", -0.4))
        },
        coords=dim.drop_vars("step").coords | {"target": ["loss"], "transform": ["raw", "diff"]},
    )
    sm = xr.Dataset({"effective_interval": ("interval", [5])}, coords={"interval": [5]})
    sm = sm.assign_coords(kind=dim.kind, metric=dim.metric, detector=["pelt"])
    return claims(
        trans,
        phases=phases(dim),
        coupling=cp,
        sampling=sm,
        metric="stable_rank",
        detector="pelt",
        total_steps=8000.0,
        n_snapshots=n_snapshots,
        every=5.0,
    )
