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

Held-out accuracy is summarised by when it rises: ``accuracy_t50`` / ``accuracy_t90`` are the
first capture steps at which it reaches 50 % / 90 % of its rise (from its first recorded value
to its maximum), NaN when it rises by less than ``MIN_ACCURACY_RISE``. These windows, the spikes
and abrupt learning-rate changes are the training context that transitions are labelled with
(:func:`context_windows`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import xarray as xr
from scipy.ndimage import median_filter

from .._provenance import params_attrs
from .._validate import check_positive_int

__all__ = [
    "SPIKE_TARGETS",
    "accuracy_rise",
    "context_windows",
    "find_spikes",
    "lr_changes",
    "spike_at",
    "training_dynamics",
]

SPIKE_TARGETS = ("loss", "grad_norm")
MAX_SPIKES = 20  # per target, largest first
#: Smallest rise of held-out accuracy (first value to maximum) that has a t50 / t90: below it
#: the curve is flat within the resolution of a few hundred probe examples (1 / 256 ~ 0.004
#: per example; 0.05 is over ten examples of a 256-example evaluation).
MIN_ACCURACY_RISE = 0.05
#: A learning-rate change is a step-to-step ratio beyond this (schedules that decay smoothly,
#: e.g. cosine over thousands of steps, change by far less per step).
LR_CHANGE_RATIO = 1.1
CONTEXT_LABELS = {
    "loss": "loss spike",
    "grad_norm": "gradient spike",
    "accuracy": "accuracy jump",
    "lr": "learning-rate change",
}


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


def accuracy_rise(
    steps: np.ndarray,
    accuracy: np.ndarray,
    *,
    fractions: Sequence[float] = (0.5, 0.9),
    min_rise: float = MIN_ACCURACY_RISE,
) -> tuple[float, float, list[float]]:
    """First value, maximum, and the first step reaching each fraction of the rise.

    Parameters
    ----------
    steps, accuracy : numpy.ndarray, shape (n,)
        Steps and held-out accuracy (NaN where not evaluated, e.g. between capture steps).
    fractions : sequence of float
        Shares of the rise ``max - first``.
    min_rise : float
        A smaller rise gives NaN steps (the curve does not rise).

    Returns
    -------
    (float, float, list of float)
        First finite accuracy, its maximum, and per fraction the first step with
        ``accuracy >= first + fraction * (max - first)`` (NaN without a rise).

    Examples
    --------
    >>> acc = np.array([0.1, np.nan, 0.1, 0.5, 0.9, 1.0])
    >>> accuracy_rise(np.arange(6.0) * 10, acc)
    (0.1, 1.0, [40.0, 50.0])
    """
    keep = np.isfinite(accuracy)
    s, a = np.asarray(steps, np.float64)[keep], np.asarray(accuracy, np.float64)[keep]
    if a.size == 0:
        return np.nan, np.nan, [np.nan for _ in fractions]
    first, top = float(a[0]), float(a.max())
    if top - first < min_rise:
        return first, top, [np.nan for _ in fractions]
    # first + f * rise rounds to a level the curve may touch only within float error
    levels = [first + f * (top - first) - 1e-12 for f in fractions]
    return first, top, [float(s[np.argmax(a >= level)]) for level in levels]


def lr_changes(steps: np.ndarray, lr: np.ndarray, *, ratio: float = LR_CHANGE_RATIO):
    """Windows ``(first, last)`` of consecutive steps where the learning rate changes abruptly.

    A step changes the rate when ``lr[t] / lr[t-1]`` is beyond `ratio` either way (or the rate
    leaves or reaches 0); steps closer than 2 apart merge, so a warm-up is one window.
    """
    s, v = np.asarray(steps, np.float64), np.asarray(lr, np.float64)
    ok = np.isfinite(v[1:]) & np.isfinite(v[:-1])
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.abs(np.log(np.where(ok, v[1:], 1.0) / np.where(ok, v[:-1], 1.0)))
    hot = np.flatnonzero(ok & ~(r <= np.log(ratio))) + 1  # NaN ratio (0 -> x): a change
    out: list[tuple[float, float]] = []
    for i in hot:
        if out and s[i] - out[-1][1] <= 2:
            out[-1] = (out[-1][0], float(s[i]))
        else:
            out.append((float(s[i]), float(s[i])))
    return out


def context_windows(ds: xr.Dataset, *, margin: float = 0.0) -> dict[str, list[tuple[float, float]]]:
    """Training-context windows of a :func:`training_dynamics` result, label -> (start, end).

    Labels (``CONTEXT_LABELS``): loss and gradient spikes, the accuracy jump (from
    ``accuracy_t50`` to ``accuracy_t90``) and learning-rate changes; each window widened by
    `margin` steps on both sides (one capture interval: an event is placed at a capture step).
    """
    out: dict[str, list[tuple[float, float]]] = {}
    for target in ds["target"].values if "target" in ds.coords else []:
        a = ds["spike_start"].sel(target=target).values
        b = ds["spike_end"].sel(target=target).values
        spans = [(float(x) - margin, float(y) + margin) for x, y in zip(a, b, strict=True)]
        spans = [w for w in spans if np.isfinite(w[0])]
        if spans:
            out[CONTEXT_LABELS.get(str(target), f"{target} spike")] = sorted(spans)
    if "accuracy_t50" in ds and np.isfinite(float(ds["accuracy_t50"])):
        t50, t90 = float(ds["accuracy_t50"]), float(ds["accuracy_t90"])
        out[CONTEXT_LABELS["accuracy"]] = [(t50 - margin, t90 + margin)]
    if "lr" in ds.data_vars:
        spans = lr_changes(ds["step"].values, ds["lr"].values)
        if spans:
            out[CONTEXT_LABELS["lr"]] = [(a - margin, b + margin) for a, b in spans]
    return out


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
        ``loss``, ``grad_norm``, ``test_accuracy``, ``lr`` over ``step`` (those recorded), per
        ``(target, spike)``: ``spike_start``, ``spike_end``, ``spike_ratio`` (NaN padded),
        largest spike first, and scalars ``accuracy_start``, ``accuracy_max``,
        ``accuracy_t50``, ``accuracy_t90`` (NaN without a rise; :func:`accuracy_rise`).
        Computed eagerly: scalars are one row per optimizer step.
    """
    window = check_positive_int(window, "window", minimum=3)
    if not isinstance(scalars, xr.Dataset) or "step" not in scalars.dims:
        raise ValueError(
            f"Expected `scalars` to be a Dataset with a 'step' dim (run.scalars), got "
            f"{type(scalars).__name__}"
        )
    keep = [v for v in ("loss", "grad_norm", "test_accuracy", "lr") if v in scalars.data_vars]
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
    acc = out["test_accuracy"].values if "test_accuracy" in out else np.zeros(0)
    first, top, (t50, t90) = accuracy_rise(steps[: acc.size], acc)
    rise = {
        "accuracy_start": (first, "first recorded held-out accuracy", "1"),
        "accuracy_max": (top, "highest held-out accuracy", "1"),
        "accuracy_t50": (t50, "first step at 50 % of the held-out accuracy rise", "step"),
        "accuracy_t90": (t90, "first step at 90 % of the held-out accuracy rise", "step"),
    }
    for name, (value, long_name, units) in rise.items():
        out[name] = xr.Variable((), value, {"long_name": long_name, "units": units})
    out.attrs = params_attrs(
        "training",
        {
            "method": "log series minus a running median; spike where the residual exceeds "
            "threshold x 1.4826 x median |residual|; points closer than window // 2 merge",
            "window": window,
            "threshold": float(threshold),
            "targets": found,
            "accuracy_rise": "accuracy_tF: first step with accuracy >= first + F x (max - "
            f"first); NaN when max - first < {MIN_ACCURACY_RISE}",
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
