"""Calibrated transition detection: which jumps in a trajectory are real.

A raw detector count means little: the study's rolling z > 2 rule fires about 88 times on
1,600 samples of pure white noise. Every candidate event here therefore comes with a p-value
from the same detector run on null surrogates of the same series, and the surrogates' mean
candidate count (``n_null``) is reported next to every raw count.

Method
------
1. **Events.** A detector (``DETECTORS``: ``zscore``, ``meanshift``, ``pelt``; see
   ``_detectors``) turns the series into candidate events, one per contiguous excursion, each
   with a score. Onset and duration come from a ramp fit around the event (``_transitions_ramp``),
   so a step, a ramp or a sigmoid rise is one candidate with its onset and length.
2. **Null.** Surrogates share the observed series' smooth trend at the time scale
   ``trend_window`` (samples, default 50) and its noise: ``y_b = W x + (I - W) e_b`` with ``W``
   a linear local-quadratic Gaussian smoother (one-sided at the edges) that smears a step over
   ``trend_window`` samples and ``e_b``
   Gaussian AR(1) noise fitted robustly to the residual (default), or block-shuffled residuals
   (``noise="block"``). Surrogate data in the sense of Theiler et al. (1992) and Schreiber and
   Schmitz (2000): what the null allows is kept, structure sharper than ``trend_window`` is not.
   Details and the reasons for each choice in ``_surrogates``.
3. **p-values.** Max-statistic test: ``p = (1 + #{b : max score of surrogate b >= score}) /
   (1 + n_surrogates)``. Comparing with each surrogate's *largest* event controls the
   family-wise error within a series (any false candidate at all) at ``alpha``. 200 surrogates
   for ``zscore``/``meanshift``, 50 for ``pelt`` (each ruptures call costs about 5 ms on 1,600
   samples). Where fewer than 10 surrogate maxima reach a candidate's score, the count cannot
   resolve its p-value (the floor is ``1 / (1 + n_surrogates)``, above the ``alpha / m`` that
   FDR across m series needs), so p comes from a generalized Pareto tail fitted to the largest
   surrogate maxima (Knijnenburg et al. 2009, Bioinformatics 25:i161; ``_transitions_tail``).
4. **Across series** (``transitions``): Benjamini and Hochberg (1995) on the series-level
   p-values (a series' smallest p is its max-statistic test) selects R of the m tested series
   per detector; within a selected series a candidate is significant when ``p <= alpha R / m``
   (Benjamini and Bogomolov 2014). With one series this is simply ``p <= alpha``.

``significant`` therefore means: more abrupt than a trend smooth at ``trend_window`` samples plus
noise like the series' own would produce, anywhere in the series. PELT is Killick, Fearnhead and
Eckley (2012), run through ruptures (Truong, Oudre and Vayatis 2020).
"""

from __future__ import annotations

import numpy as np
import xarray as xr
from threadpoolctl import threadpool_limits

from ._transitions_core import (
    SeriesResult,
    calibrate_series,
    check_alpha,
    empty_result,
    resolve_params,
)

_VAR_ATTRS = {
    "step": ("step where the change is centred (middle of the fitted ramp)", "step"),
    "onset": ("first step that has moved (ramp fit)", "step"),
    "duration": ("steps from onset to the first step at the new level (0: a step)", "step"),
    "score": ("detector score (peak |z|, standardised mean shift or jump)", "1"),
    "sign": ("direction of the change (+1 up, -1 down)", "1"),
    "p_value": ("max-statistic surrogate p-value (family-wise within the series)", "1"),
    "significant": ("abrupt relative to trend_window after FDR control", "1"),
}


def _check_values(values: object, steps: object) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(
            f"Expected `values` to be 1-D (one trajectory over steps), got shape {x.shape}; "
            "use `transitions` for many series"
        )
    if steps is None:
        s = np.arange(x.size, dtype=np.int64)
    else:
        s = np.asarray(steps)
        if s.shape != x.shape or not np.issubdtype(s.dtype, np.integer):
            raise ValueError(
                f"Expected `steps` to be integers with the shape of `values` {x.shape}, got "
                f"dtype {s.dtype} and shape {s.shape}"
            )
        if s.size > 1 and np.any(np.diff(s) <= 0):
            raise ValueError(f"Expected `steps` to be strictly increasing, got {s[:5].tolist()}...")
    return x, s.astype(np.int64)


