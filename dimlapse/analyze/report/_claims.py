"""The claims table of report.md: each study claim, this run per space and detector, a verdict.

Every verdict is read from the analysis' ``claims`` group (the claims job: a stated test on
independent episodes of the headline detector's notable events); the numbers beside it are this
run's, with the study's own rule, the rolling z-score, shown as the study's rule. An analysis
written before the claims job existed gets its claims computed from its stored groups.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import xarray as xr

from ..jobs import STUDY, claims, context_windows, fast_change_text
from ._tree import headline, node, phase_segments

STUDY_RULE = "zscore"  # the study's rolling z > 2 rule, shown beside the headline detector
SPACES = ("activation", "weight")

STUDY_RHO = {"loss": -0.951, "grad_norm": -0.701}
__all__ = ["STUDY", "STUDY_RHO", "claims_of", "phase_cell", "verdict_cell"]


def claims_of(tree: xr.DataTree) -> xr.Dataset:
    """The ``claims`` group; computed from the stored groups for analyses that lack it."""
    if "claims" in tree.children:
        return node(tree, "claims")
    metric, det = headline(tree)
    dim = node(tree, "dimensionality")["dimensionality"]
    steps = dim["step"].values
    every = tree.attrs.get("run_every")
    every = float(every) if isinstance(every, int | float) else None
    timing = node(tree, "timing").attrs
    training = node(tree, "training") if "training" in tree.children else None
    return claims(
        node(tree, "transitions"),
        phases=node(tree, "phases"),
        coupling=node(tree, "coupling"),
        sampling=node(tree, "sampling"),
        metric=metric,
        detector=det,
        total_steps=float(timing.get("total_steps", steps.max())),
        start_step=float(steps.min()),
        n_snapshots=int(steps.size),
        every=every,
        context=context_windows(training, margin=every or 0.0) if training else None,
        alpha=float(tree.attrs.get("alpha", 0.05)),
    )


def verdict_cell(cl: xr.Dataset, claim: str, space: str) -> str:
    """``**verdict**``, the statistic with its p-value or interval and n, and the detail."""
    c = cl.sel(claim=claim, space=space)
    verdict, name, detail = (str(c[v].item()) for v in ("verdict", "statistic_name", "detail"))
    stat = float(c["statistic"])
    parts = [f"{name} {num(stat, '{:.2f}')}"] if name and np.isfinite(stat) else []
    if np.isfinite(float(c["p_value"])):
        parts.append(f"p = {float(c['p_value']):.2g}")
    if np.isfinite(float(c["low"])):
        parts.append(f"interval [{float(c['low']):.2f}, {float(c['high']):.2f}]")
    unit = "layers" if claim in ("phases", "rho_loss", "rho_grad_norm") else "episodes"
    parts.append(f"n = {num(float(c['n']))} {unit}")
    text = f"**{verdict}**: " + ", ".join(parts)
    return text + (f"; {detail}" if detail and claim != "phases" else "")


def num(x: Any, fmt: str = "{:,.0f}") -> str:
    """`x` formatted, or ``n/a`` for None and non-finite values."""
    return "n/a" if x is None or not np.isfinite(x) else fmt.format(x)


def finite(reduce: Callable[[np.ndarray], Any], values: Any) -> float:
    """`reduce` over the finite entries of `values`; NaN when there are none."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(reduce(v)) if v.size else np.nan


def detectors_shown(tree: xr.DataTree) -> list[str]:
    """The headline detector first, then the study's rule when it was run."""
    _, det = headline(tree)
    have = [str(d) for d in node(tree, "transitions")["detector"].values]
    return [det] + ([STUDY_RULE] if STUDY_RULE in have and STUDY_RULE != det else [])


def pooled(tree: xr.DataTree, kind: str, var: str, detector: str, job: str = "timing") -> float:
    """Sum of `var` over layers for the headline metric and `detector` (NaN when absent)."""
    metric, _ = headline(tree)
    ds = node(tree, job)
    if var not in ds or kind not in ds["kind"].values or detector not in ds["detector"].values:
        return np.nan
    return float(ds[var].sel(kind=kind, metric=metric, detector=detector).sum(min_count=1))


