"""A deep linear network learns its modes one by one (Saxe, McClelland and Ganguli 2014): theory
times as ground truth for the transitions of its weight energy-rank and loss staircases.

Two-layer linear network ``W2 W1`` (8 inputs, 8 hidden, 8 outputs), whitened inputs
(``E[x x^T] = I``), targets ``y = Sigma x`` with ``Sigma = U diag(5, 3, 2, 1.2, 0.8) V^T``,
full-batch gradient descent on ``L = 1/2 E||y - W2 W1 x||^2 = 1/2 ||Sigma - W2 W1||_F^2 +
const`` with learning rate ``eta``, small balanced initialisation ``W1 = sqrt(a0) Q V^T``,
``W2 = sqrt(a0) U Q^T`` (``Q`` orthogonal): ``W2 W1 = a0 U V^T``, every mode at strength ``a0``.

Derivation. The modes decouple: with ``W1 = sqrt(a) Q v^T`` and ``W2 = sqrt(a) u Q^T`` per mode,
``dL/dW2 = -(Sigma - W2 W1) W1^T`` gives ``b' = b (s - b^2) / tau`` for the per-layer strength
``b = sqrt(a)``, ``tau = 1 / eta`` (steps), so ``tau a' = 2 a (s - a)``: logistic growth,

    a(t) = s e^{2 s t / tau} / (e^{2 s t / tau} - 1 + s / a0),

and for ``s = 0`` (the three unused modes) ``a(t) = a0 / (1 + 2 a0 t / tau)``. Mode ``alpha``
reaches half its strength, ``a = s / 2``, at

    t_alpha = tau / (2 s) * ln(s / a0 - 1)

(Saxe et al. 2014, eq. 6 with u_f = s / 2), when the loss ``1/2 sum (s - a)^2`` drops by most of
``s^2 / 2``; its rise takes about ``tau ln(81) / (2 s)`` (10 % to 90 %). The energy rank at 99 %
of ``W2 W1`` (singular values ``a_alpha(t)``) steps when the cumulative energy of the leading
modes crosses 99 %: its jump times follow from the same closed form.
"""

from itertools import pairwise

import numpy as np
import pytest

from dimlapse.analyze import transitions
from dimlapse.analyze._metrics import energy_rank_99

S = np.array([5.0, 3.0, 2.0, 1.2, 0.8])
# Small initialisation, Saxe's regime of stage-like learning: plateaus last ~ tau ln(s / a0) / (2 s)
# while a rise takes tau ln(81) / (2 s), so at a0 = 1e-12 every mode has a plateau before it. At
# a0 = 1e-4 the modes overlap: mode 2 rises while mode 1 is still decaying, a shoulder of it in
# the loss, with no plateau between them for any detector to find.
ETA, A0, D = 0.01, 1e-12, 8
TAU = 1.0 / ETA


def theory_strengths(t: np.ndarray) -> np.ndarray:
    """Closed-form mode strengths, shape (len(t), D): the five learned modes, then s = 0."""
    g = np.exp(2.0 * S[None, :] * t[:, None] / TAU)  # (t, 5)
    learned = S * g / (g - 1.0 + S / A0)
    unused = A0 / (1.0 + 2.0 * A0 * t / TAU)  # (t,)
    return np.concatenate([learned, np.repeat(unused[:, None], D - S.size, axis=1)], axis=1)


