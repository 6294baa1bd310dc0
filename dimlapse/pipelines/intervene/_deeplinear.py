"""Critical periods in deep linear networks: matrix completion after an early deficit.

The check of Kleinman, Achille and Soatto, "Critical learning periods emerge even in deep
linear networks" (ICLR 2024, matrix completion; their code: github.com/mjkleinman/
CriticalPeriodDeepLinearNets, ``matrixcompletion/``). A rank-``rank`` target ``M`` (n x n, RMS
entry 1) is fitted by an end-to-end product ``W_1 ... W_D`` from a small Gaussian
initialisation by full-batch gradient descent on half the mean squared error over
``n_observed`` entries. The deficit comes first, for ``deficit_steps`` steps:

- the published *task switch* (``deficit_rank`` set, their default 10): the same entries of a
  different rank-``deficit_rank`` target are fitted first;
- or fewer observations (``deficit_rank`` None): only the first ``n_deficit`` of the observed
  entries of ``M`` itself.

Then the final task (all observed entries of ``M``) for ``continue_steps`` steps. The test loss
is the mean squared error over *all* entries of ``M``. Their finding: a long deficit
permanently raises the final test loss of a depth-3 network, a short one does not, and a
depth-1 network (a convex problem, each entry learned alone) ends the same whatever the
deficit. NumPy only; one depth-3 run of 50,000 steps at n = 100 takes about 20 s here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

PUBLISHED = {"n": 100, "rank": 5, "deficit_rank": 10, "n_observed": 2000, "lr": 0.2}
PUBLISHED.update(init_scale=1e-3, continue_steps=30_000)  # depths (1, 3), deficits (0, 20k)


@dataclass(frozen=True)
class Completion:
    """A matrix-completion problem and its deficit protocol (defaults: the published one).

    Parameters
    ----------
    n, rank
        Target size (n x n) and rank of the final task.
    n_observed
        Entries observed (the same entries during and after the deficit).
    deficit_rank
        Rank of the deficit task's target (task switch), or None: the deficit observes only
        the first ``n_deficit`` entries of the final target.
    n_deficit
        Entries seen during the deficit (a prefix of the observed ones); None: all of them.
    lr, init_scale
        Gradient-descent step and the Frobenius scale of the initial end-to-end map / sqrt(n).
    continue_steps
        Steps on the final task after the deficit.
    seed
        Seeds the targets, the observed entries and the initialisation.

    Examples
    --------
    >>> Completion().deficit_rank, Completion(n=30, rank=2, n_observed=200).n_deficit
    (10, None)
    """

    n: int = 100
    rank: int = 5
    n_observed: int = 2000
    deficit_rank: int | None = 10
    n_deficit: int | None = None
    lr: float = 0.2
    init_scale: float = 1e-3
    continue_steps: int = 30_000
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n", "rank", "n_observed", "continue_steps", "deficit_rank", "n_deficit"):
            value = getattr(self, name)
            if value is None and name in ("deficit_rank", "n_deficit"):
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Expected `{name}` to be a positive int, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"Expected `seed` to be an int >= 0, got {self.seed!r}")
        for name in ("lr", "init_scale"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"Expected `{name}` to be a positive number, got {value!r}")
        seen = self.n_observed if self.n_deficit is None else self.n_deficit
        if not seen <= self.n_observed <= self.n * self.n:
            raise ValueError(
                f"Expected n_deficit <= n_observed <= n*n (options --deficit-observed, "
                f"--observed, --n), got {seen}, {self.n_observed}, {self.n * self.n}"
            )
        for name in ("rank", "deficit_rank"):
            value = getattr(self, name)
            if value is not None and value > self.n:
                raise ValueError(f"Expected `{name}` <= n = {self.n}, got {value}")

    def problem(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Final target ``M`` (n, n) and the observed entries' rows and columns (n_observed,)."""
        rng = np.random.default_rng(self.seed)
        m = _low_rank(rng, self.n, self.rank)
        idx = rng.choice(self.n * self.n, self.n_observed, replace=False)
        return m, idx // self.n, idx % self.n

    def deficit_target(self) -> np.ndarray:
        """The deficit task's target (n, n): a rank-``deficit_rank`` matrix, or ``M`` itself."""
        if self.deficit_rank is None:
            return self.problem()[0]
        # its own stream, so the final target and entries do not depend on the deficit task
        return _low_rank(np.random.default_rng([self.seed, 1]), self.n, self.deficit_rank)

    def to_dict(self) -> dict:
        """The parameters as a JSON-ready dict (``Completion(**d)`` rebuilds it)."""
        return asdict(self)


