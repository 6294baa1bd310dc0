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
    RHO_TOLERANCE,
    SPACES,
    STUDY,
    STUDY_RHO,
    detectors_shown,
    finite,
    num,
    phase_cell,
    pooled,
    rho_cell,
    rho_values,
    sampling_numbers,
)
from ._context import health_lines, setup_lines, training_lines, twonn_line
from ._tree import FIGURES, headline, node

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


def _verdict(ok: bool | None, why: str) -> str:
    return f"{'yes' if ok else 'no' if ok is not None else 'n/a'}: {why}"


def claims_table(tree: xr.DataTree) -> tuple[str, dict[str, float]]:
    """The markdown claims table and the numbers the interpretation uses.

    Rows per space (activation, weight) for phases, jumps and timing; one column for the
    headline detector, one for the study's rule; a verdict column saying whether this run
    reproduces the claim (judged on the headline detector).
    """
    metric, det = headline(tree)
    shown = detectors_shown(tree)
    rule = shown[1] if len(shown) > 1 else None
    c = {(k, d): _counts(tree, k, d) for k in SPACES for d in shown}
    cutoff = node(tree, "timing").attrs.get("cutoff_step", np.nan)
    share = node(tree, "timing").attrs.get("share", 0.25)
    rows = []
    phase_same = {}
    for kind in SPACES:
        cell, same, n = phase_cell(tree, kind)
        phase_same[kind] = (same, n)
        ok = None if not n else same * 2 >= n
        rows.append(
            (
                f"Phases ({kind})",
                STUDY["phases"] if kind == "activation" else "-",
                cell,
                "-",
                _verdict(ok, f"{same} of {n} layers in the study's order")
                if kind == "activation"
                else "-",
            )
        )

    def jumps(kind: str, d: str) -> str:
        x = c[(kind, d)]
        return (
            f"raw {num(x['raw'])} (null {num(x['null'], '{:,.1f}')}), significant {num(x['sig'])}"
        )

    a, w = c[("activation", det)], c[("weight", det)]
    more = None if not np.isfinite(a["sig"]) else a["sig"] > 3 * max(w["sig"], 1)
    for kind in SPACES:
        verdict = (
            _verdict(more, f"{num(a['sig'])} activation vs {num(w['sig'])} weight significant")
            if kind == "activation"
            else "-"
        )
        rows.append(
            (
                f"Jumps ({kind})",
                STUDY["counts"] if kind == "activation" else "-",
                jumps(kind, det),
                jumps(kind, rule) if rule else "-",
                verdict,
            )
        )

    def early(kind: str, d: str) -> str:
        if not c[(kind, d)]["sig"]:
            return "no significant transition"
        return f"{num(100 * c[(kind, d)]['early_sig'], '{:.0f}')} % of significant"

    ok = None if not np.isfinite(a["early_sig"]) else a["early_sig"] >= 0.5
    rows.append(
        (
            "Timing (activation)",
            STUDY["timing"],
            early("activation", det),
            early("activation", rule) if rule else "-",
            _verdict(ok, f"steps <= {num(cutoff)}; {share:.0%} if uniform"),
        )
    )
    rows.append(
        ("Timing (weight)", "-", early("weight", det), early("weight", rule) if rule else "-", "-")
    )
    numbers: dict[str, float] = {"share": share}
    for target, label, key in (
        ("loss", "rho(loss)", "rho_loss"),
        ("grad_norm", "rho(grad norm)", "rho_grad"),
    ):
        vals = rho_values(tree, target)
        med = finite(np.median, [r["raw"][0] for r in vals])
        numbers[f"{target}_median"] = med
        numbers[f"{target}_diff_zero"] = sum(r["diff"][1] <= 0 <= r["diff"][2] for r in vals)
        numbers[f"{target}_n"] = len(vals)
        short = "loss" if target == "loss" else "grad"  # keys the study workflow reads
        numbers[f"{short}_raw_abs"] = finite(np.median, [abs(r["raw"][0]) for r in vals])
        numbers[f"{short}_diff_abs"] = finite(np.median, [abs(r["diff"][0]) for r in vals])
        ok = None if not np.isfinite(med) else abs(med - STUDY_RHO[target]) <= RHO_TOLERANCE
        rows.append(
            (
                label,
                STUDY[key],
                rho_cell(vals),
                "-",
                _verdict(
                    ok,
                    f"median {num(med, '{:+.2f}')} here vs {STUDY_RHO[target]:+.2f} in the study",
                ),
            )
        )
    s = {d: sampling_numbers(tree, d) for d in shown}
    frac = s[det]["found"] / s[det]["finest"] if s[det]["finest"] else np.nan
    ok = None if not np.isfinite(frac) else frac < 0.5
    rows.append(
        (
            "Sampling (activation)",
            STUDY["sampling"],
            s[det]["cell"],
            s[rule]["cell"] if rule else "-",
            _verdict(
                ok,
                f"{num(s[det]['found'], '{:.1f}')} of {num(s[det]['finest'])} "
                "finest significant transitions found at >= 100 steps",
            ),
        )
    )
    lines = [
        f"| claim | study | this run: {det} ({metric}, layers pooled) | study's rule: "
        f"{rule or 'not run'} | reproduced |",
        "| --- | --- | --- | --- | --- |",
        *(f"| {' | '.join(r)} |" for r in rows),
    ]
    numbers.update(
        a_raw=a["raw"],
        a_null=a["null"],
        a_sig=a["sig"],
        w_sig=w["sig"],
        w_raw=w["raw"],
        early_sig=a["early_sig"],
        same=phase_same["activation"][0],
        n_layers=phase_same["activation"][1],
        finest_sig=s[det]["finest"],
        coarse_found=s[det]["found"],
    )
    return "\n".join(lines), numbers


