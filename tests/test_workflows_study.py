"""make study: per-seed numbers, their intervals against scipy, the comparison report."""

import itertools
import json
import os

import numpy as np
import pytest
import xarray as xr
from scipy import stats

from dimlapse.pipelines.cli import main
from dimlapse.pipelines.study._run import early_dynamics, mean_ci, run_study


def _exact_percentiles(values, level=0.95):
    """The bootstrap distribution of the mean by enumeration: all n**n resamples, equally
    likely; its (1 - level) / 2 and (1 + level) / 2 quantiles (numpy's default interpolation,
    as scipy applies to its Monte Carlo resamples)."""
    v = np.asarray(values, dtype=float)
    n = v.size
    means = [v[list(idx)].mean() for idx in itertools.product(range(n), repeat=n)]
    return np.percentile(means, [50 * (1 - level), 50 * (1 + level)])


def test_mean_ci_is_the_bootstrap_percentile_interval():
    # n <= 3: each extreme resample (all copies of the minimum) has probability n**-n >= 1/27,
    # above 2.5 %, so the interval is exactly the range of the values
    for v in ([0.3, 0.5], [0.3, 0.5, 0.45], [2.0, -1.0, 7.0]):
        mean, lo, hi, n = mean_ci(v)
        np.testing.assert_allclose([mean, lo, hi, n], [np.mean(v), min(v), max(v), len(v)])
    # n = 5: 3,125 resamples, enumerated; Monte Carlo with 9,999 agrees within a few percent
    v = [0.2, 0.9, 0.4, 0.25, 0.3]
    _, lo, hi, _ = mean_ci(v)
    np.testing.assert_allclose([lo, hi], _exact_percentiles(v), atol=0.02 * np.ptp(v))
    # NaN seeds are left out, and counted
    assert mean_ci([0.3, np.nan, 0.5])[1:] == mean_ci([0.3, 0.5])[1:]
    assert mean_ci([1.0])[3] == 1 and np.isnan(mean_ci([1.0])[1])
    assert mean_ci([np.nan])[3] == 0
    assert mean_ci([4.0, 4.0, 4.0])[1:] == (4.0, 4.0, 3)


@pytest.mark.parametrize(
    ("values", "low", "high"),
    [
        ([0.0, 0.0, 1.0], 0.0, 1.0),  # a share: the Student-t interval was [-0.77, 1.43]
        ([1.0, 1.0, 0.0, 1.0], 0.0, 1.0),
        ([0.0, 0.0, 60.0], 0.0, np.inf),  # a count: the t interval was [-57, 97]
        ([0.0, 2.0, 0.0, 0.0, 31.0, 1.0], 0.0, np.inf),
    ],
)
def test_intervals_stay_in_the_quantitys_range(values, low, high):
    mean, lo, hi, _ = mean_ci(values)
    assert low <= lo <= mean <= hi <= high
    t_lo, t_hi = stats.t.interval(
        0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values)
    )
    assert t_lo < low or t_hi > high  # the planted samples are the ones the t interval failed


def test_interval_covers_a_planted_mean():
    # shares from Beta(1, 9) (mean 0.1, skewed against 0): 200 studies of 20 seeds; the
    # percentile interval stays in [0, 1] and covers the mean about 95 % of the time
    rng = np.random.default_rng(7)
    hits = 0
    for _ in range(200):
        _, lo, hi, _ = mean_ci(rng.beta(1, 9, size=20), n_resamples=999)
        assert 0 <= lo and hi <= 1
        hits += lo <= 0.1 <= hi
    assert 0.88 <= hits / 200 <= 0.99


def test_early_dynamics_on_a_planted_dip():
    steps = np.arange(0, 1001, 10)
    dip = np.interp(steps, [0, 40, 100, 1000], [10.0, 5.0, 15.0, 20.0])  # min at 40, +50 % at 100
    flat = np.full(steps.size, 4.0)
    sr = xr.DataArray(np.stack([dip, flat]), dims=("layer", "step"), coords={"step": steps})
    out = early_dynamics(sr, 1000.0)
    np.testing.assert_allclose(out["early_change"], (0.5 + 0.0) / 2)
    np.testing.assert_allclose(out["early_min_at"], (0.04 + 0.0) / 2)