def _low_rank(rng: np.random.Generator, n: int, rank: int) -> np.ndarray:
    m = rng.normal(size=(n, rank)) @ rng.normal(size=(rank, n))
    return m * (n / np.linalg.norm(m))  # RMS entry 1


def _product(ws: Sequence[np.ndarray]) -> np.ndarray:
    out = ws[0]
    for w in ws[1:]:
        out = out @ w
    return out


def train_completion(
    setup: Completion,
    *,
    depth: int,
    deficit_steps: int,
    record_every: int = 0,
    progress: object = None,
) -> dict[str, np.ndarray | float]:
    """Train a depth-``depth`` linear network through the deficit and after it.

    Parameters
    ----------
    setup
        The problem and protocol.
    depth, deficit_steps
        Number of (n x n) layers, and steps on the deficit task before the final one.
    record_every
        Record the test loss every this many steps (0: only at the end).
    progress
        A tqdm bar (or anything with ``update(k)``) advanced by the steps done.

    Returns
    -------
    dict
        ``test_loss`` (final, mean squared error over all entries of the final target),
        ``train_loss`` (final, half the mean squared error on its observed entries),
        ``singular_values`` of the final end-to-end map (n,), and when ``record_every`` > 0
        the ``steps`` and ``test_curve`` recorded along the way.
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"Expected `depth` to be a positive int, got {depth!r}")
    if isinstance(deficit_steps, bool) or not isinstance(deficit_steps, int) or deficit_steps < 0:
        raise ValueError(f"Expected `deficit_steps` to be an int >= 0, got {deficit_steps!r}")
    m, us, vs = setup.problem()
    n, y = setup.n, m[us, vs]
    y0 = setup.deficit_target()[us, vs]
    k0 = setup.n_observed if setup.n_deficit is None else setup.n_deficit
    rng = np.random.default_rng(setup.seed + 1)
    scale = setup.init_scale ** (1 / depth) * n**-0.5  # ||W_1...W_D||_F ~ init_scale sqrt(n)
    ws = [rng.normal(0, scale, (n, n)) for _ in range(depth)]
    steps, curve = [], []
    total = deficit_steps + setup.continue_steps
    tick = 500  # progress updates are rare: a step is ~0.3 ms
    for t in range(total):
        target, k = (y0, k0) if t < deficit_steps else (y, setup.n_observed)
        # lefts[i] = W_1 ... W_i (None for i = 0), rights[i] = W_{i+2} ... W_D (None at the end)
        lefts: list[np.ndarray | None] = [None]
        for w in ws[:-1]:
            lefts.append(w if lefts[-1] is None else lefts[-1] @ w)
        e = ws[-1] if lefts[-1] is None else lefts[-1] @ ws[-1]  # (n, n) end-to-end map
        if record_every and t % record_every == 0:
            steps.append(t)
            curve.append(float(np.mean((e - m) ** 2)))
        g = np.zeros((n, n))
        g[us[:k], vs[:k]] = (e[us[:k], vs[:k]] - target[:k]) / k  # d(0.5 mean sq err)/dE
        rights: list[np.ndarray | None] = [None]
        for w in ws[:0:-1]:
            rights.append(w if rights[-1] is None else w @ rights[-1])
        rights = rights[::-1]
        grads = []
        for left, right in zip(lefts, rights, strict=True):  # (W_1..W_{i-1})^T g (W_{i+1}..)^T
            gw = g if left is None else left.T @ g
            grads.append(gw if right is None else gw @ right.T)
        for w, gw in zip(ws, grads, strict=True):  # after all grads: lefts/rights alias ws
            w -= setup.lr * gw
        if progress is not None and (t + 1) % tick == 0:
            progress.update(tick)  # type: ignore[attr-defined]
    if progress is not None and total % tick:
        progress.update(total % tick)  # type: ignore[attr-defined]
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
    setup: Completion, *, depths: Sequence[int] = (1, 3), deficits: Sequence[int] = (0, 20_000)
) -> dict[int, list[float]]:
    """Final test loss per depth for each deficit length (the paper's critical-period curve)."""
    return {
        d: [float(train_completion(setup, depth=d, deficit_steps=t)["test_loss"]) for t in deficits]
        for d in depths
    }
