"""Training dynamics: loss and gradient-norm spikes, and the held-out accuracy curve.

A transition of the representation that coincides with a loss spike is a different claim from
one in quiet training, so the report puts both side by side. Spikes are found on the log of
each series (loss and gradient norm decay over orders of magnitude): the residual from a
running median of ``window`` optimizer steps, against a robust noise scale (1.4826 x the
median absolute residual), is a spike where it exceeds ``threshold`` scales; runs of spike
points closer than ``window // 2`` steps merge into one spike.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr
from scipy.ndimage import median_filter

from ._jobcommon import check_positive_int, params_attrs

__all__ = ["SPIKE_TARGETS", "find_spikes", "spike_at", "training_dynamics"]

SPIKE_TARGETS = ("loss", "grad_norm")
MAX_SPIKES = 20  # per target, largest first


def find_spikes(
    steps: np.ndarray, values: np.ndarray, *, window: int = 101, threshold: float = 8.0
) -> list[tuple[float, float, float]]:
    """Upward spikes of a positive series: ``(start_step, end_step, peak ratio)``, largest first.

    Parameters
    ----------
    steps, values : numpy.ndarray, shape (n,)
        Optimizer steps and the series (non-finite and non-positive values are ignored).
    window : int
        Running-median window in samples.
    threshold : float
        Robust scales of the log residual a spike point exceeds.

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
    resid = y - base  # (n,)
    scale = 1.4826 * float(np.median(np.abs(resid)))
    if scale <= 0:
        return []
    hot = np.flatnonzero(resid > threshold * scale)
    if hot.size == 0:
        return []
    groups, start = [], 0
    for k in range(1, hot.size + 1):
        if k == hot.size or hot[k] - hot[k - 1] > window // 2:
            groups.append(hot[start:k])
            start = k
    out = [(float(s[g[0]]), float(s[g[-1]]), float(np.exp(resid[g].max()))) for g in groups]
    return sorted(out, key=lambda t: -t[2])[:MAX_SPIKES]


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
