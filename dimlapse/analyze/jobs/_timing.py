"""Timing of transitions: the share that falls in the first part (default 25 %) of training."""

from __future__ import annotations

import numpy as np
import xarray as xr

from .._provenance import params_attrs
from .._validate import check_fraction

_COUNT_VARS = ("n_candidates", "n_significant", "n_null")


def transition_counts(trans: xr.Dataset) -> xr.Dataset:
    """Raw, significant and null-surrogate counts per series of a transitions Dataset.

    Uses the dataset's ``n_candidates`` and ``n_significant`` when present (NaN for series
    that were not tested); otherwise a candidate is an entry along ``transition`` with a
    finite ``step`` (shorter series are padded with NaN) and significant ones have
    ``significant`` True. The
    null count is the dataset's ``n_null`` (the same detector on the surrogates, per series)
    when present, else NaN.
    """
    _check_transitions(trans)
    valid = trans["step"].notnull()
    if "n_candidates" in trans and "n_significant" in trans:  # NaN marks untested series
        n_raw, n_sig = trans["n_candidates"], trans["n_significant"]
    else:
        n_raw = valid.sum("transition")
        n_sig = (valid & trans["significant"].fillna(False).astype(bool)).sum("transition")
    n_null = trans["n_null"] if "n_null" in trans else xr.full_like(n_raw, np.nan, dtype=float)
    return xr.Dataset(
        {
            "n_raw": n_raw.assign_attrs(long_name="raw transition candidates", units="1"),
            "n_significant": n_sig.assign_attrs(
                long_name="significant transitions (after FDR)", units="1"
            ),
            "n_null": n_null.astype(float).assign_attrs(
                long_name="candidates the same detector finds on null surrogates", units="1"
            ),
        }
    )


def _check_transitions(trans: xr.Dataset) -> None:
    if not isinstance(trans, xr.Dataset):
        raise TypeError(
            "Expected `trans` to be the xr.Dataset returned by dimlapse.analyze.transitions, "
            f"got {type(trans).__name__}"
        )
    missing = [v for v in ("step", "significant") if v not in trans]
    if missing or "transition" not in trans.dims:
        raise ValueError(
            "Expected `trans` to have a 'transition' dimension and variables 'step' and "
            "'significant' (from dimlapse.analyze.transitions), missing "
            f"{missing or ['transition']}"
        )


def timing(
    trans: xr.Dataset, *, total_steps: int | float, share: float = 0.25, start_step: float = 0
) -> xr.Dataset:
    """Share of raw and significant transitions in the first `share` of training.

    Parameters
    ----------
    trans : xr.Dataset
        From :func:`dimlapse.analyze.transitions`: dims (..., detector, transition) with
        ``step`` and ``significant``.
    total_steps : int or float
        Last optimizer step of the run (e.g. the last capture step).
    share : float
        Early window: steps ``<= start_step + share * (total_steps - start_step)``.
    start_step : float
        First step of the run.

    Returns
    -------
    xr.Dataset
        Per series (..., detector): ``n_raw``, ``n_significant``, ``n_null``, ``n_raw_early``,
        ``n_significant_early``, ``share_raw_early`` and ``share_significant_early`` (NaN
        without transitions), with the cutoff and parameters in attrs. Under a uniform
        spread of events the expected share is `share` itself.
    """
    _check_transitions(trans)
    if isinstance(total_steps, bool) or not isinstance(total_steps, int | float | np.number):
        raise ValueError(f"Expected `total_steps` to be a number of steps, got {total_steps!r}")
    if not total_steps > start_step:
        raise ValueError(
            f"Expected `total_steps` > `start_step` ({start_step!r}), got {total_steps!r}"
        )
    share = check_fraction(share, "share")
    cutoff = float(start_step + share * (float(total_steps) - start_step))
    counts = transition_counts(trans)
    valid = trans["step"].notnull()
    early = valid & (trans["step"] <= cutoff)
    sig = trans["significant"].fillna(False).astype(bool)
    n_raw_early = early.sum("transition")
    n_sig_early = (early & sig).sum("transition")
    out = counts.assign(
        n_raw_early=n_raw_early.assign_attrs(
            long_name=f"raw candidates at steps <= {cutoff:g}", units="1"
        ),
        n_significant_early=n_sig_early.assign_attrs(
            long_name=f"significant transitions at steps <= {cutoff:g}", units="1"
        ),
        share_raw_early=(n_raw_early / counts.n_raw.where(counts.n_raw > 0)).assign_attrs(
            long_name=f"share of raw candidates in the first {share:.0%} of training", units="1"
        ),
        share_significant_early=(
            n_sig_early / counts.n_significant.where(counts.n_significant > 0)
        ).assign_attrs(
            long_name=f"share of significant transitions in the first {share:.0%}", units="1"
        ),
    )
    out.attrs = params_attrs(
        "timing",
        {
            "share": share,
            "total_steps": float(total_steps),
            "start_step": float(start_step),
            "cutoff_step": cutoff,
            "definition": "a transition is early when its centre step <= cutoff_step",
        },
    )
    return out
