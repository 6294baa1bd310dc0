"""Reading an analysis DataTree for the figures and the report: its groups, the headline
metric and detector, phase segments, significant steps. No matplotlib here (the report's text
needs none)."""

from __future__ import annotations

import numpy as np
import xarray as xr

FAST_FRACTION = 0.5  # a change of this share of the range within the phases' resolution
FIGURES = (
    "training",
    "metrics",
    "trajectories",
    "dimensionality_vs_loss",
    "sampling",
    "activation_vs_weight",
)


def node(tree: xr.DataTree, name: str) -> xr.Dataset:
    """The Dataset of job group `name` in an analysis tree."""
    child = tree[name]
    if not isinstance(child, xr.DataTree):
        raise ValueError(f"Expected group {name!r} in the analysis tree, got a variable")
    return child.to_dataset()


def default_detector() -> str | None:
    """The transitions API's default detector (its best-powered one), None when it has none."""
    import importlib

    for module in ("dimlapse.analyze.transitions", "dimlapse.analyze"):
        try:
            name = getattr(importlib.import_module(module), "DEFAULT_DETECTOR", None)
        except ImportError:
            continue
        if isinstance(name, str):
            return name
    return None


def headline(tree: xr.DataTree) -> tuple[str, str]:
    """(metric, detector) the figures and report lead with.

    The metric is the study's stable rank (else the first computed). The detector is the one
    the analysis recorded as the transitions API's default (root attr ``default_detector``),
    else the API's current default, else the first detector that is not the study's z-score
    rule: the report's claims come from a calibrated detector with power, not from the rule
    that cannot fire in the first ``window`` samples.
    """
    dim = node(tree, "dimensionality")["dimensionality"]
    metrics = [str(m) for m in dim["metric"].values]
    metric = "stable_rank" if "stable_rank" in metrics else metrics[0]
    detectors = [str(d) for d in node(tree, "transitions")["detector"].values]
    for name in (tree.attrs.get("default_detector"), default_detector()):
        if name in detectors:
            return metric, str(name)
    others = [d for d in detectors if d != "zscore"]
    return metric, (others or detectors)[0]


def fast_change(p: xr.Dataset) -> tuple[float, float]:
    """(share of the range, step) of the fastest change within the phases' resolution."""
    if "fastest_change_fraction" not in p:
        return np.nan, np.nan
    return float(p["fastest_change_fraction"]), float(p["fastest_change_step"])


def phase_segments(p: xr.Dataset) -> list[tuple[float, float, str]]:
    """(start, end, class) of one trajectory's segments, adjacent ones of a class merged.

    The segment holding a change of at least ``FAST_FRACTION`` of the range within the
    phases' resolution is ``unresolved``: the smoother and the fit cannot follow it.
    """
    frac, at = fast_change(p)
    names = {-1: "collapse", 0: "stabilisation", 1: "expansion"}
    out: list[tuple[float, float, str]] = []
    for k in range(p.sizes["segment"]):
        a, b = float(p["segment_start"][k]), float(p["segment_end"][k])
        if not (np.isfinite(a) and np.isfinite(b)):
            continue
        name = names[int(p["segment_trend"][k])]
        if frac >= FAST_FRACTION and a <= at <= b:
            name = "unresolved"
        if out and out[-1][2] == name:
            out[-1] = (out[-1][0], b, name)
        else:
            out.append((a, b, name))
    return out


def kinds_in(tree: xr.DataTree) -> list[str]:
    return [str(k) for k in node(tree, "dimensionality")["kind"].values]


def significant_steps(tree: xr.DataTree, detector: str, kind: str) -> np.ndarray:
    """Steps of every significant transition of `detector` in `kind`, all layers and metrics."""
    tr = node(tree, "transitions")
    if kind not in tr["kind"].values or detector not in tr["detector"].values:
        return np.zeros(0)
    t = tr.sel(kind=kind, detector=detector)
    sig = t["significant"].fillna(False).astype(bool) & t["step"].notnull()
    return np.unique(t["step"].values[sig.values])
