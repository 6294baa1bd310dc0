"""The formation job against scikit-learn's RidgeClassifier and planted decodability onsets."""

import numpy as np
import pytest
import torch
import xarray as xr
from sklearn.linear_model import RidgeClassifier
from sklearn.model_selection import cross_val_score
from torch import nn

from dimlapse.analyze import formation, open_run
from dimlapse.analyze.jobs._formation import fold_indices, formation_times, ridge_cv_accuracy

N, CLASSES = 120, 3


def _cv(n, folds, seed=0):
    tests = fold_indices(n, folds, seed=seed)
    return [(np.setdiff1d(np.arange(n), t), t) for t in tests]


@pytest.mark.parametrize("d", [8, 300])  # primal (d <= n) and dual (d > n) forms
@pytest.mark.parametrize("alpha", [0.3, 10.0])
def test_absolute_alpha_matches_sklearn_cross_val_score(d, alpha):
    rng = np.random.default_rng(d)
    y = rng.integers(0, CLASSES, N)
    x = rng.normal(size=(N, d)) + 0.8 * np.eye(CLASSES, d)[y] * 3 + 5.0  # offset: intercept
    ours = ridge_cv_accuracy(x, y, fold_indices(N, 5), alpha=alpha, relative=False)
    ref = cross_val_score(RidgeClassifier(alpha=alpha), x, y, cv=_cv(N, 5)).mean()
    assert 0.4 < ref < 1.0  # neither trivial nor perfect, so the comparison has teeth
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)


def test_relative_alpha_is_sklearn_with_the_fold_scaled_penalty():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, N)  # binary: sklearn's single decision column
    x = 1e3 * (rng.normal(size=(N, 20)) + np.eye(2, 20)[y])
    ref = []
    for train, test in _cv(N, 4, seed=3):
        xc = x[train] - x[train].mean(0)
        lam = 0.1 * np.sum(xc**2) / x.shape[1]
        ref.append(RidgeClassifier(alpha=lam).fit(x[train], y[train]).score(x[test], y[test]))
    ours = ridge_cv_accuracy(x, y, fold_indices(N, 4, seed=3), alpha=0.1, relative=True)
    np.testing.assert_allclose(ours, np.mean(ref), atol=1e-12)
    # scale-free: the same accuracy on rescaled activations
    assert ridge_cv_accuracy(x * 1e-3, y, fold_indices(N, 4, seed=3), alpha=0.1, relative=True) == (
        ours
    )


def test_folds_have_kfold_sizes_and_cover_the_probe():
    tests = fold_indices(103, 5, seed=2)
    assert [t.size for t in tests] == [21, 21, 21, 20, 20]
    np.testing.assert_array_equal(np.sort(np.concatenate(tests)), np.arange(103))


def _planted(onsets, *, rows=1, seed=0):
    """Activations whose class signal switches on at a known step per layer."""
    steps = np.arange(0, 200, 5)
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, N)
    data = {}
    for i, onset in enumerate(onsets):
        x = rng.normal(size=(steps.size, N * rows, 6)).astype(np.float32)
        on = steps >= onset
        signal = np.repeat(4.0 * np.eye(4, 6)[y], rows, axis=0)  # example-major rows
        x[on] += signal
        data[f"l{i}"] = (("step", f"l{i}.sample", f"l{i}.feature"), x)
    ds = xr.Dataset(data, coords={"step": steps}).chunk({"step": 16})
    return ds, y


def test_planted_onsets_are_found_per_layer():
    ds, y = _planted([50, 120, 10_000])  # the third layer never carries the signal
    out = formation(ds, targets=y, fractions=(0.5, 0.9))
    assert out.decodability.chunks is not None  # lazy until computed
    out = out.compute()
    times = out.formation_step
    assert times.sel(layer="l0").values.tolist() == [50.0, 50.0]
    assert times.sel(layer="l1").values.tolist() == [120.0, 120.0]
    assert np.isnan(times.sel(layer="l2")).all()
    dec = out.decodability
    assert (dec.sel(step=slice(150, None)).sel(layer=["l0", "l1"]) > 0.95).all()
    assert float(dec.sel(layer="l2").mean()) < 0.45
    assert out.attrs["job"] == "formation" and out.attrs["folds"] == 5


def test_sampled_positions_are_read_side_by_side():
    # the signal sits in the second of two rows per example: only the joint read finds it
    ds, y = _planted([0], rows=2, seed=4)
    x = ds["l0"].values.copy()
    x[:, 0::2] = np.random.default_rng(0).normal(size=x[:, 0::2].shape)
    ds["l0"] = (ds["l0"].dims, x)
    out = formation(ds, targets=y).compute()
    assert float(out.decodability.min()) > 0.95


