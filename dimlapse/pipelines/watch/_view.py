"""The terminal view of ``watch``: a redrawn panel on a terminal, plain lines otherwise."""

from __future__ import annotations

import math
import re
import sys
from typing import Any, TextIO

import numpy as np

_BARS = "▁▂▃▄▅▆▇█"
_RED, _YELLOW, _BOLD, _RESET = "\x1b[31m", "\x1b[33m", "\x1b[1m", "\x1b[0m"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # store-provided text must not drive the terminal


def _safe(text: object) -> str:
    """``text`` with control characters (escape sequences, newlines) shown as ``?``."""
    return _CONTROL.sub("?", str(text))


def sparkline(values: np.ndarray, *, width: int = 40) -> str:
    """The last ``width`` values as block characters scaled to their range (``·`` for NaN)."""
    v = np.asarray(values, dtype=np.float64)[-width:]
    finite = v[np.isfinite(v)]
    if finite.size == 0:
        return "·" * v.size
    lo, hi = float(finite.min()), float(finite.max())
    span = hi - lo if hi > lo else 1.0
    out = []
    for x in v:
        if not math.isfinite(x):
            out.append("·")
        else:
            out.append(_BARS[min(len(_BARS) - 1, int((x - lo) / span * len(_BARS)))])
    return "".join(out)


class TerminalView:
    """Draws the monitor's state after each poll.

    Parameters
    ----------
    stream : file, optional
        Where to draw (default ``sys.stdout``).
    live : bool, optional
        Redraw one panel in place (ANSI); default: when ``stream`` is a terminal. Otherwise
        one line per poll that found new snapshots, plus one line per alert.
    """

    def __init__(self, stream: TextIO | None = None, *, live: bool | None = None) -> None:
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty() if live is None else live
        self._last_snapshots = -1
        self._alerts_shown = 0

    def waiting(self, store: str, seconds: float) -> None:
        """Say that the store is not a run yet and how long the watch waits for it."""
        self.stream.write(
            f"waiting for {_safe(store)} ... (not a run yet; up to {seconds:.0f} s, Ctrl-C stops)\n"
        )
        self.stream.flush()

    def update(self, state: dict[str, Any], *, dashboard: str | None = None) -> None:
        """Draw ``state`` (:meth:`Monitor.state`)."""
        if self.live:
            self.stream.write("\x1b[H\x1b[J" + self.panel(state, dashboard=dashboard))
            self.stream.flush()
            return
        alerts = state["alerts"]
        if state["snapshots"] != self._last_snapshots:
            self._last_snapshots = state["snapshots"]
            self.stream.write(self.line(state) + "\n")
        for a in alerts[self._alerts_shown :]:
            self.stream.write(f"ALERT {a['kind']} [{a['severity']}] {_safe(a['message'])}\n")
        self._alerts_shown = len(alerts)
        self.stream.flush()

    @staticmethod
    def line(state: dict[str, Any]) -> str:
        """One summary line: step, snapshots, each layer's diagnosed metric."""
        m = state["diagnosed_metric"]
        parts = [
            f"{_safe(ly['name'])}={_last(ly[m]):.2f}"
            for ly in state["layers"]
            if ly.get(m) is not None
        ]
        if not state["snapshots"]:
            return f"[{_safe(state['status'])}] no snapshot yet; alerts: {len(state['alerts'])}"
        return (
            f"[{_safe(state['status'])}] step {state['last_step']} ({state['snapshots']} "
            f"snapshots) {m}: {' '.join(parts)}; alerts: {len(state['alerts'])}"
        )

    @staticmethod
    def panel(state: dict[str, Any], *, dashboard: str | None = None) -> str:
        """The full panel: header, one row per layer with a sparkline, the latest alerts."""
        m = state["diagnosed_metric"]
        head = (
            f"{_BOLD}dimlapse watch{_RESET}  {_safe(state['run'])}  status "
            f"{_safe(state['status'])}  step {state['last_step']}  snapshots {state['snapshots']}"
        )
        lines = [head]
        if dashboard:
            lines.append(f"dashboard: {dashboard}")
        loss = state["loss"]["values"]
        lines.append(f"loss {_last(loss):.4f}  {sparkline(np.array(loss, dtype=float))}")
        cols = [max(12, len(k)) for k in state["metrics"]]  # whole metric names
        lines.append(
            f"{'layer':<24} {'width':>6} "
            + " ".join(f"{k:>{c}}" for k, c in zip(state["metrics"], cols, strict=True))
        )
        flagged = {a["layer"] for a in state["alerts"]}
        for ly in state["layers"]:
            vals = " ".join(
                f"{_last(ly[k]):>{c}.3f}" for k, c in zip(state["metrics"], cols, strict=True)
            )
            name = f"{_safe(ly['name'])[:24]:<24}"
            if ly["name"] in flagged:
                name = f"{_YELLOW}{name}{_RESET}"
            series = np.array([np.nan if v is None else v for v in ly[m]], dtype=float)
            lines.append(f"{name} {ly['width']:>6} {vals}  {sparkline(series)}")
        alerts = state["alerts"]
        lines.append(f"alerts: {len(alerts)}")
        for a in alerts[-6:]:
            color = _RED if a["severity"] == "critical" else _YELLOW
            lines.append(f"  {color}{a['kind']}{_RESET} step {a['step']}: {_safe(a['message'])}")
        return "\n".join(lines) + "\n"


def _last(values: list[float | None]) -> float:
    for v in reversed(values):
        if v is not None:
            return float(v)
    return float("nan")
