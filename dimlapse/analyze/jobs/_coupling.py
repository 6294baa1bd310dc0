"""Coupling of dimensionality with training scalars: Spearman rho with block-bootstrap intervals.

Trending series correlate trivially (two independent random walks routinely give |rho| > 0.5),
so every correlation is reported on the raw series and on first differences, each with a
moving-block-bootstrap percentile interval (Kuensch 1989; Politis and Romano 1994 for the
block idea; Lahiri 2003, ch. 2-3, for block length ~ n^(1/3)).
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from .._provenance import params_attrs
from .._validate import check_fraction, check_positive_int
from ._trajectories import as_trajectories, step_values

TARGETS = ("loss", "grad_norm")
TRANSFORMS = ("raw", "diff")


def align_scalars(scalar_steps: np.ndarray, values: np.ndarray, capture_steps: np.ndarray):
    """Mean of a per-optimizer-step scalar over each capture interval.

    The value at capture step ``c_i`` is the mean of the finite scalar values logged at
    optimizer steps ``s`` with ``c_{i-1} < s <= c_i`` (for a regular schedule: the `every`
    steps ending at ``c_i``); the first capture's interval is ``s <= c_0``, empty when the
    run starts at step 0, which gives NaN. Returns float64 of shape ``capture_steps.shape``.
    """
    order = np.argsort(scalar_steps, kind="stable")
    s = np.asarray(scalar_steps, dtype=np.float64)[order]
    v = np.asarray(values, dtype=np.float64)[order]
    finite = np.isfinite(v)
    csum = np.concatenate([[0.0], np.cumsum(np.where(finite, v, 0.0))])
    ccount = np.concatenate([[0], np.cumsum(finite)])
    hi = np.searchsorted(s, capture_steps, side="right")
    prev = np.concatenate([[-np.inf], capture_steps[:-1]])
    lo = np.searchsorted(s, prev, side="right")
    count = ccount[hi] - ccount[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, (csum[hi] - csum[lo]) / np.maximum(count, 1), np.nan)


def tie_ranks(x: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Average ranks of each original point within resamples given by multiplicities.

    `x` (n,), `counts` (n, B): resample b holds ``counts[i, b]`` copies of ``x[i]``. Returns
    (n, B): the mid-rank, within resample b, that every copy of ``x[i]`` receives (ties in
    `x` share a rank), exactly what ``scipy.stats.rankdata`` gives on the expanded resample.
    The (n, B) layout keeps every gather and cumulative sum on contiguous rows.
    """
    order = np.argsort(x, kind="stable")
    xs = x[order]
    new_group = np.concatenate([[True], xs[1:] != xs[:-1]])
    sorted_counts = counts[order].astype(np.float64)  # (n, B) in ascending x
    if new_group.all():  # no ties: every group is one point
        before = np.cumsum(sorted_counts, axis=0) - sorted_counts
        mid = before + (sorted_counts + 1.0) / 2.0
    else:
        starts = np.flatnonzero(new_group)
        group = np.cumsum(new_group) - 1  # (n,) sorted position -> tie group
        totals = np.add.reduceat(sorted_counts, starts, axis=0)  # (G, B)
        before = np.cumsum(totals, axis=0) - totals
        mid = (before + (totals + 1.0) / 2.0)[group]
    ranks = np.empty_like(mid)
    ranks[order] = mid
    return ranks


