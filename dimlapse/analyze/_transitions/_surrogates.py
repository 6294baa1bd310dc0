"""Null surrogates for calibrating transition detectors: smooth trend plus fitted noise.

The null hypothesis of the calibration is "the series is a trend that is smooth at the time
scale ``trend_window`` plus stationary noise". Surrogates are drawn from that null in the
spirit of Theiler et al. (1992) and Schreiber and Schmitz (2000): they keep everything the
null allows (the observed smooth trend, the noise level and its autocorrelation) and destroy
only what it forbids (structure sharper than ``trend_window``).

Construction (``W`` is the smoother, a linear operator, ``x`` the observed series)::

    trend  = W x                      local-polynomial Gaussian smoother (degree 2 by default)
    y_b    = W x + (I - W) e_b        e_b ~ AR(1)(phi, sigma), b = 1..n_surrogates

Why this form:

- The trend smoother ``W`` is linear (``_smoother``): a step cannot hide in it, it is smeared
  into a ramp about ``trend_window`` samples wide, and the detectors score the sharp observed
  step above the smeared surrogate ramp.
- The noise enters the surrogates through the same high-pass ``(I - W)`` the observed residual
  went through, so observed and surrogate residuals have the same spectrum, edges included,
  whatever the smoother absorbed. Under the null, ``x`` and ``y_b`` then differ only in a
  residual of the same distribution: they are exchangeable up to the fit of the noise model.
- The noise model is fitted to the residual of ``x`` with its clear events excised
  (``_noise``), so several events in one series do not inflate the null they are tested
  against.
- Gaussian AR(1) noise is the default: two numbers, no splice artefacts. ``noise="block"``
  shuffles blocks of the (event-excised) residual instead: it keeps a non-Gaussian marginal,
  e.g. integer-valued ranks, but adds splice jumps, so it is conservative. Phase
  randomisation (Theiler et al. 1992) would keep the residual's periodogram, which contains
  the very transitions under test.
"""

from __future__ import annotations

import numpy as np

from ._noise import ar1_noise, block_shuffle, event_component, excise_events, fit_ar1
from ._smoother import smooth, smoother_sparse


def surrogates(
    x: np.ndarray,
    *,
    n_surrogates: int,
    trend_window: int,
    rng: np.random.Generator,
    noise: str = "ar1",
    block: int | None = None,
    degree: int = 2,
    mask_events: bool = True,
    known: np.ndarray | None = None,
    plant: bool = False,
) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Trend of ``x`` and null surrogates sharing its trend and noise.

    Parameters
    ----------
    x : ndarray, shape (n,)
        Finite observed series.
    n_surrogates, trend_window, rng, noise, block, degree
        See the module docstring; ``block`` defaults to ``trend_window`` samples.
    mask_events : bool
        Fit the noise with the series' clear events excised (``_noise.excise_events``).
    known : ndarray of bool, shape (n - 1,), optional
        Increments of events found in an earlier pass, excised too (with ``mask_events``).
    plant : bool
        Put the ``known`` events into the surrogates as they are (sharp) and smooth only the
        rest: ``y_b = W (x - E) + E + (I - W) e_b``, ``E`` their part of ``x``
        (``_noise.event_component``). The null of the remaining candidates given those events.

    Returns
    -------
    trend : ndarray, shape (n,)
    y : ndarray, shape (n_surrogates, n)
    info : dict
        Fitted noise parameters and the share of excised increments, for provenance.
    """
    n = x.size
    w = smoother_sparse(n, trend_window, degree)
    trend = smooth(w, x)
    if plant and known is not None and known.any():
        ev = event_component(x, known, trend_window)  # (n,)
        trend = smooth(w, x - ev) + ev
    if mask_events:
        clean, marked = excise_events(x, trend_window=trend_window, known=known)
    else:
        clean, marked = x, np.zeros(max(n - 1, 0), dtype=bool)
    resid = clean - smooth(w, clean)
    info = {"noise_excised": float(marked.mean()) if marked.size else 0.0}
    if noise == "ar1":
        phi, sigma = fit_ar1(resid, trend_window, degree, excised=marked)
        e = ar1_noise(rng, n_surrogates, n, phi, sigma)  # (surrogate, step)
        y = trend[None, :] + (e - smooth(w, e))
        return trend, y, {**info, "noise_phi": phi, "noise_sigma": sigma}
    block = trend_window if block is None else block
    y = trend[None, :] + block_shuffle(rng, resid, n_surrogates, block)
    return trend, y, {**info, "noise_block": float(block)}