def test_formation_times_on_a_ramp():
    steps = np.arange(0, 101, dtype=float)
    series = np.clip(steps / 50, 0, 1) * 0.8 + 0.1  # 0.1 -> 0.9 at step 50
    t = formation_times(series, steps, [0.5, 0.9], start=0.1, final_window=5)
    np.testing.assert_array_equal(t, [25.0, 45.0])
    # from the initial mean (first 5 values: 0.1 + 0.8 * 2/50) instead of a given start
    t = formation_times(series, steps, [0.5], start=None, final_window=5)
    np.testing.assert_array_equal(t, [26.0])  # 0.132 + 0.5 * 0.768 = 0.516 = 0.1 + 0.016 * 26
    flat = np.full(steps.size, 0.5)
    assert np.isnan(formation_times(flat, steps, [0.5], start=None, final_window=5, min_gain=0.02))


def test_baseline_chance_versus_initial():
    ds, y = _planted([50])
    x = ds["l0"].values.copy()
    x[:, :, 5] += 2.0 * y[None, :] * (ds["step"].values[:, None] < 50)  # partly decodable early
    ds["l0"] = (ds["l0"].dims, x)
    initial = formation(ds, targets=y, baseline="initial").compute()
    chance = formation(ds, targets=y, baseline="chance", fractions=(0.3,)).compute()
    assert float(initial.decodability.sel(layer="l0").isel(step=0)) > 0.6
    assert float(initial.formation_step.sel(layer="l0", fraction=0.9)) == 50.0
    assert float(chance.formation_step.sel(layer="l0", fraction=0.3)) == 0.0  # reached at init


def test_formation_on_a_captured_run(tmp_path):
    from dimlapse.capture import Recorder

    torch.manual_seed(0)
    x = torch.randn(256, 5)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    model = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    with Recorder(model, tmp_path / "r.zarr", every=10, probe=x[:64], probe_targets=y[:64]) as rec:
        for _ in range(60):
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            rec.step(loss)
    out = formation(open_run(tmp_path / "r.zarr"), folds=4).compute()
    assert set(out.layer.values) == {"0", "2"}
    assert out.decodability.sizes["step"] == 7
    assert 0 <= float(out.chance) <= 1


def test_validation_messages():
    ds, y = _planted([0])
    with pytest.raises(ValueError, match="`folds` to be an int >= 2"):
        formation(ds, targets=y, folds=1)
    with pytest.raises(ValueError, match="`fractions` to be a float in"):
        formation(ds, targets=y, fractions=(1.5,))
    with pytest.raises(ValueError, match="`baseline` to be 'initial' or 'chance'"):
        formation(ds, targets=y, baseline="zero")
    with pytest.raises(ValueError, match="Unknown `layers`"):
        formation(ds, targets=y, layers=["nope"])
    with pytest.raises(ValueError, match="Expected `targets`"):
        formation(ds)
    with pytest.raises(TypeError, match="run_or_activations"):
        formation(np.zeros(3))


def _reference_ridge_cv_accuracy(x, y, test_folds, *, alpha, relative):
    """The formation job's ridge before the fold-Gram kernel (one matrix, one fold at a time):
    the independent answer the batched kernel must reproduce."""
    if not np.all(np.isfinite(x)):
        return float("nan")
    x = np.asarray(x, dtype=np.float64)
    n, d = x.shape
    classes, codes = np.unique(y, return_inverse=True)
    onehot = np.eye(classes.size)[codes]
    gram = x.T @ x
    scores = []
    for test in test_folds:
        train = np.setdiff1d(np.arange(n), test, assume_unique=True)
        m = train.size
        mu, ybar = x[train].mean(0), onehot[train].mean(0)
        yc = onehot[train] - ybar
        xt = x[test]
        gc = gram - xt.T @ xt - m * np.outer(mu, mu)
        rhs = x[train].T @ yc
        scale = float(np.trace(gc))
        lam = alpha * scale / d if relative else alpha
        if scale <= 0.0:
            pred = np.broadcast_to(ybar, (test.size, classes.size))
        else:
            pred = (xt - mu) @ np.linalg.solve(gc + lam * np.eye(d), rhs) + ybar
        scores.append(np.mean(np.argmax(pred, axis=1) == codes[test]))
    return float(np.mean(scores))