def simulate(steps: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Full-batch GD: loss (steps,), singular values of W2 W1 (steps, D), mode strengths."""
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.standard_normal((D, D)))
    v, _ = np.linalg.qr(rng.standard_normal((D, D)))
    q, _ = np.linalg.qr(rng.standard_normal((D, D)))
    sigma = u[:, : S.size] @ np.diag(S) @ v[:, : S.size].T  # (out, in)
    w1 = np.sqrt(A0) * q @ v.T  # (hidden, in)
    w2 = np.sqrt(A0) * u @ q.T  # (out, hidden)
    loss, sv, modes = [], [], []
    for _ in range(steps):
        p = w2 @ w1
        err = sigma - p
        loss.append(0.5 * np.sum(err * err))
        sv.append(np.linalg.svd(p, compute_uv=False))
        modes.append(np.einsum("ia,ij,ja->a", u[:, : S.size], p, v[:, : S.size]))
        w2, w1 = w2 + ETA * err @ w1.T, w1 + ETA * w2.T @ err
    return np.array(loss), np.array(sv), np.array(modes)


@pytest.fixture(scope="module")
def run():
    t_half = TAU / (2 * S) * np.log(S / A0 - 1)
    steps = int(1.3 * t_half[-1])
    return t_half, steps, *simulate(steps)


@pytest.mark.slow
def test_simulated_mode_times_follow_the_closed_form(run):
    t_half, _, _, _, modes = run
    for i, s in enumerate(S):
        t_sim = int(np.argmax(modes[:, i] >= s / 2))
        assert abs(t_sim - t_half[i]) <= 0.1 * t_half[i], (s, t_sim, t_half[i])
        rise = np.argmax(modes[:, i] >= 0.9 * s) - np.argmax(modes[:, i] >= 0.1 * s)
        assert abs(rise - TAU * np.log(81) / (2 * s)) <= 0.15 * rise, (s, rise)
    assert np.all(modes[-1] >= 0.9 * S)  # every mode (nearly) learned by the end


@pytest.mark.slow
def test_energy_rank_staircase_transitions_at_the_theory_times(run):
    _, steps, _, sv, _ = run
    t = np.arange(steps)
    rank = np.array([energy_rank_99(s) for s in sv], dtype=np.float64)
    theory = np.array([energy_rank_99(a) for a in theory_strengths(t.astype(np.float64))])
    jumps = t[1:][np.diff(theory) != 0]  # theory rank changes, in steps
    every = 2  # captured every 2 steps
    ds = transitions(rank[::every], steps=t[::every], detectors="pelt")
    found = ds.step.values[ds.significant.values]
    # the late jumps (one per learned mode) are tens of steps apart: each is its own event
    late = jumps[jumps > 50]
    assert late.size >= 4
    for j in late:
        assert np.min(np.abs(found - j)) <= max(0.1 * j, 2 * every), (j, found)
    assert found.size <= jumps.size  # nothing the theory does not predict


@pytest.mark.slow
def test_loss_staircase_one_event_per_mode_with_its_time_scale(run):
    t_half, steps, loss, _, _ = run
    t = np.arange(steps)
    every = 2
    ds = transitions(loss[::every], steps=t[::every], detectors="pelt")
    sig = ds.significant.values
    onset, end = ds.onset.values[sig], ds.onset.values[sig] + ds.duration.values[sig]
    scale = ds.scale.values[sig]
    rise = TAU * np.log(81) / (2 * S)  # 10 % to 90 % of each mode, in steps
    t10, t90 = t_half - rise / 2, t_half + rise / 2
    # exactly one significant event per mode: in (t90 of the mode before, t90 of this mode]
    bounds = np.concatenate([[0.0], t90])
    per_mode = [int(np.sum((onset > lo) & (onset <= hi))) for lo, hi in pairwise(bounds)]
    assert per_mode == [1] * S.size, (per_mode, onset, t90)
    assert onset.size == S.size  # nothing the theory does not predict
    # and at least four of the five sit on their mode's 10-90 % rise (within 10 % of t_half)
    slack = 0.1 * t_half
    on_rise = (onset <= t90 + slack) & (end >= t10 - slack)
    assert on_rise.sum() >= 4, (onset, end, t10, t90)
    # time scales: the fastest mode (rise 44 steps) is abrupt against a trend a quarter of the
    # default window (12 samples, 24 steps); the slower ones (73-275 steps) only at the default
    # window (50 samples, 100 steps) or wider
    assert scale[0] < 50 * every <= scale[2:].min(), scale
