"""Diagnoses of a run's dimensionality while it trains, each with its evidence.

Every rule (:mod:`._rules`) reads one layer's metric series (one value per capture
snapshot) and compares a statistic of the most recent ``window`` snapshots with a threshold
calibrated on the same layer's earlier snapshots (its own noise level, its own minimum or
peak). Rules are evaluated at every snapshot, in order, so the alerts do not depend on how
often the store is polled.

Alerts are for acting on, so they follow *episodes*, not crossings:

- an episode of a kind opens when a layer's condition becomes true while no episode of that
  kind is open, and raises one alert naming every layer that opened it; layers whose
  condition becomes true while it is open join it silently (a loss spike moves every layer);
- a layer recovers after ``persist`` windows of snapshots past its threshold by the
  ``rearm`` margin (hysteresis: a layer calm for a window between two loss spikes of a
  spiky period has not recovered); the episode closes, and the kind re-arms, when every
  layer recovered;
- ``critical`` is kept for what a run does not recover from by itself: non-finite values, and
  a severe collapse (below ``severe`` x the peak) held for ``persist`` windows in one
  episode, raised once per episode as a second alert; every other alert is a warning;
- each alert names the training events in its evidence window (:mod:`._context`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from . import _rules
from ._alert import KINDS, Alert, DiagnosisOptions
from ._context import QUIET, training_events
from ._stats import level

__all__ = ["KINDS", "Alert", "Diagnoser", "DiagnosisOptions", "median5"]

Scalars = tuple[np.ndarray, dict[str, np.ndarray]]  # (steps (m,), name -> (m,))


@dataclass
class _Episode:
    """An open episode of one kind: the layers still in it and their run lengths."""

    alert: Alert  # the alert that opened it
    active: set[str] = field(default_factory=set)  # layers not recovered yet
    clear: dict[str, int] = field(default_factory=dict)  # layer -> consecutive clear snapshots
    severe: dict[str, int] = field(default_factory=dict)  # layer -> consecutive severe ones
    critical: bool = False


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
    >>> [(a.kind, a.layer, a.severity) for a in diag.update(
    ...     steps, {"fc1": y, "fc2": y + 1}, {"fc1": 64, "fc2": 64})]
    [('rank_collapse', 'fc1,fc2', 'warning')]
    """

    def __init__(self, options: DiagnosisOptions | None = None) -> None:
        self.options = options or DiagnosisOptions()
        self.evaluated = 0  # snapshots already evaluated
        self._episodes: dict[str, _Episode] = {}  # kind -> its open episode
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
        self,
        steps: np.ndarray,
        series: dict[str, np.ndarray],
        widths: dict[str, int],
        scalars: Scalars | None = None,
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
        scalars : tuple, optional
            ``(steps (m,), name -> (m,))``: the run's per-step scalars so far, which name the
            training event each alert coincides with; without them ``context`` is empty.

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
            found: dict[str, dict[str, _rules.Finding]] = {k: {} for k in KINDS}
            for i, layer in enumerate(layers):
                y, s = series[layer][:n], smooth[layer][:n]
                ev = _rules.evidence(layer, y, s, steps, o)
                evs.append(ev)
                if ev is None:
                    continue
                found["instability"][layer] = _rules.instability(y, ev, o)
                found["rank_collapse"][layer] = _rules.rank_collapse(s, steps, ev, o)
                if i < len(layers) - 1:
                    found["bottleneck"][layer] = _rules.bottleneck(y, ev, widths[layer], o)
            levels = [level(series[ly][:n]) for ly in layers]
            flow = _rules.information_flow(evs, levels, o)
            self._flow_run = self._flow_run + 1 if flow is not None else 0
            held = flow if self._flow_run >= 2 * o.window else None  # two windows in a row
            found["information_flow"]["network"] = _rules.Finding(held, flow is None)
            for kind in KINDS:
                alerts += self._episode(kind, found[kind], t, steps, scalars)
        self.evaluated = max(self.evaluated, steps.size)
        return alerts

    def _episode(
        self,
        kind: str,
        found: dict[str, _rules.Finding],
        t: int,
        steps: np.ndarray,
        scalars: Scalars | None,
    ) -> list[Alert]:
        """Advance the episode of ``kind`` by snapshot ``t``; the alerts it raises."""
        o = self.options
        ep = self._episodes.get(kind)
        firing = [(ly, f.alert) for ly, f in found.items() if f.alert is not None]
        out = []
        if ep is None and firing:
            first = firing[0][1]
            names = [ly for ly, _ in firing]
            also = f" (also {', '.join(names[1:])})" if len(names) > 1 else ""
            context = self._context(steps, t, scalars)
            first = dataclasses.replace(
                first,
                layer=first.layer if kind == "information_flow" else ",".join(names),
                message=f"{first.message}{also}"
                + ("" if scalars is None else f"; {_says(context)}"),
                context=context,
            )
            ep = self._episodes[kind] = _Episode(first)
            out.append(first)
        if ep is None:
            return out
        ep.active |= {ly for ly, _ in firing}
        for ly in sorted(ep.active):
            f = found.get(ly)
            ep.clear[ly] = ep.clear.get(ly, 0) + 1 if f is not None and f.clear else 0
            ep.severe[ly] = ep.severe.get(ly, 0) + 1 if f is not None and f.severe else 0
            held = ep.severe[ly]
            if f is not None and f.alert and not ep.critical and held >= o.persist * o.window:
                ep.critical = True
                since = int(steps[t - held + 1])
                out.append(
                    dataclasses.replace(
                        f.alert,
                        severity="critical",
                        message=f"{f.alert.message}; severe (below {100 * o.severe:.0f} % of "
                        f"its peak or {o.floor:g} dimensions) for {held} snapshots (steps "
                        f"{since}-{int(steps[t])}) without recovering; the episode opened at "
                        f"step {ep.alert.step}"
                        + ("" if scalars is None else f" ({_says(ep.alert.context)})"),
                        context=ep.alert.context,
                    )
                )
            if ep.clear[ly] >= o.persist * o.window:  # a recovery that lasts, like a collapse
                ep.active.discard(ly)
        if not ep.active:
            del self._episodes[kind]  # every layer recovered: the kind is re-armed
        return out

    def _context(self, steps: np.ndarray, t: int, scalars: Scalars | None) -> tuple[str, ...]:
        """Training events in the two windows ending at snapshot ``t``.

        The evidence window and the one before it: a change of the learning rate or a spike
        shows in a layer's statistics of the following window (noise, a running median).
        """
        if scalars is None:
            return ()
        w0 = int(steps[max(0, t - 2 * self.options.window + 1)])
        return tuple(training_events(scalars[0], scalars[1], (w0, int(steps[t]))))


def _says(context: tuple[str, ...]) -> str:
    return "coincides with " + "; ".join(context) if context else f"training quiet ({QUIET})"
