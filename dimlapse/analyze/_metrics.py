"""Spectral dimensionality metrics: pure NumPy functions of a singular-value spectrum.

Every metric takes ``s``, the singular values of one or many matrices in descending order,
shape ``(..., rank)``, and returns a float64 array of shape ``(...)``. Leading axes are
independent spectra (steps, layers, ...). The registry :data:`SPECTRAL_METRICS` maps each
metric's result name to its function; every entry is callable with ``s`` alone, and options are
keyword-only with documented defaults.

Degenerate spectra never raise: an all-zero spectrum (a dead layer), an empty one (``rank``
= 0) or one holding NaN gives NaN for the ratio metrics (and 0 or NaN for the counting
metrics, as each docstring says), together with a :class:`DegenerateSpectrumWarning`, which
callers can filter by category.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np

__all__ = [
    "RANKME_EPSILON",
    "SPECTRAL_METRICS",
    "DegenerateSpectrumWarning",
    "effective_rank",
    "energy_rank",
    "energy_rank_90",
    "energy_rank_99",
    "epsilon_rank",
    "nuclear_norm_ratio",
    "numerical_rank",
    "participation_ratio",
    "rankme",
    "stable_rank",
]

RANKME_EPSILON = 1e-7  # Garrido et al. 2023, eq. 1
_EPS = np.finfo(np.float64).eps


class DegenerateSpectrumWarning(RuntimeWarning):
    """A spectrum was all zero, empty or non-finite, so a metric returned NaN (or 0)."""


def _prepare(s: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``s`` as float64, a mask of NaN-holding spectra and a mask of all-zero ones.

    Warns once per call when any spectrum is degenerate. ``s`` must have at least one axis.
    """
    s = np.asarray(s, dtype=np.float64)
    if s.ndim == 0:
        raise ValueError(
            f"Expected `s` to have a trailing rank axis, shape (..., rank), got a scalar {s!r}"
        )
    bad = ~np.isfinite(s).all(axis=-1)  # (...)
    zero = ~bad & ~(s > 0).any(axis=-1)  # (...) all zero, or empty
    if bad.any() or zero.any():
        warnings.warn(
            f"{name}: {int(bad.sum())} spectra hold NaN/Inf and {int(zero.sum())} are all zero "
            "or empty (dead layer, empty matrix); their values are NaN (or 0 for counts)",
            DegenerateSpectrumWarning,
            stacklevel=3,
        )
    return s, bad, zero


