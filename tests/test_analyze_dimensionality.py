"""The dimensionality job on small run-like objects in the store layout."""

from types import SimpleNamespace

import dask.array as dsa
import numpy as np
import pytest
import xarray as xr
from gram_bounds import metric_tolerance

from dimlapse.analyze import (
    SPECTRAL_METRICS,
    DegenerateSpectrumWarning,
    blas_single_thread,
    dimensionality,
    twonn,
)

STEPS = 5 * np.arange(12)


def svd_metric(name, x, *, center, **kw):
    """Independent answer: full SVD, then the metric."""
    x = np.asarray(x, dtype=np.float64).reshape(x.shape[0], -1)
    if center:
        x = x - x.mean(axis=0)
    return SPECTRAL_METRICS[name](np.linalg.svd(x, compute_uv=False), **kw)


def make_run(*, chunk=4, seed=0, dead_step=None):
    rng = np.random.default_rng(seed)
    t = len(STEPS)

    def lazy(values, dims, attrs):
        data = dsa.from_array(values.astype(np.float32), chunks=(chunk, *values.shape[1:]))
        return xr.DataArray(data, dims=dims, coords={"step": STEPS}, attrs=attrs)

    w1 = rng.standard_normal((t, 8, 20))  # fc1.weight (out, in)
    conv = rng.standard_normal((t, 4, 3, 2, 2))  # conv.weight (out, in, kh, kw)
    attn_in = rng.standard_normal((t, 12, 4))  # two matrices owned by one module
    attn_out = rng.standard_normal((t, 4, 4))
    bias = rng.standard_normal((t, 8))
    a1 = rng.standard_normal((t, 30, 8)) @ np.diag(0.6 ** np.arange(8))  # (step, sample, feat)
    a2 = rng.standard_normal((t, 30, 3))
    if dead_step is not None:
        a2[dead_step] = 0.0
    weights = xr.Dataset(
        {
            "fc1.weight": lazy(w1, ("step", "fc1.weight.d0", "fc1.weight.d1"), {"layer": "fc1"}),
            "conv.weight": lazy(conv, ("step", "c0", "c1", "c2", "c3"), {"layer": "conv"}),
            "attn.in_proj_weight": lazy(attn_in, ("step", "i0", "i1"), {"layer": "attn"}),
            "attn.out_proj_weight": lazy(attn_out, ("step", "o0", "o1"), {"layer": "attn"}),
            "fc1.bias": lazy(bias, ("step", "fc1.bias.d0"), {"layer": "fc1"}),
        }
    )
    acts = xr.Dataset(
        {
            "fc1": lazy(a1, ("step", "fc1.sample", "fc1.feature"), {"layer": "fc1"}),
            "fc2": lazy(a2, ("step", "fc2.sample", "fc2.feature"), {"layer": "fc2"}),
        }
    )
    raw = {"fc1.weight": w1, "conv.weight": conv, "attn.in_proj_weight": attn_in, "fc1": a1}
    raw["attn.out_proj_weight"], raw["fc2"] = attn_out, a2
    return SimpleNamespace(weights=weights, activations=acts, attrs={"every": 5}), raw


def test_layout_and_laziness():
    run, _ = make_run()
    ds = dimensionality(run, twonn_stride=3)
    dim = ds["dimensionality"]
    assert dim.dims == ("kind", "layer", "step", "metric")
    assert isinstance(dim.data, dsa.Array) and isinstance(ds["twonn"].data, dsa.Array)
    assert list(dim["kind"].values) == ["weight", "activation"]
    assert set(dim["layer"].values) == {
        "fc1",
        "conv",
        "attn.in_proj_weight",
        "attn.out_proj_weight",
        "fc2",
    }
    assert list(dim["metric"].values) == list(SPECTRAL_METRICS)
    np.testing.assert_array_equal(dim["step"], STEPS)
    np.testing.assert_array_equal(ds["twonn"]["twonn_step"], STEPS[::3])
    assert ds.attrs["job"] == "dimensionality" and ds.attrs["every"] == 5
    assert "Roy and Vetterli" in ds.attrs["metric_definitions"]
    assert ds.attrs["epsilon_rank_epsilon"] == 1e-3


