"""``transitions``: the one entry point, for an ndarray, a DataArray or a Dataset."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr
from threadpoolctl import threadpool_limits

from ._assemble import assemble
from ._calibrate import SeriesResult, empty_result
from ._pool import calibrate_all
from ._registry import DEFAULT_DETECTOR, spec
from ._spec import Calibration

# |relative_effect| a significant event needs to be notable: 2 % of the series' level. The
# benchmark families' planted events (3-10 noise sd on a level of about 1) are all far above
# it; on the recorded runs it keeps the changes a reader of a dimensionality curve can see
# and drops the per-mille wiggles that the series' tiny noise makes significant (on the
# default transformer run the significant PELT events' relative effects have quartiles 0.020,
# 0.079 and 0.21: the threshold drops the lowest quarter).
NOTABLE_RELATIVE = 0.02


def _check_floor(noise_floor: object, da: xr.DataArray) -> np.ndarray:
    """Per-series estimator noise floor, shape (series,), from a number or an array/DataArray
    broadcastable to the non-step dims of ``da``."""
    other = da.isel(step=0, drop=True)
    if noise_floor is None:
        return np.zeros(other.size)
    try:
        f = xr.DataArray(noise_floor) if not isinstance(noise_floor, xr.DataArray) else noise_floor
        if not isinstance(noise_floor, xr.DataArray) and f.ndim:
            f = xr.DataArray(np.asarray(noise_floor, dtype=np.float64), dims=other.dims)
        arr = np.asarray(f.broadcast_like(other).transpose(*other.dims).values, np.float64)
    except (ValueError, TypeError) as e:
        raise ValueError(
            f"Expected `noise_floor` to be a number >= 0 or an array over the series' dims "
            f"{dict(other.sizes)}, got {noise_floor!r} ({e})"
        ) from None
    if arr.shape != other.shape or not np.all(np.isfinite(arr) & (arr >= 0)):
        raise ValueError(
            f"Expected `noise_floor` to be finite and >= 0 over the series' dims "
            f"{dict(other.sizes)}, got {noise_floor!r}"
        )
    return arr.reshape(-1)


def _check_alpha(alpha: object) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 < alpha < 1:
        raise ValueError(f"Expected `alpha` to be a number in (0, 1), got {alpha!r}")
    return float(alpha)


def _as_dataarray(x: object, steps: object) -> xr.DataArray:
    """The input as a DataArray with a last ``step`` dimension."""
    if isinstance(x, xr.Dataset):
        names = [v for v in x.data_vars if "step" in x[v].dims]
        if not names:
            raise ValueError(
                "Expected `x` to hold data variables with a 'step' dimension, got "
                f"{list(x.data_vars)} with dims {dict(x.sizes)}"
            )
        x = x[names].to_dataarray("variable")
    if isinstance(x, xr.DataArray):
        if "step" not in x.dims:
            raise ValueError(
                f"Expected `x` to have a 'step' dimension, got dims {x.dims}; rename the "
                "time axis to 'step'"
            )
        if steps is not None:
            raise ValueError("Expected `steps` only with an ndarray `x`; a DataArray has its own")
        return x.transpose(..., "step")
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 0:
        raise ValueError(f"Expected `x` to be a series (n,) or series (..., n), got {x!r}")
    n = a.shape[-1]
    if steps is None:
        s = np.arange(n, dtype=np.int64)
    else:
        s = np.asarray(steps)
        if s.shape != (n,) or not np.issubdtype(s.dtype, np.integer):
            raise ValueError(
                f"Expected `steps` to be {n} integers (one per sample), got dtype {s.dtype} "
                f"and shape {s.shape}"
            )
        if n > 1 and np.any(np.diff(s) <= 0):
            raise ValueError(f"Expected `steps` to be strictly increasing, got {s[:5].tolist()}...")
    dims = [f"dim_{i}" for i in range(a.ndim - 1)] + ["step"]
    return xr.DataArray(a, dims=dims, coords={"step": s.astype(np.int64)})


def _resolve_options(names: tuple[str, ...], options: object) -> dict[str, Any]:
    """Detector name -> options instance (defaults where not given)."""
    given: list[Any]
    if options is None:
        given = []
    elif isinstance(options, Mapping):
        bad = [k for k in options if k not in names]
        if bad:
            raise ValueError(f"Expected `options` keys among the detectors {names}, got {bad}")
        return {d: spec(d).check_options(options.get(d)) for d in names}
    elif isinstance(options, Sequence) and not isinstance(options, str):
        given = list(options)
    else:
        given = [options]
    out = {d: spec(d).options() for d in names}
    for o in given:
        hit = [d for d in names if isinstance(o, spec(d).options)]
        if not hit:
            kinds = {d: spec(d).options.__name__ for d in names}
            raise ValueError(
                f"Expected `options` to be options of the chosen detectors {kinds}, got "
                f"{type(o).__name__} ({o!r})"
            )
        out[hit[0]] = o
    return out


def transitions(
    x: np.ndarray | xr.DataArray | xr.Dataset,
    *,
    detectors: str | Sequence[str] = DEFAULT_DETECTOR,
    alpha: float = 0.05,
    options: object = None,
    calibration: Calibration | None = None,
    steps: object = None,
    workers: int | None = None,
    noise_floor: object = None,
    notable: float = NOTABLE_RELATIVE,
    progress: Callable[[int], None] | None = None,
) -> xr.Dataset:
    """Candidate transitions of every series, each with a surrogate-calibrated p-value.

    Parameters
    ----------
    x : array-like (n,) or (..., n), DataArray with a ``step`` dim, or Dataset
        Trajectories over capture steps. An ndarray's last axis is the step (other axes become
        ``dim_0``, ...); a Dataset's variables with a ``step`` dim are stacked along
        ``variable``. NaN samples are dropped (the rest are treated as consecutive samples);
        all-NaN series are not tested (``tested`` False) nor counted in the FDR family.
    detectors : str or sequence of str
        Names in ``DETECTORS`` (default ``DEFAULT_DETECTOR``, the best-powered). A single name
        gives a scalar ``detector`` coordinate, a sequence a ``detector`` dimension.
    alpha : float
        False-discovery level across the tested series of each detector (with one series, the
        family-wise error level within it).
    options : options object, sequence of them, or mapping name -> options, optional
        Detector parameters as the frozen dataclasses ``ZScoreOptions``, ``MeanShiftOptions``,
        ``PeltOptions``, ... (``DETECTORS[name].options``); defaults where not given.
    calibration : Calibration, optional
        The null: trend window, noise model, surrogate count, seed, scale ladder.
    steps : array of int, shape (n,), optional
        Step of each sample of an ndarray ``x`` (default ``arange(n)``).
    workers : int, optional
        Processes calibrating series in parallel (default: the usable cores; 1: serial);
        results do not depend on it.
    noise_floor : float, array or DataArray over the non-step dims, optional
        Known estimator noise of each series in its units (e.g. a metric's sampling error),
        added to the float32 rounding floor of its ``resolution`` (default 0).
    notable : float
        Smallest ``|relative_effect|`` of a notable event (default ``NOTABLE_RELATIVE``, 0.02).
    progress : callable, optional
        Called as ``progress(k)`` with the number of series finished so far (for a bar).

    Returns
    -------
    xr.Dataset
        Eager. Dims ``(..., [detector], transition)`` with per event ``step``, ``onset``,
        ``duration`` (steps), ``score``, ``sign``, ``effect`` (signed level change, metric
        units), ``relative_effect`` (effect / level), ``p_value`` (over the time-scale
        ladder), ``significant``, ``notable`` and ``scale`` (the narrowest trend window, in
        steps, at which it is significant); NaN / False padded. Per series ``(...,
        [detector])``: ``n_candidates``, ``n_significant``, ``n_notable``, ``n_null``,
        ``p_series``, ``q_series``, ``critical_score``, ``tested``, ``constant``, ``level``,
        ``resolution``, the GPD tail and the fitted noise. Attrs hold every option, the
        calibration and the definitions of resolution, effect, notable and the ladder.

    Notes
    -----
    Per detector, Benjamini-Hochberg (1995) on the series-level p-values selects R of the m
    tested series; a candidate in a selected series is significant when its |effect| reaches
    the series' resolution and its p-value (Bonferroni over the rungs of the time-scale
    ladder) is at most ``alpha * R / m`` (Benjamini and Bogomolov 2014). A series whose range
    is below its resolution is ``constant``: not tested, not in the family. Series ``i`` (C
    order over the non-step dims) draws its surrogates from ``np.random.default_rng([seed,
    i])``.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).standard_normal(400)
    >>> x[200:] += 5.0
    >>> ds = transitions(x, detectors="meanshift")
    >>> ds.step.values[ds.significant.values].tolist()  # float: NaN pads event variables
    [200.0]
    """
    da = _as_dataarray(x, steps)
    names = (detectors,) if isinstance(detectors, str) else tuple(detectors)
    if not names:
        raise ValueError("Expected `detectors` to name at least one detector, got ()")
    for d in names:
        spec(d)
    alpha = _check_alpha(alpha)
    opts = _resolve_options(names, options)
    cal = Calibration() if calibration is None else calibration
    if not isinstance(cal, Calibration):
        raise ValueError(f"Expected `calibration` to be a Calibration, got {cal!r}")
    if workers is not None and (
        isinstance(workers, bool) or not isinstance(workers, int | np.integer) or workers < 1
    ):
        raise ValueError(f"Expected `workers` to be a positive int or None, got {workers!r}")
    other = [d for d in da.dims if d != "step"]
    arr = np.asarray(da.values, dtype=np.float64)
    shape = arr.shape[:-1]
    flat = arr.reshape(-1, arr.shape[-1])  # (series, step)
    s = (
        np.asarray(da["step"].values).astype(np.int64)
        if "step" in da.coords
        else np.arange(arr.shape[-1], dtype=np.int64)
    )
    floors = _check_floor(noise_floor, da)
    if isinstance(notable, bool) or not isinstance(notable, int | float) or not notable >= 0:
        raise ValueError(f"Expected `notable` to be a number >= 0, got {notable!r}")
    if progress is not None and not callable(progress):
        raise ValueError(f"Expected `progress` to be callable or None, got {progress!r}")
    finite = np.isfinite(flat)
    todo = np.flatnonzero(finite.any(axis=1))
    with threadpool_limits(1):  # the same rounding whatever the pool does
        done = calibrate_all(
            [flat[i][finite[i]] for i in todo],
            opts,
            cal,
            alpha,
            ids=todo,
            workers=None if workers is None else int(workers),
            floors=floors[todo],
            progress=progress,
        )
    results: list[dict[str, SeriesResult]] = [
        {d: empty_result(False, "all NaN") for d in names} for _ in range(flat.shape[0])
    ]
    for i, out in zip(todo, done, strict=True):
        results[i] = out
    coords = {d: da[d] for d in other if d in da.coords}
    ds = assemble(
        results, [s[f] for f in finite], opts, shape, other, coords, alpha, cal, float(notable)
    )
    if isinstance(detectors, str):
        ds = ds.isel(detector=0)
    return ds


__all__ = ["transitions"]