def _ratio(num: np.ndarray, den: np.ndarray, invalid: np.ndarray) -> np.ndarray:
    """``num / den`` with NaN where ``invalid`` (no division warnings)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.asarray(num / den, dtype=np.float64)
    return np.where(invalid, np.nan, out)


def stable_rank(s: np.ndarray) -> np.ndarray:
    """Stable rank ``sum(s**2) / s_1**2`` (Rudelson and Vershynin 2007).

    The squared Frobenius norm over the squared spectral norm; lies in ``[1, rank]`` for a
    non-zero matrix. NaN (with a :class:`DegenerateSpectrumWarning`) for all-zero, empty or
    non-finite spectra.
    """
    s, bad, zero = _prepare(s, "stable_rank")
    s2 = s**2
    top = s2.max(axis=-1, initial=0.0)
    return _ratio(s2.sum(axis=-1), top, bad | zero)


def participation_ratio(s: np.ndarray) -> np.ndarray:
    """Participation ratio ``(sum lam)**2 / sum lam**2`` with ``lam = s**2`` (Gao et al. 2017).

    ``lam`` are the covariance (Gram) eigenvalues, not the singular values; the scale factor
    ``1 / n`` of a covariance cancels. Lies in ``[1, rank]`` for a non-zero matrix. NaN (with a
    :class:`DegenerateSpectrumWarning`) for all-zero, empty or non-finite spectra.
    """
    s, bad, zero = _prepare(s, "participation_ratio")
    # normalise by s_1 first so s**4 neither overflows nor underflows
    top = s.max(axis=-1, keepdims=True, initial=0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        lam = (s / top) ** 2
    return _ratio(lam.sum(axis=-1) ** 2, (lam**2).sum(axis=-1), bad | zero)


def _entropy_rank(s: np.ndarray, *, epsilon: float, name: str) -> np.ndarray:
    s, bad, zero = _prepare(s, name)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = s / s.sum(axis=-1, keepdims=True) + epsilon
        # 0 * log 0 = 0 (the limit); p > 0 whenever epsilon > 0
        h = -np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0).sum(axis=-1)
    return np.where(bad | zero, np.nan, np.exp(h))


def effective_rank(s: np.ndarray) -> np.ndarray:
    """Effective rank ``exp(H(p))``, ``p = s / sum(s)``, ``H(p) = -sum p log p``.

    Roy and Vetterli 2007, "The effective rank: a measure of effective dimensionality", with
    ``0 log 0 = 0``. Lies in ``[1, rank]`` for a non-zero matrix. NaN (with a
    :class:`DegenerateSpectrumWarning`) for all-zero, empty or non-finite spectra.
    """
    return _entropy_rank(s, epsilon=0.0, name="effective_rank")


def rankme(s: np.ndarray, *, epsilon: float = RANKME_EPSILON) -> np.ndarray:
    """RankMe ``exp(-sum p log p)``, ``p = s / sum(s) + epsilon`` (Garrido et al. 2023).

    "RankMe: assessing the downstream performance of pretrained self-supervised
    representations by their rank", eq. 1, with ``epsilon = 1e-7``: the effective rank of Roy
    and Vetterli with a small constant added to every ``p``. NaN (with a
    :class:`DegenerateSpectrumWarning`) for all-zero, empty or non-finite spectra.
    """
    return _entropy_rank(s, epsilon=epsilon, name="rankme")


def energy_rank(s: np.ndarray, *, fraction: float) -> np.ndarray:
    """Fewest leading components holding ``fraction`` of the energy ``sum(s**2)``.

    ``min k such that sum_{i<=k} s_i**2 >= fraction * sum s**2`` (a cumulative explained
    variance threshold, as in PCA). ``s`` must be descending. 0 for an all-zero or empty
    spectrum (no component is needed) and NaN for a non-finite one, both with a
    :class:`DegenerateSpectrumWarning`.
    """
    s, bad, zero = _prepare(s, f"energy_rank({fraction})")
    if s.shape[-1] == 0:
        return np.zeros(s.shape[:-1])
    s2 = np.where(bad[..., None], 0.0, s**2)
    cum = np.cumsum(s2, axis=-1)  # (..., rank)
    # relative slack so rounding in the cumulative sum cannot skip the component that
    # reaches the threshold exactly (e.g. s = ones(10), fraction 0.9 -> 9, not 10)
    reached = cum >= fraction * cum[..., -1:] * (1.0 - 8 * _EPS)
    k = np.where(zero, 0.0, reached.argmax(axis=-1) + 1.0)
    return np.where(bad, np.nan, k).astype(np.float64)


def energy_rank_90(s: np.ndarray) -> np.ndarray:
    """Cumulative-energy rank at 90 %: fewest k with ``sum_{i<=k} s_i**2 >= 0.9 sum s**2``.

    :func:`energy_rank` with ``fraction=0.9`` (cumulative explained variance, as in PCA).
    """
    return energy_rank(s, fraction=0.9)


def energy_rank_99(s: np.ndarray) -> np.ndarray:
    """Cumulative-energy rank at 99 %: fewest k with ``sum_{i<=k} s_i**2 >= 0.99 sum s**2``.

    :func:`energy_rank` with ``fraction=0.99`` (cumulative explained variance, as in PCA).
    """
    return energy_rank(s, fraction=0.99)


def nuclear_norm_ratio(s: np.ndarray) -> np.ndarray:
    """Nuclear-norm ratio ``sum(s) / s_1``: nuclear norm over spectral norm.

    Lies in ``[1, rank]`` for a non-zero matrix (its square is at least the stable rank). NaN
    (with a :class:`DegenerateSpectrumWarning`) for all-zero, empty or non-finite spectra.
    """
    s, bad, zero = _prepare(s, "nuclear_norm_ratio")
    return _ratio(s.sum(axis=-1), s.max(axis=-1, initial=0.0), bad | zero)


def numerical_rank(s: np.ndarray, *, rtol: float | None = None) -> np.ndarray:
    """Numerical rank: the number of ``s_i > rtol * s_1``.

    With the tolerance of ``numpy.linalg.matrix_rank`` (``s_1 * max(n, d) * eps``) pass
    ``rtol=max(n, d) * np.finfo(dtype).eps`` explicitly: the metric only sees ``s``, so the
    default ``rtol=None`` uses ``rank * eps`` (``rank = s.shape[-1] = min(n, d)``, float64
    eps). Spectra from :func:`dimlapse.analyze.singular_values` (a float64 Gram) resolve
    values only down to about ``s_1 * sqrt(m * eps)``, so with them use ``rtol`` at least
    that large (the dimensionality job does). 0 for an all-zero or empty spectrum, NaN for a
    non-finite one (both with a :class:`DegenerateSpectrumWarning`).
    """
    s, bad, _zero = _prepare(s, "numerical_rank")
    if rtol is None:
        rtol = max(s.shape[-1], 1) * _EPS
    top = s.max(axis=-1, keepdims=True, initial=0.0)
    k = (s > rtol * top).sum(axis=-1).astype(np.float64)
    return np.where(bad, np.nan, k)


def epsilon_rank(s: np.ndarray, *, epsilon: float = 1e-3, n_samples: int = 1) -> np.ndarray:
    """Epsilon-rank: the number of Gram eigenvalues ``s_i**2 / n_samples > epsilon``.

    Yang, Zhao and Zhu 2024, "epsilon-rank and the staircase phenomenon": the count of
    eigenvalues of the Gram matrix of neuron functions ``M_ij = E_x[phi_i(x) phi_j(x)]`` above
    ``epsilon``. With ``s`` the singular values of an ``(n_samples, feature)`` activation
    matrix, ``s**2 / n_samples`` are the eigenvalues of that Monte Carlo Gram matrix; with the
    default ``n_samples=1`` the raw Gram eigenvalues ``s**2`` are thresholded. An absolute
    threshold, so it depends on the scale of the data. 0 for an all-zero or empty spectrum,
    NaN for a non-finite one (both with a :class:`DegenerateSpectrumWarning`).
    """
    s, bad, _zero = _prepare(s, "epsilon_rank")
    k = (s**2 / n_samples > epsilon).sum(axis=-1).astype(np.float64)
    return np.where(bad, np.nan, k)


SPECTRAL_METRICS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "stable_rank": stable_rank,
    "participation_ratio": participation_ratio,
    "effective_rank": effective_rank,
    "rankme": rankme,
    "energy_rank_90": energy_rank_90,
    "energy_rank_99": energy_rank_99,
    "nuclear_norm_ratio": nuclear_norm_ratio,
    "numerical_rank": numerical_rank,
    "epsilon_rank": epsilon_rank,
}
"""Metric registry: result name -> function of a descending spectrum ``(..., rank)``."""