@pytest.mark.parametrize("relative", [True, False])
def test_fold_gram_kernel_equals_the_per_fold_reference(relative):
    from dimlapse.analyze.jobs._formation import ridge_cv_accuracies

    rng = np.random.default_rng(7)
    n, d, steps = 150, 12, 9
    y = rng.integers(0, 4, n)
    scale = np.logspace(-3, 3, steps)[:, None, None]  # the relative penalty must follow it
    x = scale * (
        rng.normal(size=(steps, n, d))
        + np.linspace(0, 1.5, steps)[:, None, None] * np.eye(4, d)[y]
        + 4.0
    )  # signal grows with the step; an offset to centre
    x[3] = 2.5  # constant features: the intercept alone predicts
    x[5, 7, 1] = np.nan  # a non-finite step
    folds = fold_indices(n, 5, seed=1)
    gram = np.empty((steps, d, d))
    got = ridge_cv_accuracies(x, y, folds, alpha=0.3, relative=relative, gram_out=gram)
    ref = [_reference_ridge_cv_accuracy(b, y, folds, alpha=0.3, relative=relative) for b in x]
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)
    assert np.isnan(got[5]) and len(set(np.round(got[~np.isnan(got)], 6))) > 3  # not constant
    # the shared Gram is the sample-centred one of the dimensionality job
    xc = x[0] - x[0].mean(0)
    np.testing.assert_allclose(gram[0], xc.T @ xc, rtol=1e-12)


@pytest.mark.parametrize("relative", [True, False])
def test_kernel_form_stack_equals_the_primal_reference(relative):
    """d > n: the batched kernel form (one kernel per step, a Cholesky solve per fold) against
    the primal d x d solve of the reference, steps with growing signal, scale, constant
    features and NaN included."""
    from dimlapse.analyze.jobs._formation import ridge_cv_accuracies

    rng = np.random.default_rng(11)
    n, d, steps = 60, 90, 8
    y = rng.integers(0, 5, n)
    scale = np.logspace(-2, 2, steps)[:, None, None]
    x = scale * (
        rng.normal(size=(steps, n, d))
        + np.linspace(0, 2.0, steps)[:, None, None] * np.eye(5, d)[y]
        - 3.0
    )
    x[2] = -1.5  # constant features: the intercept alone predicts
    x[6, 4, 9] = np.inf
    folds = fold_indices(n, 5, seed=2)
    alpha = 0.2 if relative else 0.5
    got = ridge_cv_accuracies(x, y, folds, alpha=alpha, relative=relative)
    ref = [_reference_ridge_cv_accuracy(b, y, folds, alpha=alpha, relative=relative) for b in x]
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)
    assert np.isnan(got[6]) and len(set(np.round(got[~np.isnan(got)], 6))) > 3  # not constant
    assert ridge_cv_accuracy(x[5], y, folds, alpha=alpha, relative=relative) == got[5]
    with pytest.raises(ValueError, match="gram_out"):
        ridge_cv_accuracies(x, y, folds, alpha=alpha, relative=relative, gram_out=np.empty(1))


def test_formation_equals_the_reference_on_planted_layers_with_positions():
    ds, y = _planted([40, 90], rows=3, seed=4)  # 3 rows per example: (n, 18) per step
    out = formation(ds, targets=y).compute()
    folds = fold_indices(y.size, 5)
    for layer in ("l0", "l1"):
        x = ds[layer].values.reshape(ds.sizes["step"], y.size, -1)
        ref = [_reference_ridge_cv_accuracy(b, y, folds, alpha=0.1, relative=True) for b in x]
        np.testing.assert_allclose(out.decodability.sel(layer=layer), ref, rtol=0, atol=1e-12)


def _modular_sum(p: int) -> tuple[xr.Dataset, np.ndarray]:
    """Every pair (a, b) of Z_p, target (a + b) mod p: an additive layer (one-hot a beside
    one-hot b) and a layer holding the sum itself, three identical steps."""
    a, b = (g.ravel() for g in np.meshgrid(np.arange(p), np.arange(p), indexing="ij"))
    y = (a + b) % p
    additive = np.concatenate([np.eye(p)[a], np.eye(p)[b]], axis=1)  # (p^2, 2p)
    joint = np.concatenate([np.eye(p)[y], np.zeros((p * p, p))], axis=1)
    dims = ("step", "sample", "feature")
    ds = xr.Dataset(
        {
            "additive": (dims, np.repeat(additive[None], 3, 0)),
            "joint": (dims, np.repeat(joint[None], 3, 0)),
        },
        coords={"step": np.arange(3)},
    )
    return ds, y


def test_an_additive_layer_of_a_modular_sum_is_decoded_below_a_uniform_guess():
    from dimlapse.analyze.report._context import below_chance

    ds, y = _modular_sum(11)
    out = formation(ds, targets=y).compute()
    assert out.chance.attrs["probe_examples"] == 121 and out.chance.attrs["classes"] == 11
    # a held-out pair's neighbours in training (same a, or same b) all carry other sums
    np.testing.assert_array_equal(out.decodability.sel(layer="additive"), 0.0)
    np.testing.assert_array_equal(out.decodability.sel(layer="joint"), 1.0)
    [(layer, acc, p)] = below_chance(out)
    assert (layer, acc) == ("additive", 0.0)
    assert p == pytest.approx((10 / 11) ** 121, rel=1e-9)  # P(no hit in 121 guesses at 1/11)
