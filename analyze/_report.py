"""report.md: the study's claims beside this run's measurements, with null-surrogate counts."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import xarray as xr

from ._figures import FIGURES, headline, node

STUDY = {
    "phases": "collapse 0-300, expansion 300-5000, stabilisation 5000-8000 (of 8000 steps)",
    "counts": "~85 z-score jumps in activation space vs 1 in weight space",
    "timing": "two thirds of jumps in the first 2000 steps (first 25 %)",
    "rho_loss": "Spearman rho with loss -0.951",
    "rho_grad": "Spearman rho with gradient norm -0.701",
    "sampling": "coarse sampling (every 100-1000 steps) misses most transitions",
}


def _num(x: float, fmt: str = "{:,.0f}") -> str:
    return "n/a" if x is None or not np.isfinite(x) else fmt.format(x)


def _finite(reduce, values) -> float:
    """`reduce` over the finite entries of `values`; NaN when there are none."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(reduce(v)) if v.size else np.nan


def _pooled(tree: xr.DataTree, kind: str, var: str, node: str = "timing") -> float:
    """Sum of `var` over layers for the headline metric and detector (NaN when absent)."""
    metric, detector = headline(tree)
    ds = tree[node].to_dataset()
    if var not in ds or kind not in ds["kind"].values:
        return np.nan
    return float(ds[var].sel(kind=kind, metric=metric, detector=detector).sum(min_count=1))


def _layers(tree: xr.DataTree, kind: str) -> list[str]:
    metric, _ = headline(tree)
    dim = node(tree, "dimensionality")["dimensionality"].sel(kind=kind, metric=metric)
    return [str(x) for x in dim["layer"].values if np.isfinite(dim.sel(layer=x).values).any()]


def phase_cell(tree: xr.DataTree, kind: str = "activation") -> tuple[str, int, int]:
    """Phase spans per layer, and how many layers follow the study's order."""
    metric, _ = headline(tree)
    ph = node(tree, "phases")
    parts, same = [], 0
    layers = _layers(tree, kind)
    for layer in layers:
        p = ph.sel(kind=kind, layer=layer, metric=metric)
        spans = []
        for name in ("collapse", "expansion", "stabilisation"):
            a, b = float(p["phase_start"].sel(phase=name)), float(p["phase_end"].sel(phase=name))
            if np.isfinite(a):
                spans.append((a, f"{name} {a:,.0f}-{b:,.0f}"))
        parts.append(f"{layer}: " + (", ".join(s for _, s in sorted(spans)) or "n/a"))
        same += p["segment_trend"].values.tolist() == [-1, 1, 0]
    return "; ".join(parts), same, len(layers)


def _rho_cell(tree: xr.DataTree, target: str, kind: str = "activation") -> tuple[str, list]:
    metric, _ = headline(tree)
    cp = node(tree, "coupling")
    if target not in cp["target"].values:
        return "n/a (not recorded)", []
    cells, rows = [], []
    for layer in _layers(tree, kind):
        c = cp.sel(kind=kind, layer=layer, metric=metric, target=target)
        vals = {
            t: (
                float(c.rho.sel(transform=t)),
                float(c.rho_low.sel(transform=t)),
                float(c.rho_high.sel(transform=t)),
            )
            for t in ("raw", "diff")
        }
        rows.append(vals)
        r, d = vals["raw"], vals["diff"]
        cells.append(
            f"{layer}: {_num(r[0], '{:+.3f}')} [{_num(r[1], '{:+.2f}')}, {_num(r[2], '{:+.2f}')}]"
            f", diff {_num(d[0], '{:+.3f}')} [{_num(d[1], '{:+.2f}')}, {_num(d[2], '{:+.2f}')}]"
        )
    return "; ".join(cells) or "n/a", rows


def _sampling_cell(tree: xr.DataTree, kind: str = "activation") -> tuple[str, float, float]:
    metric, detector = headline(tree)
    sm = node(tree, "sampling")
    s = sm.sel(kind=kind, metric=metric, detector=detector).sum("layer", min_count=1)
    parts = []
    finest = float(s["n_significant"].isel(interval=0))
    coarse_found = []
    for i, k in enumerate(sm["effective_interval"].values):
        row = s.isel(interval=i)
        parts.append(
            f"every {int(k)}: raw {_num(float(row.n_raw))} "
            f"(null {_num(float(row.n_null), '{:,.1f}')}), "
            f"significant {_num(float(row.n_significant))}"
        )
        if k >= 100:
            coarse_found.append(float(row.n_base_found))
    found = _finite(np.mean, coarse_found)
    return "; ".join(parts), finest, found