def _attrs(detector, alpha, cal, det, nsur, info) -> dict[str, object]:
    a: dict[str, object] = {"detector": detector, "alpha": alpha}
    for k, v in {**cal, **det}.items():
        a[k] = "auto" if v is None else v
    a["n_surrogates"] = nsur
    a["p_value_resolution"] = 1.0 / (1.0 + nsur)  # of the count; the fitted tail goes below
    a["p_value_method"] = (
        "empirical max-statistic count; generalized Pareto tail of the surrogate maxima "
        "(Knijnenburg et al. 2009) where fewer than 10 of them reach the score"
    )
    a.update(info)
    a["method"] = (
        "max-statistic p-value against surrogates = local-linear trend at trend_window + "
        f"{cal['noise']} noise through (I - W); Benjamini-Hochberg across series"
    )
    return a


def _event_table(res: SeriesResult, steps: np.ndarray) -> dict[str, np.ndarray]:
    centre = (res.onset + res.end) // 2
    return {
        "step": steps[centre],
        "onset": steps[res.onset],
        "duration": steps[res.end] - steps[res.onset],
        "score": res.score,
        "sign": res.sign,
        "p_value": res.p_value,
    }


def find_transitions(
    values: object,
    *,
    steps: object = None,
    detector: str = "zscore",
    alpha: float = 0.05,
    **params: object,
) -> xr.Dataset:
    """Candidate transitions of one trajectory, each with a surrogate-calibrated p-value.

    Parameters
    ----------
    values : array-like, shape (n,)
        One trajectory over capture steps. NaN samples are dropped (the rest are treated as
        consecutive samples).
    steps : array-like of int, shape (n,), optional
        Step of each sample; default ``arange(n)``.
    detector : {"zscore", "meanshift", "pelt"}
        Event detector from ``DETECTORS``.
    alpha : float
        Family-wise error level within the series: ``significant = p_value <= alpha``.
    **params
        Detector parameters (``window``, ``threshold``, ``direction``, ``min_periods``,
        ``model``, ``penalty``, ``pen_scale``, ``min_size``, ``merge_gap``) and calibration
        parameters: ``trend_window`` (samples, default 50; changes sharper than this are
        abrupt), ``trend_degree`` (of the local polynomial trend, default 2), ``n_surrogates``
        (default 200, ``pelt`` 50), ``noise`` (``"ar1"`` or ``"block"``), ``block`` (block
        length, default ``trend_window``), ``seed`` (default 0).

    Returns
    -------
    xr.Dataset
        Dimension ``transition`` (one entry per candidate event) with ``step``, ``onset``,
        ``duration``, ``score``, ``sign``, ``p_value``, ``significant``; attrs hold every
        parameter, ``n_candidates``, ``n_significant`` and ``n_null`` (mean candidate count of
        the same detector on the surrogates).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).standard_normal(400)
    >>> x[200:] += 5.0
    >>> ds = find_transitions(x, detector="meanshift")
    >>> ds.step.values[ds.significant.values].tolist()
    [200]
    """
    x, s = _check_values(values, steps)
    alpha = check_alpha(alpha)
    cal, det, nsur = resolve_params((detector,), params)
    finite = np.isfinite(x)
    rng = np.random.default_rng([int(cal["seed"]), 0])  # type: ignore[call-overload]
    info: dict[str, float] = {}
    if not finite.any():
        res = empty_result(False, "all values are NaN; nothing tested")
    else:
        with threadpool_limits(1):  # as in `transitions`: the same rounding, the same result
            out, info = calibrate_series(x[finite], det, nsur, cal, rng, alpha)
        res = out[detector]
    table = _event_table(res, s[finite])
    sig = res.p_value <= alpha
    ds = xr.Dataset(
        {k: ("transition", v) for k, v in {**table, "significant": sig}.items()},
        coords={"transition": np.arange(res.score.size)},
    )
    for k, (long_name, units) in _VAR_ATTRS.items():
        ds[k].attrs.update(long_name=long_name, units=units)
    ds.attrs.update(_attrs(detector, alpha, cal, det[detector], nsur[detector], info))
    ds.attrs.update(
        n_candidates=int(res.score.size),
        n_significant=int(sig.sum()),
        n_null=res.n_null,
        critical_score=res.critical,
        n_samples=int(finite.sum()),
        tested=res.tested,
        n_from_tail=int(0 if res.from_tail is None else res.from_tail.sum()),
        **res.tail.attrs(),
    )
    if res.note:
        ds.attrs["note"] = res.note
    return ds
