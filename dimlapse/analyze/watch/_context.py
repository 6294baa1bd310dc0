"""The training event an alert coincides with, read from the run's per-step scalars.

An alert says what the representation did; whether the loss or the gradient norm spiked, the
held-out accuracy moved or the learning rate changed at the same time says what training was
doing, and decides what to do about it (a loss spike that moves every layer is one event, not
a fault of each layer). Each event is searched in the alert's evidence window, widened by
``margin`` steps on the left (a spike just before the window is what the window shows):

- loss / gradient-norm spike: :func:`dimlapse.analyze.jobs.find_spikes` (robust log residual
  from a running median, or a sustained lift over a trailing baseline) on the series up to
  the window's last step only, so the label does not depend on how far the run has gone;
- held-out accuracy change: the last recorded ``test_accuracy`` in the window against the
  last one before it, when they differ by at least ``ACCURACY_CHANGE`` (absolute);
- learning-rate change: ``lr`` in the window spans more than a factor ``LR_CHANGE``.
"""

from __future__ import annotations

import numpy as np

from ..jobs import find_spikes

__all__ = ["ACCURACY_CHANGE", "LR_CHANGE", "QUIET", "training_events"]

ACCURACY_CHANGE = 0.05  # held-out accuracy, absolute: 5 points
LR_CHANGE = 1.1  # learning rate, ratio of the window's largest to smallest value
QUIET = "no loss or gradient spike, accuracy or learning-rate change"
_SPIKE_NAMES = {"loss": "loss spike", "grad_norm": "gradient-norm spike"}


def training_events(
    steps: np.ndarray,
    scalars: dict[str, np.ndarray],
    window: tuple[int, int],
    *,
    margin: int = 0,
) -> list[str]:
    """Training events inside ``[window[0] - margin, window[1]]``, one phrase each.

    Parameters
    ----------
    steps : numpy.ndarray, shape (m,)
        Optimizer steps of the scalars, increasing.
    scalars : dict
        ``name -> (m,)`` values; ``loss``, ``grad_norm``, ``lr`` and ``test_accuracy`` are
        read when present (``test_accuracy`` is NaN between evaluations).
    window : tuple of int
        First and last step of the evidence.
    margin : int
        Steps before ``window[0]`` that still count.

    Returns
    -------
    list of str
        Empty when training was quiet in the window.

    Examples
    --------
    >>> steps = np.arange(1, 401)
    >>> loss = np.exp(-steps / 200) * np.exp(0.01 * np.random.default_rng(0).normal(size=400))
    >>> loss[300:304] *= 20.0
    >>> lr = np.where(steps < 200, 1e-3, 1e-2)
    >>> training_events(steps, {"loss": loss, "lr": lr}, (290, 320))
    ['loss spike at steps 301-304 (x20)']
    >>> training_events(steps, {"loss": loss, "lr": lr}, (180, 240))
    ['learning-rate change 0.001 -> 0.01']
    """
    lo, hi = window[0] - margin, window[1]
    upto = steps <= hi  # what was known when the window closed
    inside = upto & (steps >= lo)
    events = []
    for name, label in _SPIKE_NAMES.items():
        if name not in scalars:
            continue
        for a, b, ratio in find_spikes(steps[upto], np.asarray(scalars[name])[upto]):
            if a <= hi and b >= lo:
                where = f"step {a:.0f}" if a == b else f"steps {a:.0f}-{b:.0f}"
                events.append(f"{label} at {where} (x{ratio:.2g})")
                break  # the largest one in the window
    acc = scalars.get("test_accuracy")
    if acc is not None:
        acc = np.asarray(acc, dtype=np.float64)
        before = acc[upto & (steps < lo)]
        before, now = before[np.isfinite(before)], acc[inside][np.isfinite(acc[inside])]
        if before.size and now.size and abs(now[-1] - before[-1]) >= ACCURACY_CHANGE:
            change = "rise" if now[-1] > before[-1] else "drop"
            events.append(f"held-out accuracy {change} {before[-1]:.2f} -> {now[-1]:.2f}")
    lr = scalars.get("lr")
    if lr is not None:
        # the value before the window too: a change at its first step is in the window
        span = np.asarray(lr, dtype=np.float64)[upto & (steps >= lo - 1)]
        span = span[np.isfinite(span) & (span > 0)]
        if span.size and span.max() > LR_CHANGE * span.min():
            events.append(f"learning-rate change {span[0]:.3g} -> {span[-1]:.3g}")
    return events