def claims_table(tree: xr.DataTree) -> tuple[str, dict[str, float]]:
    """The markdown claims table and the numbers the interpretation uses."""
    metric, detector = headline(tree)
    ph, same, n_layers = phase_cell(tree)
    a_raw, a_null = _pooled(tree, "activation", "n_raw"), _pooled(tree, "activation", "n_null")
    a_sig = _pooled(tree, "activation", "n_significant")
    w_raw, w_null = _pooled(tree, "weight", "n_raw"), _pooled(tree, "weight", "n_null")
    w_sig = _pooled(tree, "weight", "n_significant")
    early_raw = _pooled(tree, "activation", "n_raw_early") / a_raw if a_raw else np.nan
    early_sig = _pooled(tree, "activation", "n_significant_early") / a_sig if a_sig else np.nan
    share = node(tree, "timing").attrs.get("share", 0.25)
    cutoff = node(tree, "timing").attrs.get("cutoff_step", np.nan)
    loss_cell, loss_rows = _rho_cell(tree, "loss")
    grad_cell, grad_rows = _rho_cell(tree, "grad_norm")
    samp_cell, finest_sig, coarse_found = _sampling_cell(tree)
    rows = [
        (
            "Phases",
            STUDY["phases"],
            ph + f" ({same} of {n_layers} layers in the study's order)",
            "-",
        ),
        (
            "Jumps",
            STUDY["counts"],
            f"activation: raw {_num(a_raw)}, significant {_num(a_sig)}; "
            f"weight: raw {_num(w_raw)}, significant {_num(w_sig)}",
            f"activation {_num(a_null, '{:,.1f}')}; weight {_num(w_null, '{:,.1f}')}",
        ),
        (
            "Timing",
            STUDY["timing"],
            f"steps <= {_num(cutoff)}: raw {_num(100 * early_raw, '{:.0f}')} %, "
            f"significant {_num(100 * early_sig, '{:.0f}')} %",
            f"{share:.0%} if spread uniformly",
        ),
        ("rho(loss)", STUDY["rho_loss"], loss_cell, "diff column: differenced series"),
        ("rho(grad norm)", STUDY["rho_grad"], grad_cell, "diff column: differenced series"),
        ("Sampling", STUDY["sampling"], samp_cell, "null per interval in brackets"),
    ]
    lines = [
        f"| claim | study | this run ({metric}, {detector}, all layers pooled) | null surrogates |",
        "| --- | --- | --- | --- |",
        *(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows),
    ]
    numbers = {
        "a_raw": a_raw,
        "a_null": a_null,
        "a_sig": a_sig,
        "w_raw": w_raw,
        "w_null": w_null,
        "w_sig": w_sig,
        "early_raw": early_raw,
        "early_sig": early_sig,
        "share": share,
        "same": same,
        "n_layers": n_layers,
        "finest_sig": finest_sig,
        "coarse_found": coarse_found,
    }
    for name, rr in (("loss", loss_rows), ("grad", grad_rows)):
        numbers[f"{name}_raw_abs"] = _finite(np.median, [abs(r["raw"][0]) for r in rr])
        numbers[f"{name}_diff_abs"] = _finite(np.median, [abs(r["diff"][0]) for r in rr])
        numbers[f"{name}_diff_zero"] = sum(r["diff"][1] <= 0 <= r["diff"][2] for r in rr)
        numbers[f"{name}_n"] = len(rr)
    return "\n".join(lines), numbers


