"""report.md: the study's claims beside this run's measurements, each with a verdict.

Claims come from the headline detector (the transitions API's best-powered default); the
study's z-score rule is shown beside it. The report opens with how the setup differs from the
study's, puts transitions next to the training dynamics (loss and gradient-norm spikes,
held-out accuracy), says plainly which claims this run does not reproduce, and lists the
non-finite values and excluded steps.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import xarray as xr

from ._claims import (
    SPACES,
    claims_of,
    detectors_shown,
    finite,
    num,
    phase_cell,
    pooled,
    rho_cell,
    rho_values,
    sampling_numbers,
    verdict_cell,
)
from ._context import formation_lines, health_lines, setup_lines, training_lines, twonn_line
from ._tree import figures_of, headline

__all__ = ["claims_table", "report_markdown", "write_report"]


def _counts(tree: xr.DataTree, kind: str, det: str) -> dict[str, float]:
    raw, sig = pooled(tree, kind, "n_raw", det), pooled(tree, kind, "n_significant", det)
    early_sig = pooled(tree, kind, "n_significant_early", det)
    return {
        "raw": raw,
        "sig": sig,
        "null": pooled(tree, kind, "n_null", det),
        "early_sig": early_sig / sig if sig else np.nan,
    }


def _episodes(cl: xr.Dataset, kind: str) -> int:
    if "episode_space" not in cl:
        return 0
    return int((cl["episode_space"].values == kind).sum())


def claims_table(tree: xr.DataTree) -> tuple[str, dict[str, float]]:
    """The markdown claims table and the numbers the interpretation uses.

    One row per claim and space (activation, weight): the study's claim, this run's numbers
    for the headline detector and for the study's rule, and the verdict of the ``claims``
    group (its test, p-value or interval, n independent episodes or layers, and why).
    """
    metric, det = headline(tree)
    cl = claims_of(tree)
    shown = detectors_shown(tree)
    rule = shown[1] if len(shown) > 1 else None
    c = {(k, d): _counts(tree, k, d) for k in SPACES for d in shown}
    rows = []

    def jumps(kind: str, d: str) -> str:
        x = c[(kind, d)]
        return (
            f"raw {num(x['raw'])} (null {num(x['null'], '{:,.1f}')}), significant {num(x['sig'])}"
        )

    def early(kind: str, d: str) -> str:
        if not c[(kind, d)]["sig"]:
            return "no significant transition"
        return f"{num(100 * c[(kind, d)]['early_sig'], '{:.0f}')} % of significant"

    numbers: dict[str, float] = {"share": float(cl.attrs.get("share", 0.25))}
    rho = {}
    for target in ("loss", "grad_norm"):
        vals = rho_values(tree, target)
        rho[target] = vals
        short = "loss" if target == "loss" else "grad"  # keys the study workflow reads
        numbers[f"{target}_median"] = finite(np.median, [r["raw"][0] for r in vals])
        numbers[f"{short}_raw_abs"] = finite(np.median, [abs(r["raw"][0]) for r in vals])
        numbers[f"{short}_diff_abs"] = finite(np.median, [abs(r["diff"][0]) for r in vals])
    samp = {d: sampling_numbers(tree, d) for d in shown}
    same = {}
    for kind in SPACES:
        cell, n_same, n = phase_cell(tree, kind)
        same[kind] = (n_same, n)
        rho_k = {t: rho_values(tree, t, kind) for t in ("loss", "grad_norm")}
        s_k = {d: sampling_numbers(tree, d, kind) for d in shown}
        cells = {
            "phases": (f"Phases ({kind})", cell, "-"),
            "counts": (
                f"Jumps ({kind})",
                f"{jumps(kind, det)}; {_episodes(cl, kind)} episodes",
                jumps(kind, rule) if rule else "-",
            ),
            "timing": (
                f"Timing ({kind})",
                early(kind, det),
                early(kind, rule) if rule else "-",
            ),
            "rho_loss": ("rho(loss) " + f"({kind})", rho_cell(rho_k["loss"]), "-"),
            "rho_grad_norm": (f"rho(grad norm) ({kind})", rho_cell(rho_k["grad_norm"]), "-"),
            "sampling": (
                f"Sampling ({kind})",
                s_k[det]["cell"],
                s_k[rule]["cell"] if rule else "-",
            ),
        }
        for claim, (label, here, theirs) in cells.items():
            study = str(cl["study"].sel(claim=claim).item()) if kind == "activation" else "-"
            rows.append((label, study, here, theirs, verdict_cell(cl, claim, kind)))
    lines = [
        f"| claim | study | this run: {det} ({metric}, layers pooled) | study's rule: "
        f"{rule or 'not run'} | verdict (claims group) |",
        "| --- | --- | --- | --- | --- |",
        *(f"| {' | '.join(r)} |" for r in rows),
    ]
    a, w = c[("activation", det)], c[("weight", det)]
    numbers.update(
        a_raw=a["raw"],
        a_null=a["null"],
        a_sig=a["sig"],
        w_sig=w["sig"],
        w_raw=w["raw"],
        early_sig=a["early_sig"],
        same=same["activation"][0],
        n_layers=same["activation"][1],
        finest_sig=samp[det]["finest"],
        coarse_found=samp[det]["found"],
        a_episodes=_episodes(cl, "activation"),
        w_episodes=_episodes(cl, "weight"),
    )
    return "\n".join(lines), numbers


def tests_lines(cl: xr.Dataset) -> list[str]:
    """One line per claim: the test its verdict comes from (the same in both spaces)."""
    out = []
    for claim in cl["claim"].values:
        test = str(cl["test"].sel(claim=claim, space="activation").item())
        if test:
            out.append(f"- `{claim}`: {test}.")
    return out


def interpretation(tree: xr.DataTree, n: dict[str, float]) -> list[str]:
    """Short, rule-based reading of the numbers (what they do and do not support)."""
    alpha = tree.attrs.get("alpha", 0.05)
    _, det = headline(tree)
    cl = claims_of(tree)
    out = []
    if np.isfinite(n["a_raw"]) and np.isfinite(n["a_null"]):
        ratio = n["a_raw"] / n["a_null"] if n["a_null"] > 0 else np.inf
        verdict = (
            "no more than about what the same rule finds on surrogates without "
            "transitions, so the raw count is not evidence of transitions"
            if ratio < 1.5
            else f"{ratio:.1f}x the surrogate count, so some candidates exceed the null"
        )
        out.append(f"Raw activation candidates of {det} ({num(n['a_raw'])}) are {verdict}.")
    out.append(
        f"After calibration against surrogates and FDR control at alpha = {alpha}, {det} keeps "
        f"{num(n['a_sig'])} activation and {num(n['w_sig'])} weight transitions; events that "
        f"coincide across series form {n['a_episodes']} activation and {n['w_episodes']} "
        "weight episodes, and every count in the verdicts is of episodes."
    )
    for claim in ("timing", "rho_loss", "rho_grad_norm", "sampling"):
        c = cl.sel(claim=claim, space="activation")
        detail = str(c["detail"].item())
        if detail:
            out.append(f"{claim} (activation): {c['verdict'].item()}; {detail}.")
    return out


def short_run_line(tree: xr.DataTree) -> list[str]:
    """One warning line when the run is shorter than the jobs need."""
    cl = claims_of(tree)
    if not cl.attrs.get("short_run"):
        return []
    return [
        f"> **Warning:** this run has {cl.attrs.get('n_snapshots')} snapshots; the jobs need "
        f"about {cl.attrs.get('min_snapshots')}, so every verdict below is inconclusive.",
        "",
    ]


def report_markdown(tree: xr.DataTree) -> str:
    """The report as markdown text."""
    table, numbers = claims_table(tree)
    metric, det = headline(tree)
    a = tree.attrs
    cl = claims_of(tree)
    lines = [
        f"# dimlapse report: {a.get('run', '?')}",
        "",
        *short_run_line(tree),
        *setup_lines(tree),
        "",
        f"Store `{a.get('store', '?')}`, status `{a.get('run_status', '?')}`, captured every "
        f"`{a.get('run_every', '?')}` steps; analysed {a.get('analysed', '?')}. Claims use the "
        f"`{det}` detector (the transitions API's default; `make bench-transitions` gives its "
        f"measured power per shape) on `{metric}`; the study's z-score rule is shown beside it "
        "(it needs a full window of past samples, so it cannot fire at the very start of "
        "training, where the largest changes are). Verdicts come from the `claims` group: "
        "`reproduced` only when the stated test says so at "
        f"{cl.attrs.get('alpha', 0.05)}, `not reproduced` when the data exclude the study's "
        "value, `inconclusive` otherwise.",
        "",
        "## The study's claims and this run",
        "",
        table,
        "",
        "How each verdict is tested:",
        "",
        *tests_lines(cl),
        "",
        twonn_line(tree),
        "",
        "## Training dynamics",
        "",
        *training_lines(tree),
        "",
        "## Feature formation",
        "",
        *formation_lines(tree),
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
        *(f"![{f}](figures/{f}.png)" for f in figures_of(tree)),
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
