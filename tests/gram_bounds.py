"""Error bounds of the Gram-trick spectra, for tests that compare them with a full SVD.

``singular_values`` takes the square roots of the eigenvalues of ``G = X^T X`` (smaller side),
in float64. Forming ``G`` and the symmetric eigensolver each perturb every eigenvalue by at most
about ``m * eps * s_1**2`` (``m = max(n, d)``; Weyl's inequality with backward-stable kernels),
so ``s_i`` moves by about ``m * eps * s_1**2 / (2 * s_i)``: the relative error of a small
singular value grows as ``eps * (s_1 / s_i)**2``, the squared condition number. A full SVD's
error, ``eps * s_1``, is negligible beside it.
"""

from collections.abc import Callable

import numpy as np

EPS = np.finfo(np.float64).eps


def gram_abs_error(s: np.ndarray, n: int, d: int) -> np.ndarray:
    """Per-value bound on ``|s_gram - s_svd|`` for singular values ``s`` (..., r), descending."""
    s = np.asarray(s, dtype=np.float64)
    lam_err = max(n, d) * EPS * s[..., :1] ** 2  # (..., 1) absolute eigenvalue error
    return s - np.sqrt(np.maximum(s**2 - lam_err, 0.0))  # >= the upward move sqrt(s^2+e) - s


def metric_tolerance(f: Callable[[np.ndarray], float], s: np.ndarray, n: int, d: int) -> float:
    """First-order bound on ``|f(s_gram) - f(s_svd)|``: each value moved by its bound in turn."""
    s = np.asarray(s, dtype=np.float64)
    bound = gram_abs_error(s, n, d)
    base = f(s)
    total = 0.0
    for i in range(s.size):
        sides = []
        for sign in (1.0, -1.0):
            moved = s.copy()
            moved[i] = max(moved[i] + sign * bound[i], 0.0)
            sides.append(abs(f(np.sort(moved)[::-1]) - base))
        total += max(sides)
    return 2 * total + 1e-12 * abs(base)  # 2x for second-order terms; floor at f's rounding