def test_values_match_an_independent_svd():
    run, raw = make_run()
    with blas_single_thread():
        ds = dimensionality(run, twonn_stride=4).compute()
    dim = ds["dimensionality"]
    cases = [("weight", "fc1", "fc1.weight", False), ("weight", "conv", "conv.weight", False)]
    cases += [("activation", "fc1", "fc1", True), ("activation", "fc2", "fc2", True)]
    cases += [("weight", "attn.in_proj_weight", "attn.in_proj_weight", False)]
    for kind, layer, key, center in cases:
        x = raw[key].astype(np.float32)
        n, d = x.shape[1], int(np.prod(x.shape[2:]))
        for name in SPECTRAL_METRICS:
            kw = {"numerical_rank": {"rtol": max(n, d) * np.finfo(np.float32).eps}}.get(name, {})
            if name == "epsilon_rank":
                kw = {"epsilon": 1e-3, "n_samples": n if center else 1}
            ref = [svd_metric(name, x[i], center=center, **kw) for i in range(len(STEPS))]
            got = dim.sel(kind=kind, layer=layer, metric=name).values
            np.testing.assert_allclose(got, ref, rtol=1e-8, err_msg=f"{kind} {layer} {name}")
    # absent (kind, layer) pairs are NaN
    assert np.isnan(dim.sel(kind="activation", layer="conv")).all()
    assert np.isnan(dim.sel(kind="weight", layer="fc2")).all()
    ref_tw = [twonn(raw["fc1"][i].astype(np.float32)) for i in range(0, len(STEPS), 4)]
    np.testing.assert_allclose(ds["twonn"].sel(layer="fc1").values, ref_tw, rtol=1e-12)


def test_chunking_does_not_change_results():
    one = dimensionality(make_run(chunk=1)[0], twonn_stride=0).compute()
    many = dimensionality(make_run(chunk=12)[0], twonn_stride=0).compute()
    xr.testing.assert_allclose(one, many, rtol=1e-12)
    assert "twonn" not in one
    # chunks of 1 step are merged into multiples of the store's chunk (16-64 per task)
    lazy = dimensionality(make_run(chunk=1)[0], twonn_stride=0)["dimensionality"]
    assert lazy.data.numblocks[2] == 1


def test_groups_with_different_steps_are_outer_joined():
    run, _ = make_run()
    run.weights = run.weights.isel(step=slice(0, 8))  # e.g. a group trimmed after a crash
    dim = dimensionality(run, metrics=["stable_rank"], twonn_stride=0)["dimensionality"]
    np.testing.assert_array_equal(dim["step"], STEPS)
    w = dim.sel(kind="weight", layer="fc1", metric="stable_rank").values
    assert np.isfinite(w[:8]).all() and np.isnan(w[8:]).all()


def test_metric_subset_and_custom_metric():
    run, raw = make_run()
    ds = dimensionality(run, metrics=["stable_rank"], twonn_stride=0)
    assert list(ds["metric"].values) == ["stable_rank"]
    top = {"top": lambda s: s[..., 0]}
    got = dimensionality(run, metrics=top, twonn_stride=0)["dimensionality"]
    x = raw["fc1.weight"][3].astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(
        got.sel(kind="weight", layer="fc1", metric="top").values[3],
        np.linalg.norm(x, 2),
        rtol=1e-9,
    )


