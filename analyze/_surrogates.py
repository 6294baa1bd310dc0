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

- The smoother is **linear**: a local polynomial fit (degree 2 by default, 1 available) with
  Gaussian weights, as in LOWESS without robustness iterations. At the edges it is a one-sided
  polynomial fit, so a loss-like curve that moves fastest at the start of a run is followed
  there instead of being flattened (a local-linear or running-mean fit leaves a bump that the
  detectors then flag; degree 2 removed those false alarms on fast exponential and power-law
  decays). A robust, edge-preserving smoother (running median) would copy a sharp step into the
  trend, so the surrogates would contain the step too and it could never be significant. The
  linear smoother smears a step into a ramp about ``trend_window`` samples wide (the Gaussian
  sd is ``trend_window / 4`` for degree 0-1 and ``trend_window / 2`` for degree 2, whose
  equivalent kernel is half as wide); the detectors score the sharp observed step above the
  smeared surrogate ramp.
- The noise enters the surrogates through the same high-pass ``(I - W)`` the observed residual
  went through, so observed and surrogate residuals have the same spectrum, edges included,
  whatever the smoother absorbed (a smoother of width comparable to the noise's correlation
  time absorbs much of strongly autocorrelated noise). Under the null, ``x`` and ``y_b`` then
  differ only in a residual of the same distribution: they are exchangeable up to the fit of
  the noise model.
- The AR(1) parameters are fitted by indirect inference: robust (MAD) variances of short-lag
  differences ``r_t - r_{t-k}`` of the residual ``r = (I - W) x`` are matched with their
  theoretical values for an AR(1) passed through ``(I - W)`` (computed from the smoother's
  frequency response). This is unbiased where a plain lag-1 autocorrelation of ``r`` is not,
  and short-lag differences ignore both the few samples a step disturbs and the smooth
  leftover a large transition leaves in ``r`` (which would inflate a MAD of ``r`` itself).
- Gaussian AR(1) noise is the default: two numbers, no splice artefacts, insensitive to the
  transitions being tested. ``noise="block"`` shuffles blocks of the observed residual instead
  (keeps a non-Gaussian marginal, e.g. integer-valued ranks, but carries pieces of real
  transitions into the null and adds splice jumps, so it is conservative). Phase
  randomisation (Theiler et al. 1992) would keep the residual's periodogram, which contains
  the very transitions under test.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.signal import lfilter

MAD_TO_SD = 1.4826  # 1 / Phi^-1(3/4): MAD of a Gaussian times this is its standard deviation
_PHI_GRID = np.linspace(-0.6, 0.99, 320)
NOISE_MODELS = ("ar1", "block")


def robust_sd(v: np.ndarray, axis: int = -1) -> np.ndarray:
    """MAD-based standard deviation along ``axis`` (1.4826 * median |v - median v|).

    Falls back to the classical standard deviation where the MAD is zero (quantised series that
    are constant most of the time), so a non-constant series never gets a zero noise scale.
    """
    med = np.median(v, axis=axis, keepdims=True)
    mad = MAD_TO_SD * np.median(np.abs(v - med), axis=axis)
    return np.where(mad > 0, mad, np.std(v, axis=axis))


def _kernel_sd(trend_window: int, degree: int) -> float:
    # a local-quadratic fit's equivalent kernel is about half as wide as its weights (it has
    # negative side lobes), so its Gaussian is twice as wide to smear a step just as far
    return trend_window / (2.0 if degree == 2 else 4.0)


@lru_cache(maxsize=16)
def _smoother_cached(n: int, trend_window: int, degree: int) -> np.ndarray:
    sd = _kernel_sd(trend_window, degree)
    t = np.arange(n, dtype=np.float64)
    d = (t[None, :] - t[:, None]) / sd  # (target, source) offsets in kernel sds
    k = np.exp(-0.5 * d * d) * (np.abs(d) <= 3.0)
    # local polynomial: w(t) = e0^T (X^T K X)^-1 X^T K with X = [1, d, d^2, ...]
    moments = [k.sum(axis=1)]
    dp = np.ones_like(d)
    for _ in range(2 * degree):
        dp = dp * d
        moments.append((k * dp).sum(axis=1))  # (target,) sum_s K d^p
    idx = np.add.outer(np.arange(degree + 1), np.arange(degree + 1))
    gram = np.stack(moments, axis=1)[:, idx]  # (target, power, power)
    ok = np.linalg.cond(gram) < 1e10
    coef = np.zeros((n, degree + 1))
    if ok.any():
        rhs = np.zeros((int(ok.sum()), degree + 1, 1))
        rhs[:, 0] = 1.0
        coef[ok] = np.linalg.solve(gram[ok], rhs)[..., 0]
    poly = coef[:, :1] + np.zeros_like(d)
    dp = np.ones_like(d)
    for p in range(1, degree + 1):
        dp = dp * d
        poly += coef[:, p : p + 1] * dp
    w = poly * k
    # too few samples in the kernel for this degree: fall back to a kernel-weighted mean
    w[~ok] = k[~ok] / k[~ok].sum(axis=1, keepdims=True)
    w.setflags(write=False)
    return w


def smoother_matrix(n: int, trend_window: int, degree: int = 1) -> np.ndarray:
    """Weights ``W`` (n, n) of the local-polynomial Gaussian smoother; ``trend = W @ x``.

    Gaussian weights with standard deviation ``trend_window / 4`` (truncated at 3 sd), so a step
    is smeared over about ``trend_window`` samples (2 sd either side). Each row reproduces
    polynomials up to ``degree`` exactly, also at the edges (one-sided local fit).
    """
    return _smoother_cached(int(n), int(trend_window), int(degree))


