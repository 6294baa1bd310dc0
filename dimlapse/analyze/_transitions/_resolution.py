"""What a series can show: its level, its resolution, and the effect of each event.

Metric series are computed in float64 from arrays stored in float32, so two snapshots that
differ only by rounding of the stored weights or activations can give metric values that
differ by a few float32 epsilons of the value. The detectors are scale-free: without a floor
they would test such rounding like any other change (thousands of "jumps" of 1e-9 to 1e-13 were
what discredited the study's seed tool). Here:

- ``level``: the series' typical magnitude, ``median |x|`` over its finite samples (``max |x|``
  where that is 0); ``relative_effect = effect / level``.
- ``resolution``: the smallest change the stored data can show,
  ``RESOLUTION_EPS * eps_float32 * max |x| + noise_floor``: float32 rounding of the stored
  arrays carried to the metric (a few epsilons of the largest value, ``RESOLUTION_EPS`` = 4),
  plus an estimator noise floor the caller knows (``transitions(noise_floor=...)``, default 0).
- ``effect``: the change an event describes, in the metric's units and signed: the mean of up
  to ``EFFECT_WINDOW`` samples from the event's end (first sample at the new level) minus the
  mean of up to ``EFFECT_WINDOW`` samples before its onset, neither window reaching into a
  neighbouring event.
- A series whose range ``max x - min x`` is below its resolution is ``constant``: it is not
  tested and not in the FDR family. An event with ``|effect| < resolution`` is never
  significant.
"""

from __future__ import annotations

import numpy as np

RESOLUTION_EPS = 4.0  # float32 epsilons of the largest |value|
F32_EPS = float(np.finfo(np.float32).eps)  # 1.19e-7
EFFECT_WINDOW = 10  # samples averaged either side of an event for its effect


def series_level(x: np.ndarray) -> float:
    """``median |x|`` of a finite series (n,), ``max |x|`` where the median is 0."""
    a = np.abs(x)
    m = float(np.median(a)) if a.size else 0.0
    return m if m > 0 else float(a.max(initial=0.0))


def series_resolution(x: np.ndarray, noise_floor: float = 0.0) -> float:
    """``RESOLUTION_EPS * eps_float32 * max |x| + noise_floor`` of a finite series (n,)."""
    return RESOLUTION_EPS * F32_EPS * float(np.abs(x).max(initial=0.0)) + float(noise_floor)


def is_constant(x: np.ndarray, resolution: float) -> bool:
    """Whether the range of a finite series (n,) is below ``resolution``."""
    return bool(x.size == 0 or np.ptp(x) < resolution)


def effects(x: np.ndarray, onset: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Signed level change of each event (k,) of ``x`` (n,); events sorted by onset.

    ``mean(x[end : end + w]) - mean(x[onset - w : onset])`` with ``w = EFFECT_WINDOW``, the
    windows clipped to the series and to the neighbouring events (``x[onset]`` stands for the
    level before an event at the first sample).
    """
    n, k = x.size, onset.size
    c = np.concatenate([[0.0], np.cumsum(x)])
    out = np.empty(k)
    for i in range(k):
        a, b = int(onset[i]), int(end[i])
        lo = max(a - EFFECT_WINDOW, int(end[i - 1]) + 1 if i else 0)
        hi = min(b + EFFECT_WINDOW, int(onset[i + 1]) if i + 1 < k else n, n)
        before = (c[a] - c[lo]) / (a - lo) if a > lo else x[a]
        after = (c[hi] - c[b]) / (hi - b) if hi > b else x[min(b, n - 1)]
        out[i] = after - before
    return out


RESOLUTION_DEFINITION = (
    f"resolution = {RESOLUTION_EPS:g} * eps_float32 * max |value| + noise_floor (float32 "
    "rounding of the stored arrays carried to the metric, plus the caller's estimator noise "
    "floor); a series whose range is below it is constant (not tested, not in the FDR "
    "family); an event with |effect| below it is never significant"
)
EFFECT_DEFINITION = (
    f"effect = mean of up to {EFFECT_WINDOW} samples from the event's end minus the mean of up "
    f"to {EFFECT_WINDOW} samples before its onset (not into neighbouring events); "
    "relative_effect = effect / level, level = median |value| of the series"
)