def interpretation(tree: xr.DataTree, n: dict[str, float]) -> list[str]:
    """Short, rule-based reading of the numbers (what they do and do not support)."""
    alpha = tree.attrs.get("alpha", 0.05)
    out = []
    if np.isfinite(n["a_raw"]) and np.isfinite(n["a_null"]):
        ratio = n["a_raw"] / n["a_null"] if n["a_null"] > 0 else np.inf
        verdict = (
            "no more than about what the same rule finds on surrogates without "
            "transitions, so the raw count is not evidence of transitions"
            if ratio < 1.5
            else f"{ratio:.1f}x the surrogate count, so some candidates exceed the null"
        )
        out.append(f"Raw activation candidates ({_num(n['a_raw'])}) are {verdict}.")
    out.append(
        f"After calibration against surrogates and FDR control at alpha = {alpha}, "
        f"{_num(n['a_sig'])} activation and {_num(n['w_sig'])} weight transitions remain."
    )
    if np.isfinite(n["early_sig"]):
        out.append(
            f"{n['early_sig']:.0%} of the significant activation transitions fall in the first "
            f"{n['share']:.0%} of training (uniform spread: {n['share']:.0%})."
        )
    for name, label in (("loss", "loss"), ("grad", "gradient norm")):
        k, zero = n[f"{name}_n"], n[f"{name}_diff_zero"]
        if not k:
            continue
        reading = (
            "so the raw correlation reflects shared trends, not step-to-step coupling"
            if zero == k
            else "so some step-to-step coupling survives differencing"
            if zero < k
            else ""
        )
        out.append(
            f"Median |rho| with {label}: {n[f'{name}_raw_abs']:.2f} on raw series, "
            f"{n[f'{name}_diff_abs']:.2f} on first differences, where the interval covers 0 in "
            f"{zero} of {k} layers, {reading}."
        )
    if np.isfinite(n["coarse_found"]) and n["finest_sig"]:
        out.append(
            f"At intervals of 100 steps or more, on average {n['coarse_found']:.1f} of the "
            f"{_num(n['finest_sig'])} significant finest-interval transitions are still found."
        )
    out.append(
        f"{n['same']} of {n['n_layers']} activation layers show collapse, then expansion, "
        "then stabilisation (segmented fit; boundaries depend on the run's length and data)."
    )
    return out


def _step_list(steps: list[int], limit: int = 12) -> str:
    head = ", ".join(str(int(s)) for s in steps[:limit])
    more = f" and {len(steps) - limit} more" if len(steps) > limit else ""
    return f"step{'s' if len(steps) > 1 else ''} {head}{more}"


def health_lines(tree: xr.DataTree) -> list[str]:
    """Markdown bullets: arrays holding NaN/Inf, and the steps the analysis left out."""
    nonfinite = dict(tree.attrs.get("nonfinite") or {})
    excluded = dict(tree.attrs.get("excluded") or {})
    if not nonfinite and not excluded:
        return ["- The run holds no NaN or Inf values; no step was excluded."]
    out = []
    for name, steps in sorted(nonfinite.items()):
        out.append(f"- Non-finite values in {name}: {_step_list(list(steps))}.")
    for series, steps in sorted(excluded.items()):
        kind, _, layer = series.partition("/")
        out.append(
            f"- Excluded from every job (NaN spectrum): {kind} {layer}: {_step_list(list(steps))}."
        )
    if nonfinite and not excluded:
        out.append("- No step was excluded: no non-finite value reached a spectrum.")
    return out


def report_markdown(tree: xr.DataTree) -> str:
    """The report as markdown text."""
    table, numbers = claims_table(tree)
    a = tree.attrs
    lines = [
        f"# dimlapse report: {a.get('run', '?')}",
        "",
        f"Store `{a.get('store', '?')}`, status `{a.get('run_status', '?')}`, captured every "
        f"`{a.get('run_every', '?')}` steps; analysed {a.get('analysed', '?')}. The study's "
        "numbers come from an MLP 784-256-128-10 on MNIST (8000 steps, every 5).",
        "",
        "## The study's claims and this run",
        "",
        table,
        "",
        "## Interpretation",
        "",
        *(f"- {s}" for s in interpretation(tree, numbers)),
        "",
        "## Data health",
        "",
        *health_lines(tree),
        "",
        "## Figures",
        "",
        *(f"![{f}](figures/{f}.png)" for f in FIGURES),
        "",
        "Every number comes from `analysis.zarr` next to this file "
        '(`xr.open_datatree(path, engine="zarr")`); parameters are in each group\'s attrs.',
        "",
    ]
    return "\n".join(lines)


def write_report(tree: xr.DataTree, path: str | os.PathLike[str]) -> Path:
    """Write report.md for an analysis DataTree."""
    out = Path(path)
    out.write_text(report_markdown(tree), encoding="utf-8")
    return out