def _highpass_moments(w: np.ndarray, lags: tuple[int, ...]) -> np.ndarray:
    """Var(r_t - r_{t-k}) for r = (I-W)e, e unit-innovation AR(1); shape (phi grid, lag).

    Uses the frequency response of the middle row of ``w`` (the interior smoother).
    """
    n = w.shape[0]
    row = w[n // 2]
    lag = np.arange(n, dtype=np.float64) - n // 2
    nz = row != 0
    freq = np.linspace(0.0, np.pi, 4097)
    h = (row[nz][None, :] * np.cos(freq[:, None] * lag[nz][None, :])).sum(1)  # (freq,)
    phi = _PHI_GRID[:, None]
    spec = (1.0 - h) ** 2 / (1.0 - 2.0 * phi * np.cos(freq)[None, :] + phi**2)  # (phi, freq)
    k = np.asarray(lags, dtype=np.float64)[:, None]
    gain = 2.0 * (1.0 - np.cos(k * freq[None, :]))  # (lag, freq): the k-difference filter
    # variance = (1/pi) * integral over [0, pi] of the spectrum, unit innovations
    return np.trapezoid(spec[:, None, :] * gain[None, :, :], freq, axis=2) / np.pi


_MOMENTS: dict[tuple, np.ndarray] = {}


def fit_ar1(residual: np.ndarray, trend_window: int, degree: int = 1) -> tuple[float, float]:
    """Fit AR(1) ``(phi, sigma)`` to a residual ``(I - W) x`` from robust difference variances.

    The robust (MAD) variances of ``r_t - r_{t-k}`` for six geometric lags ``k`` between 1 and
    ``min(32, trend_window / 2)`` are matched (least squares on the log scale) with their values
    for an AR(1) passed through the smoother's high-pass. Short-lag differences barely see a
    smooth leftover of a transition in the residual, and a step touches only ``k`` of them, so
    the fit describes the noise, not the transitions being tested. ``phi`` is in [-0.6, 0.99].
    """
    n = residual.size
    # lags up to trend_window / 2 (not / 4): the longer lags pin down a strong persistence
    # (sd of phi-hat 0.025 instead of 0.033 at phi = 0.9, n = 1,600); a phi underestimated by
    # the fit gives surrogates less persistent than the data, i.e. false alarms
    top = max(2, min(32, trend_window // 2, n // 4))
    lags = tuple(int(k) for k in np.unique(np.round(np.geomspace(1, top, 6))))
    if n < 3:
        return 0.0, 0.0
    v = np.array([float(robust_sd(residual[k:] - residual[:-k])) ** 2 for k in lags])
    if not np.all(v > 0):
        return 0.0, 0.0
    key = (n, int(trend_window), int(degree), lags)
    if key not in _MOMENTS:
        _MOMENTS[key] = _highpass_moments(smoother_matrix(n, trend_window, degree), lags)
    logm = np.log(_MOMENTS[key])  # (phi, lag)
    log_s2 = np.mean(np.log(v)[None, :] - logm, axis=1)  # best innovation variance per phi
    loss = np.sum((np.log(v)[None, :] - log_s2[:, None] - logm) ** 2, axis=1)
    best = int(np.argmin(loss))
    return float(_PHI_GRID[best]), float(np.exp(0.5 * log_s2[best]))


def ar1_noise(
    rng: np.random.Generator, n_surrogates: int, n: int, phi: float, sigma: float
) -> np.ndarray:
    """Stationary Gaussian AR(1) paths, shape (n_surrogates, n)."""
    eps = rng.standard_normal((n_surrogates, n))
    e0 = eps[:, :1] * sigma / np.sqrt(1.0 - phi * phi)  # stationary start
    if n == 1:
        return e0
    rest = lfilter([sigma], [1.0, -phi], eps[:, 1:], axis=-1, zi=phi * e0)[0]
    return np.concatenate([e0, rest], axis=1)


def block_shuffle(
    rng: np.random.Generator, residual: np.ndarray, n_surrogates: int, block: int
) -> np.ndarray:
    """Block-shuffled copies of ``residual`` (random circular offset, shuffled block order)."""
    n = residual.size
    out = np.empty((n_surrogates, n))
    starts = np.arange(0, n, block)
    for b in range(n_surrogates):
        rolled = np.roll(residual, -int(rng.integers(block)))
        pieces = [rolled[s : s + block] for s in starts]
        out[b] = np.concatenate([pieces[i] for i in rng.permutation(len(pieces))])
    return out


def surrogates(
    x: np.ndarray,
    *,
    n_surrogates: int,
    trend_window: int,
    rng: np.random.Generator,
    noise: str = "ar1",
    block: int | None = None,
    degree: int = 1,
) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Trend of ``x`` and null surrogates sharing its trend and noise.

    Parameters
    ----------
    x : ndarray, shape (n,)
        Finite observed series.
    n_surrogates, trend_window, rng, noise, block
        See the module docstring; ``block`` defaults to ``trend_window`` samples.

    Returns
    -------
    trend : ndarray, shape (n,)
    y : ndarray, shape (n_surrogates, n)
    info : dict
        Fitted noise parameters (``phi``, ``sigma``) for provenance.
    """
    n = x.size
    w = smoother_matrix(n, trend_window, degree)
    trend = w @ x
    resid = x - trend
    if noise == "ar1":
        phi, sigma = fit_ar1(resid, trend_window, degree)
        e = ar1_noise(rng, n_surrogates, n, phi, sigma)  # (surrogate, step)
        y = trend[None, :] + (e - e @ w.T)
        return trend, y, {"noise_phi": phi, "noise_sigma": sigma}
    block = trend_window if block is None else block
    y = trend[None, :] + block_shuffle(rng, resid, n_surrogates, block)
    return trend, y, {"noise_block": float(block)}