def layers(tree: xr.DataTree, kind: str) -> list[str]:
    """Layers of `kind` with a finite headline-metric trajectory."""
    metric, _ = headline(tree)
    dim = node(tree, "dimensionality")["dimensionality"]
    if kind not in dim["kind"].values:
        return []
    dim = dim.sel(kind=kind, metric=metric)
    return [str(x) for x in dim["layer"].values if np.isfinite(dim.sel(layer=x).values).any()]


def phase_cell(tree: xr.DataTree, kind: str) -> tuple[str, int, int]:
    """Phase segments per layer of `kind`, and how many layers follow the study's order.

    Segments are listed as the figure shades them. A layer whose raw series moves by at least
    ``FAST_FRACTION`` of its range within the phases' resolution has a change the smoother
    cannot follow: its segment is ``unresolved`` and the change is stated with its size.
    """
    metric, _ = headline(tree)
    ph = node(tree, "phases")
    res = ph.attrs.get("resolution")
    parts, same = [], 0
    names = layers(tree, kind)
    for layer in names:
        p = ph.sel(kind=kind, layer=layer, metric=metric)
        spans = [f"{name} {a:,.0f}-{b:,.0f}" for a, b, name in phase_segments(p)]
        cell = f"{layer}: " + (", ".join(spans) or "n/a")
        fast = fast_change_text(p, res)
        parts.append(cell + (f" ({fast})" if fast else ""))
        order = [name for _, _, name in phase_segments(p)]
        same += order == ["collapse", "expansion", "stabilisation"]  # "unresolved" never matches
    return "; ".join(parts) or "n/a", same, len(names)


def rho_values(tree: xr.DataTree, target: str, kind: str = "activation") -> list[dict]:
    """Per layer: {transform: (rho, low, high)} for the headline metric."""
    metric, _ = headline(tree)
    cp = node(tree, "coupling")
    if target not in cp["target"].values:
        return []
    rows = []
    for layer in layers(tree, kind):
        c = cp.sel(kind=kind, layer=layer, metric=metric, target=target)
        rows.append(
            {
                t: tuple(float(c[v].sel(transform=t)) for v in ("rho", "rho_low", "rho_high"))
                for t in ("raw", "diff")
            }
            | {"layer": layer}
        )
    return rows


def rho_cell(rows: list[dict]) -> str:
    """Markdown cell: raw and differenced rho with intervals per layer."""
    cells = []
    for r in rows:
        a, d = r["raw"], r["diff"]
        cells.append(
            f"{r['layer']}: {num(a[0], '{:+.3f}')} [{num(a[1], '{:+.2f}')}, "
            f"{num(a[2], '{:+.2f}')}], diff {num(d[0], '{:+.3f}')} [{num(d[1], '{:+.2f}')}, "
            f"{num(d[2], '{:+.2f}')}]"
        )
    return "; ".join(cells) or "n/a (not recorded)"


def sampling_numbers(tree: xr.DataTree, detector: str, kind: str = "activation") -> dict:
    """Per-interval counts, the finest significant count and the mean found at >= 100 steps."""
    metric, _ = headline(tree)
    sm = node(tree, "sampling")
    if detector not in sm["detector"].values or kind not in sm["kind"].values:
        return {"cell": "n/a", "finest": np.nan, "found": np.nan}
    s = sm.sel(kind=kind, metric=metric, detector=detector).sum("layer", min_count=1)
    parts, coarse = [], []
    for i, k in enumerate(sm["effective_interval"].values):
        row = s.isel(interval=i)
        parts.append(f"every {int(k)}: {num(float(row.n_significant))}")
        if k >= 100:
            coarse.append(float(row.n_base_found))
    return {
        "cell": ", ".join(parts),
        "finest": float(s["n_significant"].isel(interval=0)),
        "found": finite(np.mean, coarse),
    }
