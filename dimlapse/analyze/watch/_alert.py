"""The alert record and the options of the diagnoses."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["KINDS", "Alert", "DiagnosisOptions"]

KINDS = ("non_finite", "rank_collapse", "bottleneck", "instability", "information_flow")


@dataclass(frozen=True)
class DiagnosisOptions:
    """Windows and thresholds of the diagnoses (snapshot counts and log-unit fractions).

    Parameters
    ----------
    metric : str
        The dimensionality series the rules read (a name in ``SPECTRAL_METRICS``).
    window : int
        Snapshots in the recent window a statistic is computed on.
    warmup : int
        Snapshots of calibration history required before any rule but ``non_finite`` runs.
    stall : float
        Smallest relative change over a window that counts as moving; the calibrated
        tolerance is ``max(stall, noise_factor * noise)``.
    noise_factor : float
        Multiple of the layer's earlier per-snapshot noise for stall and instability.
    unstable_floor, unstable_ceiling : float
        Bounds on the instability threshold ``noise_factor * earlier noise`` (log units per
        snapshot): a calm run must still move 3 % per snapshot to be erratic, and a run
        erratic from its first snapshots is caught at 8 %.
    capacity : float
        Fraction of a layer's width (largest possible rank) at which it is saturated.
    expanded : float
        Rise above a layer's running minimum that counts as expansion.
    collapse : float
        Fraction of its peak (after it expanded) below which a layer has collapsed (a
        warning: a layer that compresses while it learns, like the default transformer's
        block output before it generalises, sits near half its early peak for a long time).
    severe : float
        Fraction of its peak below which a collapse is severe: held for ``persist`` windows
        in one episode, it is ``critical`` (what a run does not recover from by itself).
    floor : float
        A collapsed layer at this many dimensions or fewer is severe whatever its peak: one
        direction carries its whole variance (a narrow layer that peaked at 2.6 and sits at
        1.0 keeps 40 % of its peak, and nothing of what it represented).
    persist : int
        Windows a severe collapse must last to be critical; one that recovers sooner (a loss
        spike that flattens a layer for a few snapshots) stays a warning. A recovery must
        last as long to re-arm a rule.
    rearm : float
        Hysteresis margin in (0, 1): after an alert, a rule is re-armed only once its
        statistic has been past ``rearm`` x its threshold (``threshold / rearm`` for the
        collapse ratio) for ``persist`` windows, so a statistic hovering at its threshold,
        or a run calm for a moment between the spikes of a spiky period, is one episode.
    """

    metric: str = "participation_ratio"
    window: int = 12
    warmup: int = 12
    stall: float = 0.02
    noise_factor: float = 4.0
    unstable_floor: float = 0.03
    unstable_ceiling: float = 0.08
    capacity: float = 0.8
    expanded: float = 0.15
    collapse: float = 0.5
    severe: float = 0.25
    floor: float = 1.5
    persist: int = 3
    rearm: float = 0.8

    def __post_init__(self) -> None:
        for name in ("window", "warmup"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 4:
                raise ValueError(f"Expected `{name}` to be an int >= 4, got {value!r}")
        for name in (
            "stall",
            "noise_factor",
            "unstable_floor",
            "unstable_ceiling",
            "expanded",
            "floor",
        ):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"Expected `{name}` to be a positive number, got {value!r}")
        if not isinstance(self.persist, int) or self.persist < 1:
            raise ValueError(f"Expected `persist` to be an int >= 1, got {self.persist!r}")
        for name in ("capacity", "collapse", "severe", "rearm"):
            value = getattr(self, name)
            if not 0 < value < 1:
                raise ValueError(f"Expected `{name}` in (0, 1), got {value!r}")
        if not self.severe < self.collapse:
            raise ValueError(
                f"Expected `severe` below `collapse` ({self.collapse!r}), got {self.severe!r}"
            )


@dataclass(frozen=True)
class Alert:
    """One diagnosis with its evidence; ``to_dict`` is one line of ``alerts.jsonl``.

    ``statistic`` is compared with ``threshold`` (see each rule for which side alarms);
    ``calibration`` says which earlier snapshots the threshold was calibrated on and what
    they gave; ``window`` is the evidence's first and last step; ``context`` names the
    training events in that window (loss or gradient-norm spike, held-out accuracy change,
    learning-rate change), empty when training was quiet; ``layer`` lists every layer that
    opened the episode (comma-separated).
    """

    kind: str
    layer: str
    metric: str
    step: int
    window: tuple[int, int]  # first and last step of the evidence window
    statistic: float
    threshold: float
    message: str
    severity: str = "warning"
    calibration: dict[str, Any] = field(default_factory=dict)
    context: tuple[str, ...] = ()
    time: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (the window as a two-element list)."""
        out = asdict(self)
        out["window"] = list(self.window)
        out["context"] = list(self.context)
        return out
