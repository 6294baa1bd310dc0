"""Training dynamics: loss and gradient-norm spikes, and the held-out accuracy curve.

A transition of the representation that coincides with a loss spike is a different claim from
one in quiet training, so the report puts both side by side. Spikes are found on the log of
each series (loss and gradient norm decay over orders of magnitude), at two time scales:

- *short*: the residual from a centred running median of ``window`` optimizer steps, against
  a robust noise scale (1.4826 x the median absolute residual), beyond ``threshold`` scales;
- *sustained*: a running median of ``sustain`` steps (which averages mini-batch noise away)
  against the median of the ``baseline`` steps before it (trailing, so a spike lasting hundreds
  of steps does not lift its own baseline, as it lifts a centred median), less that
  difference's median over the run (a decaying loss sits below its trailing median), beyond
  ``threshold`` robust scales of it and at least ``min_ratio`` times the baseline. A loss that
  rises tenfold for 300 steps hides from the first rule (its noise on the log scale is wide and
  the centred median follows it) but not from this one.

Runs of spike points closer than ``window // 2`` steps merge into one spike.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import xarray as xr
from scipy.ndimage import median_filter

from .._provenance import params_attrs
from .._validate import check_positive_int

__all__ = ["SPIKE_TARGETS", "find_spikes", "spike_at", "training_dynamics"]

SPIKE_TARGETS = ("loss", "grad_norm")
MAX_SPIKES = 20  # per target, largest first


def find_spikes(
    steps: np.ndarray,
    values: np.ndarray,
    *,
    window: int = 101,
    threshold: float = 8.0,
    sustain: int = 25,
    baseline: int = 1000,
    min_ratio: float = 2.0,
) -> list[tuple[float, float, float]]:
    """Upward spikes of a positive series: ``(start_step, end_step, peak ratio)``, largest first.

    Parameters
    ----------
    steps, values : numpy.ndarray, shape (n,)
        Optimizer steps and the series (non-finite and non-positive values are ignored).
    window : int
        Running-median window in samples.
    threshold : float
        Robust scales of the log residual a spike point exceeds (both rules).
    sustain, baseline : int
        Sustained rule: running-median window and trailing baseline window, in samples (the
        baseline needs ``baseline // 10`` samples of history, so the first ones are not
        searched by this rule).
    min_ratio : float
        Sustained rule: the smoothed series over its baseline, at least.

    Returns
    -------
    list of (float, float, float)
        First and last step of each spike and its peak over the running median (a ratio).

    Examples
    --------
    >>> x = np.full(400, 1.0) * np.exp(0.01 * np.random.default_rng(0).standard_normal(400))
    >>> x[200:205] *= 5.0
    >>> [(a, b, round(r)) for a, b, r in find_spikes(np.arange(400.0), x)]
    [(200.0, 204.0, 5)]
    """
    keep = np.isfinite(values) & (values > 0)
    s, y = np.asarray(steps, np.float64)[keep], np.log(np.asarray(values, np.float64)[keep])
    if y.size < 10:
        return []
    base = median_filter(y, size=min(window, y.size) | 1, mode="nearest")
    resid = y - base  # (n,) short rule
    scale = 1.4826 * float(np.median(np.abs(resid)))
    if scale <= 0:
        return []
    lift = _sustained_lift(y, sustain, baseline)  # (n,) sustained rule, NaN without history
    ok = np.isfinite(lift)
    hot_long = np.zeros(y.size, dtype=bool)
    if ok.sum() >= 10:
        centre = float(np.median(lift[ok]))
        spread = 1.4826 * float(np.median(np.abs(lift[ok] - centre)))
        with np.errstate(invalid="ignore"):
            lift = lift - centre  # a trend's usual offset from its trailing median
            hot_long = ok & (lift > threshold * spread) & (lift >= np.log(min_ratio))
    hot = np.flatnonzero((resid > threshold * scale) | hot_long)
    if hot.size == 0:
        return []
    groups, start = [], 0
    for k in range(1, hot.size + 1):
        if k == hot.size or hot[k] - hot[k - 1] > window // 2:
            groups.append(hot[start:k])
            start = k
    peak = np.fmax(resid, np.where(hot_long, lift, -np.inf))  # (n,) log ratio over baseline
    out = [(float(s[g[0]]), float(s[g[-1]]), float(np.exp(peak[g].max()))) for g in groups]
    return sorted(out, key=lambda t: -t[2])[:MAX_SPIKES]


def _sustained_lift(y: np.ndarray, sustain: int, baseline: int) -> np.ndarray:
    """Running median of ``sustain`` samples minus the median of the ``baseline`` before it."""
    series = pd.Series(y)
    # centred, shrinking at the ends (padding the ends would let the last value vote many times)
    short = series.rolling(sustain | 1, center=True, min_periods=1).median()
    trail = series.rolling(baseline, min_periods=max(baseline // 10, 2)).median().shift(1)
    return (short - trail).to_numpy()  # (n,)


def training_dynamics(
    scalars: xr.Dataset,
    *,
    targets: Sequence[str] = SPIKE_TARGETS,
    window: int = 101,
    threshold: float = 8.0,
) -> xr.Dataset:
    """Spikes of loss and gradient norm, and the scalars the report plots (eager, small).

    Parameters
    ----------
    scalars : xarray.Dataset
        A run's ``scalars`` group (dim ``step``): ``loss``, and optionally ``grad_norm`` and
        ``test_accuracy`` (NaN except at capture steps).
    targets : sequence of str
        Scalars searched for spikes; those absent are skipped.
    window, threshold
        See :func:`find_spikes`.

    Returns
    -------
    xarray.Dataset
        ``loss``, ``grad_norm``, ``test_accuracy`` over ``step`` (those recorded), and per
        ``(target, spike)``: ``spike_start``, ``spike_end``, ``spike_ratio`` (NaN padded),
        largest spike first. Computed eagerly: scalars are one row per optimizer step.
    """
    window = check_positive_int(window, "window", minimum=3)
    if not isinstance(scalars, xr.Dataset) or "step" not in scalars.dims:
        raise ValueError(
            f"Expected `scalars` to be a Dataset with a 'step' dim (run.scalars), got "
            f"{type(scalars).__name__}"
        )
    keep = [v for v in ("loss", "grad_norm", "test_accuracy") if v in scalars.data_vars]
    out = scalars[keep].load() if keep else xr.Dataset(coords={"step": scalars["step"]})
    found = [t for t in targets if t in out.data_vars]
    steps = np.asarray(out["step"].values, np.float64)
    spikes = [
        find_spikes(steps, np.asarray(out[t].values), window=window, threshold=threshold)
        for t in found
    ]
    width = max([1, *(len(s) for s in spikes)])
    table = np.full((len(found), width, 3), np.nan)  # (target, spike, start/end/ratio)
    for i, rows in enumerate(spikes):
        if rows:
            table[i, : len(rows)] = rows
    dims = ("target", "spike")
    out["spike_start"] = xr.Variable(
        dims, table[..., 0], {"long_name": "first step", "units": "step"}
    )
    out["spike_end"] = xr.Variable(dims, table[..., 1], {"long_name": "last step", "units": "step"})
    out["spike_ratio"] = xr.Variable(
        dims, table[..., 2], {"long_name": "peak over the running median", "units": "1"}
    )
    out = out.assign_coords(target=found, spike=np.arange(width))
    out.attrs = params_attrs(
        "training",
        {
            "method": "log series minus a running median; spike where the residual exceeds "
            "threshold x 1.4826 x median |residual|; points closer than window // 2 merge",
            "window": window,
            "threshold": float(threshold),
            "targets": found,
        },
    )
    return out


def spike_at(ds: xr.Dataset, step: float, *, margin: float = 0.0) -> str | None:
    """The target whose spike contains `step` (within `margin` steps), else None."""
    for target in ds["target"].values if "target" in ds.coords else []:
        a = ds["spike_start"].sel(target=target).values
        b = ds["spike_end"].sel(target=target).values
        if np.any((a - margin <= step) & (step <= b + margin)):
            return str(target)
    return None
