"""The diagnosis rules: pure functions of one snapshot's evidence, returning an alert or None.

Each rule sees a layer's series ``y`` up to the snapshot being judged (``(n,)``, oldest
first), its running median ``smooth`` and a :class:`LayerEvidence` computed once per layer
and snapshot; thresholds come from the layer's own earlier snapshots. A rule returns a
:class:`Finding`: the alert its condition raises now (or None), and whether the condition is
*clearly* off, past the threshold by the ``rearm`` margin: the diagnoser re-arms a rule only
after a window of clear snapshots (hysteresis), so a statistic hovering at its threshold is
one episode, not one alert per crossing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ._alert import Alert, DiagnosisOptions
from ._stats import change, level, noise

__all__ = [
    "Finding",
    "LayerEvidence",
    "bottleneck",
    "evidence",
    "information_flow",
    "instability",
    "rank_collapse",
]


@dataclass(frozen=True)
class Finding:
    """A rule at one snapshot: the alert it raises (None: condition off) and whether it is clear.

    ``severe`` marks a condition that, held for ``persist`` windows, is one a run does not
    recover from without help (only ``rank_collapse`` sets it).
    """

    alert: Alert | None
    clear: bool
    severe: bool = False


_OFF = Finding(None, True)


@dataclass(frozen=True)
class LayerEvidence:
    """One layer at one snapshot: window bounds, calibrated noise and the derived verdicts."""

    layer: str
    window: tuple[int, int]  # first and last step of the recent window
    calibration: dict[str, Any]  # steps of the earlier history and its noise
    sigma: float  # per-snapshot noise of the earlier history (log units)
    tolerance: float  # smallest change over a window that counts as moving
    moved: float  # relative change over the window
    stalled: bool  # |moved| <= tolerance
    flat: bool  # the window never rose `expanded` above the layer's running minimum


def evidence(
    layer: str, y: np.ndarray, smooth: np.ndarray, steps: np.ndarray, o: DiagnosisOptions
) -> LayerEvidence | None:
    """The layer's evidence at snapshot ``len(y) - 1``; None when the window is not finite."""
    n, w = y.size, o.window
    if not np.isfinite(y[n - w :]).all():
        return None
    hist = y[: n - w]
    sigma = noise(hist[-20 * w :])  # the recent past, up to 20 windows
    tol = max(o.stall, o.noise_factor * sigma) if np.isfinite(sigma) else o.stall
    moved = change(y[n - w :])
    flat = bool(smooth[n - w :].max() <= (1 + o.expanded) * smooth.min())
    return LayerEvidence(
        layer,
        (int(steps[n - w]), int(steps[n - 1])),
        {"steps": [int(steps[0]), int(steps[n - w - 1])], "noise": sigma},
        sigma,
        tol,
        moved,
        abs(moved) <= tol,
        flat,
    )


def instability(y: np.ndarray, ev: LayerEvidence, o: DiagnosisOptions) -> Finding:
    """Erratic expansion: the window's noise exceeds ``noise_factor`` x the earlier noise.

    The threshold is clipped to ``[unstable_floor, unstable_ceiling]``: a very calm past does
    not make ordinary jitter an alarm, and a run erratic from its first snapshots (whose
    past is as noisy as its present) is still caught at the ceiling.
    """
    rough = noise(y[y.size - o.window :])
    thr = o.unstable_ceiling
    if np.isfinite(ev.sigma):
        thr = float(np.clip(o.noise_factor * ev.sigma, o.unstable_floor, o.unstable_ceiling))
    if not rough > thr:
        return Finding(None, not rough > o.rearm * thr)
    w0, w1 = ev.window
    alert = Alert(
        "instability",
        ev.layer,
        o.metric,
        w1,
        ev.window,
        rough,
        thr,
        f"{ev.layer}: {o.metric} erratic, noise {100 * rough:.1f} %/snapshot over steps "
        f"{w0}-{w1} > {100 * thr:.1f} % ({o.noise_factor:g}x its earlier "
        f"{100 * ev.sigma:.2f} %, clipped to [{100 * o.unstable_floor:g}, "
        f"{100 * o.unstable_ceiling:g}] %)",
        calibration=ev.calibration,
    )
    return Finding(alert, False)