def interpretation(tree: xr.DataTree, n: dict[str, float]) -> list[str]:
    """Short, rule-based reading of the numbers (what they do and do not support)."""
    alpha = tree.attrs.get("alpha", 0.05)
    _, det = headline(tree)
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
        f"{num(n['a_sig'])} activation and {num(n['w_sig'])} weight transitions."
    )
    if np.isfinite(n["early_sig"]):
        out.append(
            f"{n['early_sig']:.0%} of the significant activation transitions ({det}) fall in "
            f"the first {n['share']:.0%} of training (uniform spread: {n['share']:.0%})."
        )
    for target, label in (("loss", "loss"), ("grad_norm", "gradient norm")):
        k, zero, med = n[f"{target}_n"], n[f"{target}_diff_zero"], n[f"{target}_median"]
        if not k:
            continue
        same = abs(med - STUDY_RHO[target]) <= RHO_TOLERANCE
        out.append(
            f"The study's rho with {label} ({STUDY_RHO[target]:+.2f}) is "
            f"{'reproduced' if same else 'not reproduced'} here (median {med:+.2f}); on first "
            f"differences the interval covers 0 in {zero} of {k} layers"
            + (", so the raw correlation reflects shared trends." if zero == k else ".")
        )
    if np.isfinite(n["coarse_found"]) and n["finest_sig"]:
        out.append(
            f"At intervals of 100 steps or more, on average {n['coarse_found']:.1f} of the "
            f"{num(n['finest_sig'])} significant finest-interval transitions are still found."
        )
    return out


def report_markdown(tree: xr.DataTree) -> str:
    """The report as markdown text."""
    table, numbers = claims_table(tree)
    metric, det = headline(tree)
    a = tree.attrs
    lines = [
        f"# dimlapse report: {a.get('run', '?')}",
        "",
        *setup_lines(tree),
        "",
        f"Store `{a.get('store', '?')}`, status `{a.get('run_status', '?')}`, captured every "
        f"`{a.get('run_every', '?')}` steps; analysed {a.get('analysed', '?')}. Claims use the "
        f"`{det}` detector (the calibrated detector with the best measured power) on `{metric}`; "
        "the study's z-score rule is shown beside it (it needs a full window of past samples, "
        "so it cannot fire at the very start of training, where the largest changes are). A "
        "verdict `no` means this run does not reproduce the claim.",
        "",
        "## The study's claims and this run",
        "",
        table,
        "",
        twonn_line(tree),
        "",
        "## Training dynamics",
        "",
        *training_lines(tree),
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