def test_dead_layer_warns_and_gives_nan():
    run, _ = make_run(dead_step=2)
    with pytest.warns(DegenerateSpectrumWarning, match="all zero"):
        ds = dimensionality(run, metrics=["stable_rank", "numerical_rank"], twonn_stride=0)
        dim = ds["dimensionality"].sel(kind="activation", layer="fc2").compute()
    assert np.isnan(dim.sel(metric="stable_rank").values[2])
    assert dim.sel(metric="numerical_rank").values[2] == 0
    assert np.isfinite(dim.sel(metric="stable_rank").values[[0, 1, 3]]).all()


def test_validation_messages():
    run, _ = make_run()
    with pytest.raises(ValueError, match=r"Unknown `metrics` \['nope'\]; valid names"):
        dimensionality(run, metrics=["nope"])
    with pytest.raises(ValueError, match="Expected `metrics` to be a list of names"):
        dimensionality(run, metrics="stable_rank")
    with pytest.raises(ValueError, match="Expected `metrics` values to be callables"):
        dimensionality(run, metrics={"x": 3})
    with pytest.raises(ValueError, match=r"Expected `twonn_stride` to be an int >= 0"):
        dimensionality(run, twonn_stride=-1)
    with pytest.raises(ValueError, match="Expected `epsilon` to be a positive float"):
        dimensionality(run, epsilon=0)
    with pytest.raises(TypeError, match=r"Expected `run` to have `\.weights` and `\.activations`"):
        dimensionality(object())
    empty = SimpleNamespace(weights=xr.Dataset(), activations=xr.Dataset())
    with pytest.raises(ValueError, match="at least one activation"):
        dimensionality(empty)


def test_on_a_store_written_by_the_recorder(tiny_run_store):
    from dimlapse.analyze import open_run

    store = tiny_run_store  # conftest: 8-16-4 MLP, steps 0..40 every 1, chunks of 8
    run = open_run(store)
    with blas_single_thread():
        ds = dimensionality(run, metrics=["stable_rank", "effective_rank"], twonn_stride=5)
        ds = ds.compute()
    dim = ds["dimensionality"]
    np.testing.assert_array_equal(dim["step"], np.arange(41))
    assert list(dim["layer"].values) == ["0", "2"]  # module names (the weights' `layer` attr)
    # tolerances from the Gram trick's error bound (tests/gram_bounds.py), per step
    cases = [("activation", "0", run.activations["0"].values, True, "effective_rank")]
    cases += [("weight", "2", run.weights["2.weight"].values, False, "stable_rank")]
    for kind, layer, x, center, name in cases:  # x: (step, n, d)
        got = dim.sel(kind=kind, layer=layer, metric=name).values
        for i, m in enumerate(x):
            m = np.asarray(m, dtype=np.float64)
            s = np.linalg.svd(m - m.mean(axis=0) if center else m, compute_uv=False)
            tol = metric_tolerance(SPECTRAL_METRICS[name], s, *m.shape)
            assert abs(got[i] - SPECTRAL_METRICS[name](s)) <= tol, (kind, layer, i, tol)
    np.testing.assert_array_equal(ds["twonn_step"], np.arange(0, 41, 5))
    assert np.isfinite(ds["twonn"].values).all()


@pytest.mark.slow
def test_bench_analyze_small(tmp_path, capsys):
    pytest.importorskip("torch")
    import argparse

    from dimlapse.pipelines.bench import _analyze as _bench_analyze

    parser = argparse.ArgumentParser()
    _bench_analyze.add_arguments(parser)
    args = parser.parse_args(
        [
            "--snapshots",
            "32",
            "--out-dir",
            str(tmp_path),
            "--no-end-to-end",
            "--naive-snapshots",
            "8",
        ]
    )
    assert _bench_analyze.main(args) == 0  # naive and dask agree to 1e-6 relative
    out = capsys.readouterr().out
    assert "(33 snapshots;" in out and "(naive timed on 8 snapshots, scaled to 33)" in out
    with pytest.raises(SystemExit, match="Expected `--workers` to be a positive int"):
        _bench_analyze.main(parser.parse_args(["--workers", "0"]))
