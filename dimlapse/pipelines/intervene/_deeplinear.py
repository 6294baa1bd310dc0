"""Critical periods in deep linear networks: matrix completion with an early deficit.

The check of Kleinman, Achille and Soatto, "Critical learning periods emerge even in deep
linear networks" (ICLR 2024, section on matrix completion): a rank-``r`` target ``M`` (n x n,
RMS entry 1) is fitted by an end-to-end product ``W_1 ... W_D`` from a small Gaussian
initialisation by full-batch gradient descent on half the mean squared error over observed
entries. During the first ``deficit_steps`` steps only the first ``n_deficit`` of the
``n_observed`` entries are seen (the deficit); afterwards all of them, for ``continue_steps``
more steps. The test loss is the mean squared error over *all* entries. Their finding: a long
deficit permanently raises the final test loss of a depth-3 network, a short one does not, and
a depth-1 network (a convex problem, each entry learned alone) ends the same whatever the
deficit. NumPy only; a depth-3 run of 30,000 steps at n = 50 takes about 10 s here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Completion:
    """A matrix-completion problem and its deficit protocol.

    Parameters
    ----------
    n, rank
        Target size (n x n) and rank.
    n_observed, n_deficit
        Entries observed after the deficit, and during it (a prefix of the same entries).
    lr, init_scale
        Gradient-descent step and the Frobenius scale of the initial end-to-end map / sqrt(n).
    continue_steps
        Steps on all observed entries after the deficit.
    seed
        Seeds the target, the observed entries and the initialisation.
    """

    n: int = 50
    rank: int = 3
    n_observed: int = 600
    n_deficit: int = 300
    lr: float = 0.2
    init_scale: float = 1e-3
    continue_steps: int = 20_000
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n", "rank", "n_observed", "n_deficit", "continue_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Expected `{name}` to be a positive int, got {value!r}")
        if not self.n_deficit <= self.n_observed <= self.n * self.n:
            raise ValueError(
                f"Expected n_deficit <= n_observed <= n*n, got {self.n_deficit}, "
                f"{self.n_observed}, {self.n * self.n}"
            )

    def problem(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Target ``M`` (n, n) and the observed entries' rows and columns (n_observed,)."""
        rng = np.random.default_rng(self.seed)
        m = rng.normal(size=(self.n, self.rank)) @ rng.normal(size=(self.rank, self.n))
        m *= self.n / np.linalg.norm(m)  # RMS entry 1
        idx = rng.choice(self.n * self.n, self.n_observed, replace=False)
        return m, idx // self.n, idx % self.n


def _product(ws: Sequence[np.ndarray]) -> np.ndarray:
    out = ws[0]
    for w in ws[1:]:
        out = out @ w
    return out


def train_completion(
    setup: Completion, *, depth: int, deficit_steps: int, record_every: int = 0
) -> dict[str, np.ndarray | float]:
    """Train a depth-``depth`` linear network through the deficit and after it.

    Returns
    -------
    dict
        ``test_loss`` (final, mean squared error over all entries), ``train_loss`` (final, on
        all observed entries), ``singular_values`` of the final end-to-end map, and when
        ``record_every`` > 0 the ``steps`` and ``test_curve`` recorded along the way.
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"Expected `depth` to be a positive int, got {depth!r}")
    if isinstance(deficit_steps, bool) or not isinstance(deficit_steps, int) or deficit_steps < 0:
        raise ValueError(f"Expected `deficit_steps` to be an int >= 0, got {deficit_steps!r}")
    m, us, vs = setup.problem()
    n, y = setup.n, m[us, vs]
    rng = np.random.default_rng(setup.seed + 1)
    scale = setup.init_scale ** (1 / depth) * n**-0.5  # ||W_1...W_D||_F ~ init_scale sqrt(n)
    ws = [rng.normal(0, scale, (n, n)) for _ in range(depth)]
    eye = np.eye(n)
    steps, curve = [], []
    total = deficit_steps + setup.continue_steps
    for t in range(total):
        k = setup.n_deficit if t < deficit_steps else setup.n_observed
        e = _product(ws)  # (n, n) end-to-end map
        if record_every and t % record_every == 0:
            steps.append(t)
            curve.append(float(np.mean((e - m) ** 2)))
        g = np.zeros((n, n))
        g[us[:k], vs[:k]] = (e[us[:k], vs[:k]] - y[:k]) / k  # d(0.5 mean sq err)/dE
        lefts = [eye]
        for w in ws[:-1]:
            lefts.append(lefts[-1] @ w)
        rights = [eye]
        for w in ws[:0:-1]:
            rights.append(w @ rights[-1])
        rights = rights[::-1]  # rights[i] = W_{i+1} ... W_D
        grads = [lefts[i].T @ g @ rights[i].T for i in range(depth)]
        for w, gw in zip(ws, grads, strict=True):
            w -= setup.lr * gw
    e = _product(ws)
    out: dict[str, np.ndarray | float] = {
        "test_loss": float(np.mean((e - m) ** 2)),
        "train_loss": float(0.5 * np.mean((e[us, vs] - y) ** 2)),
        "singular_values": np.linalg.svd(e, compute_uv=False),
    }
    if record_every:
        out["steps"], out["test_curve"] = np.array(steps), np.array(curve)
    return out


def critical_period_curve(
    setup: Completion, *, depths: Sequence[int] = (1, 3), deficits: Sequence[int] = (0, 10_000)
) -> dict[int, list[float]]:
    """Final test loss per depth for each deficit length (the paper's critical-period curve)."""
    return {
        d: [float(train_completion(setup, depth=d, deficit_steps=t)["test_loss"]) for t in deficits]
        for d in depths
    }