def weighted_pearson(rx: np.ndarray, ry: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Pearson correlation per column of (n, B) values weighted by multiplicities (n, B)."""
    w = counts.astype(np.float64)
    total = w.sum(axis=0)
    dx = rx - (w * rx).sum(axis=0) / total
    dy = ry - (w * ry).sum(axis=0) / total
    wdx = w * dx
    cov = (wdx * dy).sum(axis=0)
    var = (wdx * dx).sum(axis=0) * (w * dy * dy).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(var > 0, cov / np.sqrt(np.where(var > 0, var, 1.0)), np.nan)


def weighted_spearman(x: np.ndarray, y: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Spearman rho of the resamples described by multiplicities `counts` (n, B).

    Equal to ``scipy.stats.spearmanr(np.repeat(x, c), np.repeat(y, c))`` for each column
    ``c``, without materialising or sorting the resamples (ranks within a resample follow
    from the multiplicities and one sort of the original). Constant resamples give NaN.
    """
    return weighted_pearson(tie_ranks(x, counts), tie_ranks(y, counts), counts)


def block_counts(n: int, block: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Multiplicities (n, n_boot) of moving-block-bootstrap resamples of length n.

    Each resample concatenates ``ceil(n / block)`` blocks of `block` consecutive indices with
    uniform random starts in ``[0, n - block]``, truncated to n indices (Kuensch 1989).
    """
    k = -(-n // block)
    starts = rng.integers(0, n - block + 1, size=(k, n_boot))
    lengths = np.full((k, 1), block)
    lengths[-1] = n - block * (k - 1)
    diff = np.zeros((n + 1, n_boot), dtype=np.int64)
    cols = np.broadcast_to(np.arange(n_boot), (k, n_boot))
    np.add.at(diff, (starts, cols), 1)
    np.add.at(diff, (starts + lengths, cols), -1)
    return np.cumsum(diff[:n], axis=0)


def spearman_interval(
    x: np.ndarray,
    y: np.ndarray,
    *,
    block: int | None,
    n_boot: int,
    level: float,
    seed: int,
    cache: dict | None = None,
) -> tuple[float, float, float, int, int]:
    """Spearman rho of the finite pairs, its block-bootstrap interval, n and the block used.

    `cache` (a dict owned by the caller) keeps the block draws per (n, block) and the ranks
    of `y` per resample set, which every trajectory correlated with the same scalar shares.
    """
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = int(x.size)
    if n < 4:
        return np.nan, np.nan, np.nan, n, 0
    rho = float(weighted_spearman(x, y, np.ones((n, 1), dtype=np.int64))[0])
    b = max(1, round(n ** (1 / 3))) if block is None else min(block, n)
    cache = {} if cache is None else cache
    key = ("counts", n, b)
    if key not in cache:
        counts = block_counts(n, b, n_boot, np.random.default_rng(seed))
        cache[key] = (counts, counts.astype(np.float64))
    counts, w = cache[key]
    ykey = ("y", n, b, y.tobytes())
    if ykey not in cache:
        ry = tie_ranks(y, counts)
        dy = ry - (w * ry).sum(axis=0) / n  # weights sum to n in every resample
        cache[ykey] = (w * dy, (w * dy * dy).sum(axis=0))
    wdy, vy = cache[ykey]
    rx = tie_ranks(x, counts)  # (n, B)
    cov = np.einsum("ib,ib->b", rx, wdy)
    mx = np.einsum("ib,ib->b", w, rx) / n
    vx = np.einsum("ib,ib,ib->b", w, rx, rx) - n * mx * mx
    with np.errstate(invalid="ignore", divide="ignore"):
        boot = np.where((vx > 1e-9) & (vy > 1e-9), cov / np.sqrt(np.abs(vx * vy)), np.nan)
    boot = boot[np.isfinite(boot)]
    if boot.size == 0:
        return rho, np.nan, np.nan, n, b
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(boot, [tail, 1.0 - tail])
    return rho, float(low), float(high), n, b


def coupling(
    dim: xr.DataArray | xr.Dataset,
    scalars: xr.Dataset,
    *,
    targets: tuple[str, ...] = TARGETS,
    block_length: int | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> xr.Dataset:
    """Spearman rho of each trajectory with training scalars, raw and differenced.

    Parameters
    ----------
    dim : DataArray (..., step) or Dataset with a ``dimensionality`` variable
        Trajectories at the capture steps; lazy input gives a lazy result.
    scalars : xr.Dataset
        One row per optimizer step (``step`` coordinate), e.g. ``open_run(path).scalars``.
        Each target is aligned to the capture steps by :func:`align_scalars` (mean over the
        optimizer steps since the previous capture, up to and including this one).
    targets : tuple of str
        Scalar variables to correlate with; missing ones give NaN with the name recorded.
    block_length : int, optional
        Moving-block length in samples; default ``round(n ** (1/3))`` per series.
    n_boot : int
        Bootstrap resamples.
    level : float
        Coverage of the percentile interval.
    seed : int
        Seed of the block draws (the same draws for every series of equal length).

    Returns
    -------
    xr.Dataset
        ``rho``, ``rho_low``, ``rho_high``, ``n_pairs``, ``block`` with dims
        (..., target, transform) where transform is ``raw`` or ``diff`` (first differences of
        both series), plus ``aligned`` (target, step): the scalars at the capture steps.
    """
    da = as_trajectories(dim)
    if not isinstance(scalars, xr.Dataset) or "step" not in scalars.dims:
        raise TypeError(
            "Expected `scalars` to be an xr.Dataset with a 'step' dimension (one row per "
            f"optimizer step, e.g. open_run(path).scalars), got {type(scalars).__name__}"
        )
    if isinstance(targets, str) or not targets:
        raise ValueError(f"Expected `targets` to be a non-empty tuple of names, got {targets!r}")
    if block_length is not None:
        block_length = check_positive_int(block_length, "block_length")
    n_boot = check_positive_int(n_boot, "n_boot", minimum=10)
    level = check_fraction(level, "level")
    capture = step_values(da)
    sstep = np.asarray(scalars["step"].values, dtype=np.float64)
    aligned = np.stack(
        [
            align_scalars(sstep, np.asarray(scalars[t].values), capture)
            if t in scalars.data_vars
            else np.full(capture.shape, np.nan)
            for t in targets
        ]
    )  # (target, step), small: loaded eagerly
    missing = [t for t in targets if t not in scalars.data_vars]
    n_t = len(targets)

    def gufunc(arr: np.ndarray) -> np.ndarray:
        lead = arr.shape[:-1]
        flat = arr.reshape(-1, arr.shape[-1]).astype(np.float64)
        out = np.full((flat.shape[0], n_t, 2, 5), np.nan)
        cache: dict = {}  # per chunk: block draws and target ranks are shared by all rows
        for r, series in enumerate(flat):
            for t in range(n_t):
                pairs = ((series, aligned[t]), (np.diff(series), np.diff(aligned[t])))
                for k, (x, y) in enumerate(pairs):
                    out[r, t, k] = spearman_interval(
                        x,
                        y,
                        block=block_length,
                        n_boot=n_boot,
                        level=level,
                        seed=seed,
                        cache=cache,
                    )
        return out.reshape((*lead, n_t, 2, 5))

    stats = xr.apply_ufunc(
        gufunc,
        da,
        input_core_dims=[["step"]],
        output_core_dims=[["target", "transform", "stat"]],
        dask="parallelized",
        output_dtypes=[np.float64],
        dask_gufunc_kwargs={
            "output_sizes": {"target": n_t, "transform": 2, "stat": 5},
            "allow_rechunk": True,
        },
    ).assign_coords(target=list(targets), transform=list(TRANSFORMS))
    names = {
        "rho": ("Spearman rank correlation", "1"),
        "rho_low": (f"lower end of the {level:.0%} moving-block-bootstrap interval", "1"),
        "rho_high": (f"upper end of the {level:.0%} moving-block-bootstrap interval", "1"),
        "n_pairs": ("finite pairs used", "1"),
        "block": ("moving-block length used", "sample"),
    }
    data_vars = {
        name: stats.isel(stat=i, drop=True).assign_attrs(long_name=ln, units=u)
        for i, (name, (ln, u)) in enumerate(names.items())
    }
    data_vars["aligned"] = xr.DataArray(
        aligned,
        dims=("target", "step"),
        coords={
            "target": list(targets),
            "step": da["step"].values if "step" in da.coords else capture,
        },
        attrs={"long_name": "scalar mean over each capture interval", "units": "1"},
    )
    ds = xr.Dataset(data_vars)
    ds.attrs = params_attrs(
        "coupling",
        {
            "method": "Spearman rho on finite pairs; moving-block bootstrap percentile interval",
            "alignment": "mean of the scalar over optimizer steps s with previous capture < s "
            "<= capture step (the `every` steps ending at each capture step)",
            "difference": "diff = first differences of both aligned series",
            "targets": list(targets),
            "missing_targets": missing,
            "block_length": block_length if block_length is not None else "round(n ** (1/3))",
            "n_boot": n_boot,
            "level": level,
            "seed": seed,
        },
    )
    return ds
