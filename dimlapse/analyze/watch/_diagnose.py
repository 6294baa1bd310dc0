"""Diagnoses of a run's dimensionality while it trains, each with its evidence.

Every rule (:mod:`._rules`) reads one layer's metric series (one value per capture
snapshot) and compares a statistic of the most recent ``window`` snapshots with a threshold
calibrated on the same layer's earlier snapshots (its own noise level, its own minimum or
peak). Rules are evaluated at every snapshot, in order, so the alerts do not depend on how
often the store is polled. An alert is raised when its condition becomes true, and again
only after the condition has been false for more than a window.
"""

from __future__ import annotations

import numpy as np

from . import _rules
from ._alert import KINDS, Alert, DiagnosisOptions
from ._stats import level

__all__ = ["KINDS", "Alert", "Diagnoser", "DiagnosisOptions", "median5"]


def median5(y: np.ndarray) -> np.ndarray:
    """Running median over the last (up to) 5 values, ``(n,)`` -> ``(n,)``."""
    y = np.asarray(y, dtype=np.float64)
    head = [np.median(y[: i + 1]) for i in range(min(4, y.size))]
    if y.size <= 4:
        return np.array(head, dtype=np.float64)
    tail = np.median(np.lib.stride_tricks.sliding_window_view(y, 5), axis=-1)  # (n - 4,)
    return np.concatenate([head, tail])


class Diagnoser:
    """Stateful rule runner: feed it each layer's series as it grows, get new alerts.

    Parameters
    ----------
    options : DiagnosisOptions, optional
        Windows and thresholds.

    Examples
    --------
    >>> diag = Diagnoser()
    >>> y = np.r_[np.full(10, 3.0), np.linspace(3.0, 8.0, 20), np.full(20, 1.5)]
    >>> steps = np.arange(0, 5 * len(y), 5)  # flat, expands, then collapses
    >>> [a.kind for a in diag.update(steps, {"fc1": y, "fc2": y + 1}, {"fc1": 64, "fc2": 64})]
    ['rank_collapse', 'rank_collapse']
    """

    def __init__(self, options: DiagnosisOptions | None = None) -> None:
        self.options = options or DiagnosisOptions()
        self.evaluated = 0  # snapshots already evaluated
        self._last_true: dict[tuple[str, str], int] = {}  # (kind, layer) -> last index true
        self._non_finite: set[str] = set()
        self._flow_run = 0  # consecutive snapshots meeting the information-flow condition

    def non_finite(self, found: dict[str, list[int]]) -> list[Alert]:
        """One critical alert per array that newly holds NaN/Inf (``array -> steps``)."""
        alerts = []
        for name, steps in found.items():
            if name in self._non_finite or not steps:
                continue
            self._non_finite.add(name)
            alerts.append(
                Alert(
                    "non_finite",
                    name,
                    "values",
                    steps[0],
                    (steps[0], steps[-1]),
                    float(len(steps)),
                    0.0,
                    f"{name}: NaN/Inf at step {steps[0]} ({len(steps)} step(s) affected in "
                    "this read)",
                    severity="critical",
                )
            )
        return alerts

    def update(
        self, steps: np.ndarray, series: dict[str, np.ndarray], widths: dict[str, int]
    ) -> list[Alert]:
        """Evaluate every snapshot not evaluated yet.

        Parameters
        ----------
        steps : numpy.ndarray, shape (t,)
            Capture steps of the series.
        series : dict
            ``layer -> (t,)`` metric values, layers in the model's order (the last one is
            the output, never a bottleneck).
        widths : dict
            ``layer -> largest possible rank``.

        Returns
        -------
        list of Alert
            In snapshot order.
        """
        # s[i] depends on y[: i + 1] only, so smoothing the whole series equals doing it online
        smooth = {layer: median5(y) for layer, y in series.items()}
        alerts: list[Alert] = []
        o = self.options
        layers = list(series)
        for t in range(max(self.evaluated, o.warmup + o.window - 1), steps.size):
            n = t + 1
            evs = []
            for i, layer in enumerate(layers):
                y, s = series[layer][:n], smooth[layer][:n]
                ev = _rules.evidence(layer, y, s, steps, o)
                evs.append(ev)
                if ev is None:
                    continue
                found = [
                    _rules.instability(y, ev, o),
                    _rules.rank_collapse(s, steps, ev, o),
                    _rules.bottleneck(y, ev, widths[layer], o) if i < len(layers) - 1 else None,
                ]
                alerts += [a for a in found if a is not None and self._new(t, a)]
            levels = [level(series[ly][:n]) for ly in layers]
            flow = _rules.information_flow(evs, levels, o)
            self._flow_run = self._flow_run + 1 if flow is not None else 0
            if flow is not None and self._flow_run >= 2 * o.window and self._new(t, flow):
                alerts.append(flow)  # held for two windows of consecutive snapshots
        self.evaluated = max(self.evaluated, steps.size)
        return alerts

    def _new(self, t: int, alert: Alert) -> bool:
        """Whether ``alert`` opens a new episode of its (kind, layer)."""
        key = (alert.kind, alert.layer)
        last = self._last_true.get(key)
        self._last_true[key] = t
        return last is None or t - last > self.options.window