def bottleneck(y: np.ndarray, ev: LayerEvidence, width: int, o: DiagnosisOptions) -> Finding:
    """Expansion stalled in a hidden layer at its capacity (``capacity`` x its width)."""
    use = level(y[y.size - o.window :]) / width
    if not (ev.stalled and use >= o.capacity):
        return Finding(None, not ev.stalled or use < o.rearm * o.capacity)
    w0, w1 = ev.window
    alert = Alert(
        "bottleneck",
        ev.layer,
        o.metric,
        w1,
        ev.window,
        use,
        o.capacity,
        f"{ev.layer}: expansion stalled at {100 * use:.0f} % of its width {width} (change "
        f"{100 * ev.moved:+.1f} % over steps {w0}-{w1}, tolerance {100 * ev.tolerance:.1f} %): "
        "the layers after it cannot use more dimensions than it passes on",
        calibration={**ev.calibration, "change": ev.moved, "tolerance": ev.tolerance},
    )
    return Finding(alert, False)


def rank_collapse(
    smooth: np.ndarray, steps: np.ndarray, ev: LayerEvidence, o: DiagnosisOptions
) -> Finding:
    """A layer that had expanded fell below ``collapse`` x its peak since.

    Armed only once the layer has risen ``expanded`` above its running minimum after the
    first ``warmup + window`` snapshots, so the usual initial collapse of a freshly
    initialised network (and any early bump within it) is not an alarm. Clear once back
    above ``collapse / rearm`` of the peak; ``severe`` below ``severe`` x the peak or at
    ``floor`` dimensions or fewer (the diagnoser makes a severe collapse held for ``persist``
    windows critical).
    """
    lo = np.minimum.accumulate(smooth)  # (n,)
    first = o.warmup + o.window - 1  # peaks of the initial transient do not count
    armed = first + np.flatnonzero(smooth[first:] >= (1 + o.expanded) * lo[first:])
    if armed.size == 0:
        return _OFF
    peak_i = int(armed[0] + np.argmax(smooth[armed[0] :]))
    ratio = float(smooth[-1] / smooth[peak_i])
    if ratio >= o.collapse:
        return Finding(None, ratio >= o.collapse / o.rearm)
    peak_step, w1 = int(steps[peak_i]), ev.window[1]
    alert = Alert(
        "rank_collapse",
        ev.layer,
        o.metric,
        w1,
        (peak_step, w1),
        ratio,
        o.collapse,
        f"{ev.layer}: {o.metric} fell to {100 * ratio:.0f} % of its peak "
        f"{smooth[peak_i]:.2f} (step {peak_step}) by step {w1}",
        calibration={**ev.calibration, "peak": float(smooth[peak_i]), "peak_step": peak_step},
    )
    return Finding(alert, False, severe=ratio < o.severe or smooth[-1] <= o.floor)


def information_flow(
    evs: list[LayerEvidence | None], levels: list[float], o: DiagnosisOptions
) -> Alert | None:
    """Later layers (the second half) flat at their floor while earlier layers hold more.

    Every later layer must be stalled and within ``expanded`` of its running minimum (not
    still falling through the usual initial collapse), and the earlier layers' mean level
    must exceed the later layers' by the same margin: dimensions the early layers have are
    not reaching the later ones. :class:`Diagnoser` further requires the condition to hold
    for ``2 * window`` consecutive snapshots.
    """
    if len(evs) < 3 or any(ev is None for ev in evs):
        return None
    full = [ev for ev in evs if ev is not None]
    half = len(full) // 2
    early, late = full[:half], full[half:]
    if not all(ev.flat and ev.stalled for ev in late):
        return None
    mean_early, mean_late = float(np.mean(levels[:half])), float(np.mean(levels[half:]))
    ratio = mean_early / mean_late
    if not ratio >= 1 + o.expanded:
        return None
    w0, w1 = full[0].window
    names_e, names_l = [ev.layer for ev in early], [ev.layer for ev in late]
    return Alert(
        "information_flow",
        f"{','.join(names_e)} -> {','.join(names_l)}",
        o.metric,
        w1,
        (w0, w1),
        ratio,
        1 + o.expanded,
        f"later layers {', '.join(names_l)} stay flat within {100 * o.expanded:.0f} % of "
        f"their minimum (steps {w0}-{w1} and before) while earlier layers "
        f"{', '.join(names_e)} hold {ratio:.2f}x their {o.metric}: what the early layers "
        "represent is not reaching the later ones",
        calibration={
            "steps": full[0].calibration["steps"],
            "mean_early": mean_early,
            "mean_late": mean_late,
        },
    )
