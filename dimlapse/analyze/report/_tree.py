"""Reading an analysis DataTree for the figures and the report: its groups, the headline
metric and detector, phase segments, significant steps. No matplotlib here (the report's text
needs none)."""

from __future__ import annotations

import numpy as np
import xarray as xr

from ..jobs import phase_sequence

FIGURES = (
    "training",
    "metrics",
    "trajectories",
    "dimensionality_vs_loss",
    "sampling",
    "activation_vs_weight",
)


def figures_of(tree: xr.DataTree) -> tuple[str, ...]:
    """The figures of `tree`: ``FIGURES``, plus ``formation`` when the run had that job."""
    return FIGURES + (("formation",) if "formation" in tree.children else ())


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


def phase_segments(p: xr.Dataset) -> list[tuple[float, float, str]]:
    """(start, end, class) of one trajectory's segments (:func:`dimlapse.analyze.jobs.
    phase_sequence`: the segment holding a change faster than the resolution is
    ``unresolved``, and the claims state that change with its size)."""
    return phase_sequence(p)


def kinds_in(tree: xr.DataTree) -> list[str]:
    return [str(k) for k in node(tree, "dimensionality")["kind"].values]


def significant_steps(tree: xr.DataTree, detector: str, kind: str) -> np.ndarray:
    """Steps of every significant transition of `detector` in `kind`, all layers and metrics."""
    tr = node(tree, "transitions")
    if kind not in tr["kind"].values or detector not in tr["detector"].values:
        return np.zeros(0)
    t = tr.sel(kind=kind, detector=detector)
    sig = t["significant"].fillna(False).astype(bool) & t["step"].notnull()
    if "notable" in t:  # figures and counts speak of notable events once the job marks them
        sig = sig & t["notable"].fillna(False).astype(bool)
    return np.unique(t["step"].values[sig.values])