TINY = {"seeds": 2, "steps": 50, "every": 2, "data": "digits", "progress": False}


def _study(tmp_path, **kw):
    dirs = {k: str(tmp_path / k) for k in ("runs", "res", "cache")}
    return run_study(
        ["mlp"],
        runs_dir=dirs["runs"],
        results_dir=dirs["res"],
        cache_dir=dirs["cache"],
        **{**TINY, **kw},
    )


def test_tiny_study_intervals_and_earlier_runs(tmp_path):
    out = _study(tmp_path)
    doc = json.loads((out / "study.json").read_text())
    runs = doc["runs"]
    assert [r["seed"] for r in runs] == [0, 1]
    assert runs[0]["values"]["final_accuracy"] != runs[1]["values"]["final_accuracy"]
    checked = 0
    for claim, per_model in doc["summary"].items():
        mean, lo, hi, n = per_model["mlp"]
        values = np.array([r["values"].get(claim, np.nan) for r in runs], dtype=float)
        if n == 2:  # two seeds: the percentile interval is their range (closed form above)
            np.testing.assert_allclose([mean, lo, hi], [values.mean(), *np.sort(values)])
            checked += 1
    assert checked >= 3  # accuracy, early dynamics and transition numbers at least
    text = (out / "study.md").read_text()
    accuracy = np.mean([r["values"]["final_accuracy"] for r in runs])
    assert f"| final held-out accuracy | {accuracy:.3g} [" in text  # the seeds' mean
    assert "2 seed(s) per architecture: not enough to conclude" in text
    assert "25 snapshots per run: a short run, not enough to conclude" in text
    assert (out / "study.png").stat().st_size > 10_000

    # earlier runs and results are kept: refused before anything trains ...
    store = tmp_path / "runs" / "study-mlp-s0.zarr"
    stamp = os.stat(store / "zarr.json").st_mtime_ns
    with pytest.raises(FileExistsError, match="--overwrite to replace them, --reuse to keep"):
        _study(tmp_path)
    # ... reused when finished with the same recipe (nothing retrained) ...
    again = json.loads((_study(tmp_path, reuse=True) / "study.json").read_text())
    assert again["summary"] == doc["summary"]
    assert os.stat(store / "zarr.json").st_mtime_ns == stamp
    # ... refused under --reuse when the recipe differs, and replaced with --overwrite
    with pytest.raises(FileExistsError, match=r"not reusable .*study-mlp-s0\.zarr"):
        _study(tmp_path, steps=60, reuse=True)
    _study(tmp_path, steps=60, seeds=1, overwrite=True)
    assert os.stat(store / "zarr.json").st_mtime_ns != stamp


def test_study_command_refuses_and_states_defaults(tmp_path, capsys):
    (tmp_path / "res" / "study").mkdir(parents=True)
    (tmp_path / "res" / "study" / "study.md").write_text("earlier")
    argv = ["study", "--models", "mlp", "--seeds", "1", "--results-dir", str(tmp_path / "res")]
    assert main([*argv, "--runs-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "study.md" in err and "--overwrite" in err and "--reuse" in err
    assert (tmp_path / "res" / "study" / "study.md").read_text() == "earlier"
    with pytest.raises(SystemExit):
        main(["study", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for default in (
        "(default: 3)",
        "(default: 300)",
        "(default: data/runs)",
        "(default: data/cache)",
    ):
        assert default in text, default
    assert "(default: mlp,cnn,resnet,transformer,vit)" in text


def test_study_validation():
    with pytest.raises(ValueError, match="`seeds` to be a positive int"):
        run_study(["mlp"], seeds=0)
    with pytest.raises(ValueError, match="Unknown model"):
        run_study(["mlpx"], seeds=1)


def test_a_study_too_short_to_analyse_is_refused_before_training(tmp_path):
    # 40 steps every 5: 9 snapshots, one short of what the analysis needs; nothing is trained
    with pytest.raises(ValueError, match=r"steps=40, every=5: 9.*--steps 50"):
        run_study(["mlp"], seeds=1, steps=40, every=5, runs_dir=str(tmp_path / "runs"))
    assert not (tmp_path / "runs").exists()
