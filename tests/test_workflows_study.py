"""make study: per-seed numbers, their intervals against scipy, the comparison report."""

import json

import numpy as np
import pytest
import xarray as xr
from scipy import stats

from dimlapse.pipelines.study._run import early_dynamics, mean_ci, run_study


def test_mean_ci_is_the_student_t_interval():
    v = [0.3, 0.5, 0.45, np.nan, 0.2]
    mean, lo, hi, n = mean_ci(v)
    finite = np.array([0.3, 0.5, 0.45, 0.2])
    ref = stats.t.interval(0.95, 3, loc=finite.mean(), scale=stats.sem(finite))
    assert n == 4
    np.testing.assert_allclose([mean, lo, hi], [finite.mean(), *ref], rtol=1e-12)
    assert mean_ci([1.0])[3] == 1 and np.isnan(mean_ci([1.0])[1])
    assert mean_ci([np.nan])[3] == 0


def test_early_dynamics_on_a_planted_dip():
    steps = np.arange(0, 1001, 10)
    dip = np.interp(steps, [0, 40, 100, 1000], [10.0, 5.0, 15.0, 20.0])  # min at 40, +50 % at 100
    flat = np.full(steps.size, 4.0)
    sr = xr.DataArray(np.stack([dip, flat]), dims=("layer", "step"), coords={"step": steps})
    out = early_dynamics(sr, 1000.0)
    np.testing.assert_allclose(out["early_change"], (0.5 + 0.0) / 2)
    np.testing.assert_allclose(out["early_min_at"], (0.04 + 0.0) / 2)


def test_tiny_study_intervals_match_scipy_on_the_per_seed_values(tmp_path):
    out = run_study(
        ["mlp"],
        seeds=2,
        steps=50,
        every=2,
        data="digits",
        runs_dir=str(tmp_path / "runs"),
        results_dir=str(tmp_path / "res"),
        cache_dir=str(tmp_path / "cache"),
        progress=False,
    )
    doc = json.loads((out / "study.json").read_text())
    runs = doc["runs"]
    assert [r["seed"] for r in runs] == [0, 1]
    assert runs[0]["values"]["final_accuracy"] != runs[1]["values"]["final_accuracy"]
    checked = 0
    for claim, per_model in doc["summary"].items():
        values = np.array([r["values"].get(claim, np.nan) for r in runs], dtype=float)
        mean, lo, hi, n = per_model["mlp"]
        if np.isfinite(values).all():
            if np.ptp(values) > 0:
                ref = stats.t.interval(0.95, 1, loc=values.mean(), scale=stats.sem(values))
                np.testing.assert_allclose([mean, lo, hi], [values.mean(), *ref], rtol=1e-9)
                checked += 1
            assert n == 2
    assert checked >= 3  # accuracy, early dynamics and transition numbers at least
    text = (out / "study.md").read_text()
    accuracy = np.mean([r["values"]["final_accuracy"] for r in runs])
    assert f"| final held-out accuracy | {accuracy:.3g} [" in text  # the seeds' mean
    assert (out / "study.png").stat().st_size > 10_000


def test_study_validation():
    with pytest.raises(ValueError, match="`seeds` to be a positive int"):
        run_study(["mlp"], seeds=0)
    with pytest.raises(ValueError, match="Unknown model"):
        run_study(["mlpx"], seeds=1)
