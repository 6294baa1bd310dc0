"""The phases claim: the study's collapse, expansion, stabilisation order, per layer."""

from __future__ import annotations

import numpy as np
import xarray as xr

from ._verdicts import _row

#: A change of at least this share of a series' range within the phases' resolution is faster
#: than the phases resolve: its segment is "unresolved" and the change is stated with its size.
FAST_FRACTION = 0.5
STUDY_ORDER = ["collapse", "expansion", "stabilisation"]


def phase_sequence(p: xr.Dataset) -> list[tuple[float, float, str]]:
    """(start, end, class) of one trajectory's segments, adjacent ones of a class merged; the
    segment holding a change faster than the resolution is ``unresolved``."""
    frac = float(p["fastest_change_fraction"]) if "fastest_change_fraction" in p else np.nan
    at = float(p["fastest_change_step"]) if "fastest_change_step" in p else np.nan
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


def fast_change_text(p: xr.Dataset, resolution: object) -> str:
    """The fastest change within the phases' resolution, with its size, when it is fast."""
    frac = float(p["fastest_change_fraction"]) if "fastest_change_fraction" in p else np.nan
    if not frac >= FAST_FRACTION:
        return ""
    a = float(p["fastest_change_from"]) if "fastest_change_from" in p else np.nan
    b = float(p["fastest_change_to"]) if "fastest_change_to" in p else np.nan
    ratio = f", x{b / a:.2g}" if np.isfinite(a) and np.isfinite(b) and a > 0 and b > 0 else ""
    word = "rise" if b > a else "drop"
    return (
        f"fast {word} {a:.4g} -> {b:.4g} ({frac:.0%} of the range{ratio}) within {resolution} "
        f"samples from step {float(p['fastest_change_step']):,.0f}, faster than the phases resolve"
    )


def phases_claim(ph: xr.Dataset) -> dict:
    """Layers whose phases follow the study's order (a stated rule, no p-value)."""
    res = ph.attrs.get("resolution")
    rows = []
    same = 0
    for layer in ph["layer"].values:
        p = ph.sel(layer=layer)
        seq = phase_sequence(p)
        if not seq:
            continue
        same += [name for *_, name in seq] == STUDY_ORDER
        spans = ", ".join(f"{n} {a:,.0f}-{b:,.0f}" for a, b, n in seq)
        fast = fast_change_text(p, res)
        rows.append(f"{layer}: {spans}" + (f" ({fast})" if fast else ""))
    n = len(rows)
    test = (
        "rule (no p-value): a layer follows the study when its phases are collapse, expansion, "
        f"stabilisation in that order, each labelled phase changing by >= "
        f"{ph.attrs.get('min_change', 'n/a')} of the smoothed range and >= "
        f"{ph.attrs.get('min_relative', 'n/a')} of the level; reproduced when half the layers "
        "or more do"
    )
    verdict = "inconclusive" if n == 0 else "reproduced" if 2 * same >= n else "not reproduced"
    return _row(
        statistic=same / n if n else np.nan,
        n=n,
        verdict=verdict,
        test=test,
        statistic_name="share of layers in the study's order",
        detail="; ".join(rows),
    )
