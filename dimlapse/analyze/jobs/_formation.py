"""The formation job: when does each layer's probe representation make the targets decodable?

At each capture step and for each layer, a linear readout is fitted to the layer's stored probe
activations and scored by k-fold cross-validation on the probe itself: closed-form ridge
regression on one-hot targets with an intercept, prediction by argmax (the rule of
scikit-learn's ``RidgeClassifier``; Rifkin and Lippert 2007, "Notes on regularized least
squares"). Layers whose activations are reduced to several rows per probe example (sampled
conv positions or tokens) are read as one row per example, the sampled rows side by side.
Per layer, the *formation step* for a fraction ``f`` is the first capture step at which the
decodability reaches ``start + f * (final - start)``: ``final`` the mean over the last
``final_window`` capture steps, ``start`` the mean over the first ``final_window`` (the
default, ``baseline="initial"``: what training added) or the majority-class share of the probe
(``baseline="chance"``). A layer that gains less than ``min_gain`` has no formation step (NaN):
its targets were as decodable at the start as at the end.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dask.array as dsa
import numpy as np
import xarray as xr

from .._dimensionality import step_chunked
from .._provenance import params_attrs
from .._spectra import blas_single_thread
from .._validate import check_fraction, check_positive_int

__all__ = [
    "fold_indices",
    "formation",
    "formation_times",
    "ridge_cv_accuracies",
    "ridge_cv_accuracy",
]

DEFAULT_FRACTIONS = (0.5, 0.9)


def fold_indices(n: int, folds: int, *, seed: int = 0) -> list[np.ndarray]:
    """Test indices of ``folds`` near-equal folds of a seeded permutation of ``range(n)``.

    The sizes follow scikit-learn's ``KFold`` (the first ``n % folds`` folds one larger).
    """
    perm = np.random.default_rng(seed).permutation(n)
    sizes = np.full(folds, n // folds)
    sizes[: n % folds] += 1
    return np.split(perm, np.cumsum(sizes)[:-1])


def ridge_cv_accuracy(
    x: np.ndarray, y: np.ndarray, test_folds: Sequence[np.ndarray], *, alpha: float, relative: bool
) -> float:
    """Mean held-out accuracy over folds of a ridge classifier on ``x`` (n, d), labels ``y`` (n,).

    Each fold centres its training rows and one-hot targets, solves the ridge normal equations
    and predicts ``argmax`` on the held-out rows. ``lambda = alpha`` when not ``relative``,
    else ``alpha * trace(Xc^T Xc) / d`` (alpha in units of the training Gram's mean eigenvalue,
    so the fit does not depend on the activation scale). This is :func:`ridge_cv_accuracies`
    of one matrix (primal form when ``d <= n``, else kernel form). Non-finite input gives NaN.
    Contract: labels are non-negative ints, every fold non-empty.
    """
    x = np.asarray(x, dtype=np.float64)
    return float(ridge_cv_accuracies(x[None], y, test_folds, alpha=alpha, relative=relative)[0])


def _kernel_accuracies(
    x: np.ndarray, y: np.ndarray, test_folds: Sequence[np.ndarray], *, alpha: float, relative: bool
) -> np.ndarray:
    """:func:`ridge_cv_accuracies` in kernel form, for ``d > n``: (step, n, d) -> (step,).

    Per step the kernel ``K = X X^T`` (n, n) is formed once; each fold centres its training
    block ``K[train, train]`` (m, m) and the test rows' block ``K[test, train]`` by the training
    mean, and a Cholesky solve of the penalised block gives the dual weights of every target
    (the block is symmetric positive definite for ``lambda > 0``; LU where rounding breaks
    that). An eigendecomposition of ``K`` shared by the folds would not pay: each fold's block
    is a different submatrix, re-centred, with its own relative penalty, and the
    eigendecomposition alone costs about 3x the five Cholesky solves (n = 512, measured).
    """
    from scipy.linalg import cho_factor, cho_solve

    steps, n, d = np.shape(x)
    classes, codes = np.unique(y, return_inverse=True)
    onehot = np.eye(classes.size)[codes]  # (n, C)
    everything = np.arange(n)
    per_fold = []
    for test in test_folds:
        train = np.setdiff1d(everything, test, assume_unique=True)
        ybar = onehot[train].mean(0)  # (C,)
        per_fold.append((test, train, ybar, onehot[train] - ybar, codes[test]))
    out = np.full(steps, np.nan)
    for i in range(steps):
        xi = np.asarray(x[i], dtype=np.float64)  # (n, d)
        if not np.isfinite(xi).all():
            continue
        gram = xi @ xi.T  # (n, n)
        score = 0.0
        for test, train, ybar, rhs, ck in per_fold:
            k = gram[np.ix_(train, train)]  # (m, m), a copy
            kr = k.mean(0)
            kbar = kr.mean()
            k -= kr[:, None]  # centred training kernel, in place
            k -= kr[None, :]
            k += kbar
            kt = gram[np.ix_(test, train)]  # (t, m)
            cross = kt - kt.mean(1, keepdims=True) - kr[None, :] + kbar  # (t, m)
            scale = float(np.trace(k))
            lam = alpha * scale / d if relative else alpha
            if scale <= 0.0:  # constant features: the intercept alone predicts
                pred = np.broadcast_to(ybar, (test.size, classes.size))
            else:
                diag = np.einsum("ii->i", k)  # a writable view of the diagonal
                diag += lam
                try:
                    w = cho_solve(
                        cho_factor(k, check_finite=False, overwrite_a=True),
                        rhs,
                        check_finite=False,
                    )
                except np.linalg.LinAlgError:  # a penalty below rounding: not numerically PD
                    gc = gram[np.ix_(train, train)]
                    gc = gc - kr[:, None] - kr[None, :] + kbar + lam * np.eye(train.size)
                    w = np.linalg.solve(gc, rhs)
                pred = cross @ w + ybar  # (t, C)
            score += float(np.mean(np.argmax(pred, axis=1) == ck))
        out[i] = score / len(test_folds)
    return out


def ridge_cv_accuracies(
    x: np.ndarray,
    y: np.ndarray,
    test_folds: Sequence[np.ndarray],
    *,
    alpha: float,
    relative: bool,
    gram_out: np.ndarray | None = None,
) -> np.ndarray:
    """:func:`ridge_cv_accuracy` of a stack of matrices ``x`` (step, n, d): (step,).

    In kernel form when ``d > n`` (:func:`_kernel_accuracies`). Otherwise every fold and every
    target from one pass over the rows of a step: the step is centred by its mean over all rows
    (ridge with an intercept does not depend on a constant shift of ``x``), and each fold's
    block ``G_k = Xc_k^T Xc_k`` (d, d), column sums ``s_k`` and cross products
    ``B_k = Xc_k^T Y_k`` are formed once; fold ``k``'s centred training Gram is then
    ``G - G_k - m mu mu^T`` with ``G = sum_k G_k``, ``m`` the training rows and ``mu`` their
    mean, and its right-hand side ``(B - B_k) - m mu ybar^T``; a Cholesky solve gives the
    weights of every target. The Grams cost one pass over the rows instead of two, and no fold
    copies its training rows. With a single ``alpha`` there is no grid to share a decomposition
    across, and each fold's Gram differs from the full one by a rank-``t`` downdate, so one
    eigendecomposition per step (about 3x the five Cholesky solves at d = 256, 1.8x at d = 384
    with 97 targets, measured) would not pay. Steps are looped, not batched: a step's (d, d)
    blocks stay in cache, where (step, d, d) stacks were 2-3x slower on a busy machine.

    ``G`` is the sample-centred Gram whose eigenvalues are the squared singular values of the
    dimensionality job (:func:`dimlapse.analyze.singular_values` with ``center=True``); pass
    ``gram_out`` (step, d, d) to receive it (zeros at steps holding NaN/Inf, which give NaN).
    """
    from scipy.linalg import cho_factor, cho_solve

    steps, n, d = np.shape(x)
    if d > n:
        if gram_out is not None:
            raise ValueError(
                f"Expected `gram_out` only for d <= n (the primal form), got d = {d} > n = {n}"
            )
        return _kernel_accuracies(x, y, test_folds, alpha=alpha, relative=relative)
    classes, codes = np.unique(y, return_inverse=True)
    onehot = np.eye(classes.size)[codes]  # (n, C)
    fold_y = [(onehot[t], onehot[t].sum(0), codes[t]) for t in test_folds]  # (t, C), (C,), (t,)
    ysum = onehot.sum(0)  # (C,)
    out = np.full(steps, np.nan)
    for i in range(steps):
        xi = np.asarray(x[i], dtype=np.float64)  # (n, d)
        if not np.isfinite(xi).all():
            if gram_out is not None:
                gram_out[i] = 0.0
            continue
        xc = xi - xi.mean(0)
        parts = []
        for test, (yk, _, _) in zip(test_folds, fold_y, strict=True):
            xk = xc[test]  # (t, d)
            parts.append((xk, xk.T @ xk, xk.sum(0), xk.T @ yk))  # (d, d), (d,), (d, C)
        gram = np.sum([p[1] for p in parts], axis=0)  # (d, d) centred Gram of the step
        total = np.sum([p[2] for p in parts], axis=0)  # (d,), ~0 after centring
        cross = np.sum([p[3] for p in parts], axis=0)  # (d, C)
        score = 0.0
        for (xk, gk, sk, bk), (_, yk_sum, ck) in zip(parts, fold_y, strict=True):
            m = n - xk.shape[0]
            mu, ybar = (total - sk) / m, (ysum - yk_sum) / m  # (d,), (C,)
            gc = gram - gk  # (d, d) centred training Gram, built in place (d x d passes count)
            gc -= m * np.outer(mu, mu)
            scale = float(np.trace(gc))
            lam = alpha * scale / d if relative else alpha
            if scale <= 0.0:  # constant features: the intercept alone predicts
                pred = np.broadcast_to(ybar, (xk.shape[0], classes.size))
            else:
                rhs = cross - bk - m * np.outer(mu, ybar)  # (d, C)
                diag = np.einsum("ii->i", gc)  # a writable view of the diagonal
                diag += lam
                try:
                    w = cho_solve(cho_factor(gc, check_finite=False, overwrite_a=True), rhs)
                except np.linalg.LinAlgError:  # a penalty below rounding: not numerically PD
                    gc = gram - gk - m * np.outer(mu, mu) + lam * np.eye(d)
                    w = np.linalg.solve(gc, rhs)
                pred = (xk - mu) @ w + ybar
            score += float(np.mean(np.argmax(pred, axis=1) == ck))
        out[i] = score / len(test_folds)
        if gram_out is not None:
            gram_out[i] = gram
    return out


def _block(
    block: np.ndarray, *, y: np.ndarray, folds: list[np.ndarray], alpha: float, relative: bool
) -> np.ndarray:
    """(step, rows, feature) -> (step,) cross-validated accuracy, rows regrouped per example."""
    n = y.size
    x = block.reshape(block.shape[0], n, -1)  # (step, n, rows_per_example * feature)
    with blas_single_thread():
        return ridge_cv_accuracies(x, y, folds, alpha=alpha, relative=relative)


def formation_times(
    series: np.ndarray,
    steps: np.ndarray,
    fractions: Sequence[float],
    *,
    start: float | None,
    final_window: int,
    min_gain: float = 0.0,
) -> np.ndarray:
    """First step where ``series`` reaches ``start + f * (final - start)`` for each ``f``.

    ``final`` is the mean of the last ``final_window`` finite values, ``start`` when None the
    mean of the first ``final_window``. NaN when the series has no finite value or gains no
    more than ``min_gain`` (``final - start <= min_gain``).
    """
    ok = np.isfinite(series)
    out = np.full(len(fractions), np.nan)
    if not ok.any():
        return out
    final = float(np.mean(series[ok][-final_window:]))
    if start is None:
        start = float(np.mean(series[ok][:final_window]))
    if not final - start > min_gain:
        return out
    for i, f in enumerate(fractions):
        hit = np.flatnonzero(ok & (series >= start + f * (final - start)))
        out[i] = steps[hit[0]] if hit.size else np.nan
    return out


def _targets(run_or_activations: Any, targets: Any) -> tuple[xr.Dataset, np.ndarray]:
    if isinstance(run_or_activations, xr.Dataset):
        acts = run_or_activations
    elif hasattr(run_or_activations, "activations"):
        acts = run_or_activations.activations
        if targets is None:
            probe = run_or_activations.probe
            if "targets" not in probe:
                raise ValueError(
                    "Expected the run to store probe targets (Recorder(probe_targets=...)), "
                    "found none; pass `targets=` (one label per probe example)"
                )
            targets = probe["targets"].values
    else:
        raise TypeError(
            "Expected `run_or_activations` to be a run (dimlapse.analyze.open_run) or an "
            f"activations Dataset, got {type(run_or_activations).__name__}"
        )
    if targets is None:
        raise ValueError("Expected `targets` (one label per probe example) with a Dataset input")
    y = np.asarray(targets)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(
            f"Expected `targets` to be a 1-D array of int labels, got dtype {y.dtype} and "
            f"shape {y.shape}; sequence targets are not supported"
        )
    return acts, y


def formation(
    run_or_activations: Any,
    *,
    targets: Any = None,
    layers: Sequence[str] | None = None,
    folds: int = 5,
    alpha: float = 0.1,
    relative_alpha: bool = True,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    final_window: int = 5,
    baseline: str = "initial",
    min_gain: float = 0.02,
    seed: int = 0,
) -> xr.Dataset:
    """Cross-validated linear decodability of the probe targets per layer and capture step.

    Parameters
    ----------
    run_or_activations : Run or xarray.Dataset
        A run from :func:`dimlapse.analyze.open_run` (its probe targets are used), or an
        activations Dataset of ``(step, sample, feature)`` variables with ``targets``.
    targets : array of int, optional
        One label per probe example (default: the run's ``probe/targets``).
    layers : list of str, optional
        Activation layers to score (default: all of them).
    folds : int
        Cross-validation folds on the probe (seeded shuffle, KFold sizes).
    alpha, relative_alpha : float, bool
        Ridge penalty; relative (default) in units of the training Gram's mean eigenvalue.
    fractions : sequence of float in (0, 1)
        Fractions of the gain from ``baseline`` to the final decodability that define the
        formation steps.
    final_window : int
        Capture steps averaged for the final (and initial) decodability.
    baseline : {"initial", "chance"}
        Where the gain is counted from: the first ``final_window`` steps, or chance.
    min_gain : float
        Smallest gain (accuracy) that has a formation step; below it the step is NaN.
    seed : int
        Seed of the fold assignment.

    Returns
    -------
    xarray.Dataset
        ``decodability`` (step, layer), lazy (Dask, one task per store-aligned step chunk and
        layer); ``formation_step`` (layer, fraction), lazy; ``chance`` (scalar). Attrs hold
        every parameter and the definition.

    Examples
    --------
    >>> ds = formation(open_run("data/runs/mlp-mnist1d-s0.zarr"))  # doctest: +SKIP
    >>> ds.formation_step.sel(fraction=0.9).compute()  # doctest: +SKIP
    """
    acts, y = _targets(run_or_activations, targets)
    folds = check_positive_int(folds, "folds", minimum=2)
    final_window = check_positive_int(final_window, "final_window")
    if baseline not in ("initial", "chance"):
        raise ValueError(f"Expected `baseline` to be 'initial' or 'chance', got {baseline!r}")
    if isinstance(min_gain, bool) or not isinstance(min_gain, int | float) or min_gain < 0:
        raise ValueError(f"Expected `min_gain` to be a float >= 0, got {min_gain!r}")
    fractions = [check_fraction(f, "fractions") for f in fractions]
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not alpha > 0:
        raise ValueError(f"Expected `alpha` to be a positive float, got {alpha!r}")
    if folds > y.size:
        raise ValueError(f"Expected `folds` <= the {y.size} probe examples, got {folds}")
    names = [str(k) for k, v in acts.data_vars.items() if v.ndim == 3 and v.dims[0] == "step"]
    if layers is not None:
        unknown = sorted(set(layers) - set(names))
        if unknown:
            raise ValueError(f"Unknown `layers` {unknown}; activation layers: {names}")
        names = list(layers)
    if not names:
        raise ValueError("Expected at least one (step, sample, feature) activation array")
    test_folds = fold_indices(y.size, folds, seed=seed)
    per_layer = []
    for name in names:
        arr = acts[name]
        if arr.shape[1] % y.size:
            raise ValueError(
                f"Layer {name!r} has {arr.shape[1]} rows, not a multiple of the {y.size} targets"
            )
        data = step_chunked(arr)
        per_layer.append(
            dsa.map_blocks(
                _block,
                data,
                y=y,
                folds=test_folds,
                alpha=float(alpha),
                relative=bool(relative_alpha),
                dtype=np.float64,
                drop_axis=[1, 2],
                meta=np.empty((0,), dtype=np.float64),
            )
        )
    steps = acts["step"].values
    dec = xr.DataArray(
        dsa.stack(per_layer, axis=1),  # (step, layer)
        dims=("step", "layer"),
        coords={"step": steps, "layer": names},
        attrs={"long_name": "cross-validated probe accuracy", "units": "1"},
    )
    chance = float(np.max(np.bincount(y - y.min())) / y.size)
    times = xr.apply_ufunc(
        formation_times,
        dec.chunk({"step": -1, "layer": 1}),
        input_core_dims=[["step"]],
        output_core_dims=[["fraction"]],
        vectorize=True,
        dask="parallelized",
        output_dtypes=[np.float64],
        dask_gufunc_kwargs={"output_sizes": {"fraction": len(fractions)}},
        kwargs={
            "steps": steps.astype(np.float64),
            "fractions": fractions,
            "start": chance if baseline == "chance" else None,
            "final_window": final_window,
            "min_gain": float(min_gain),
        },
    ).assign_coords(fraction=fractions)
    times.attrs = {"long_name": "formation step", "units": "optimizer step"}
    params = {
        "folds": folds,
        "alpha": float(alpha),
        "relative_alpha": bool(relative_alpha),
        "fractions": fractions,
        "final_window": final_window,
        "baseline": baseline,
        "min_gain": float(min_gain),
        "seed": seed,
        "definition": "formation step: first capture step with decodability >= start + "
        "fraction * (final - start); final (start): mean of the last (first) final_window "
        "steps, or start = chance; NaN when final - start <= min_gain; "
        "decodability: k-fold ridge classification (one-hot targets, intercept, argmax)",
    }
    out = xr.Dataset(
        {"decodability": dec, "formation_step": times.transpose("layer", "fraction")},
        attrs=params_attrs("formation", params),
    )
    out["chance"] = xr.DataArray(
        chance,
        attrs={
            "long_name": "majority-class share",
            "units": "1",
            # a uniform guess among the classes hits 1 / classes of the examples on average
            "probe_examples": int(y.size),
            "classes": int(np.unique(y).size),
        },
    )
    return out
