"""Reports of ``make intervene``: the disrupted runs, and the deep-linear critical periods."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from ._deeplinear import Completion


def _figure(runs: list[dict[str, Any]], summary: list[dict[str, Any]], path: Path) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8), layout="constrained")
    colors = plt.get_cmap("tab10")
    # the layer whose stable rank changed most, relative to the baseline
    rel: dict[str, float] = {}
    for s in summary:
        for k, v in s["stable_rank_relative_change"].items():
            rel[k] = max(rel.get(k, 0.0), abs(v) if np.isfinite(v) else 0.0)
    layer = max(rel, key=lambda k: rel[k]) if rel else None
    for i, r in enumerate(runs):
        style = {"color": "k", "lw": 1.6} if i == 0 else {"color": colors(i), "lw": 1.0}
        axes[0].plot(r["acc_step"], r["acc"], label=r["label"], **style)
        if layer is not None and layer in r["sr"]:
            axes[1].plot(r["sr_step"], r["sr"][layer], **style)
        if r["window"] is not None:
            for ax in axes[:2]:
                ax.axvspan(*r["window"], color=colors(i), alpha=0.12)
    axes[0].set(xlabel="step", ylabel="held-out accuracy", title="held-out accuracy")
    axes[0].legend(fontsize=7)
    axes[1].set(xlabel="step", ylabel="stable rank", title=f"activation stable rank: {layer}")
    x = np.arange(len(summary))
    axes[2].bar(x, [s["final_accuracy_change"] for s in summary], color="0.6", label="overall")
    for j, s in enumerate(summary):
        pcs = s["per_class_change"]
        axes[2].plot([j] * len(pcs), pcs, "o", ms=3, color="tab:red", alpha=0.6)
    axes[2].plot([], [], "o", ms=3, color="tab:red", label="per class")
    noise = summary[0]["accuracy_noise"] if summary else np.nan
    if np.isfinite(noise):
        axes[2].axhspan(
            -2 * noise, 2 * noise, color="0.85", zorder=0, label="baseline +-2 sd (tail)"
        )
    axes[2].axhline(0, color="k", lw=0.8)
    axes[2].set_xticks(x, [s["window"] for s in summary], fontsize=8)
    axes[2].set(ylabel="final accuracy - baseline", title="lasting effect at the end")
    axes[2].legend(fontsize=7)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(
    runs: list[dict[str, Any]], summary: list[dict[str, Any]], meta: dict[str, Any], out: Path
) -> Path:
    """``report.md`` and ``intervene.png`` for one kind of disruption over several windows."""
    _figure(runs, summary, out / "intervene.png")
    noise = summary[0]["accuracy_noise"] if summary else float("nan")
    snapshots = len(runs[0]["acc"])
    short = f" and {snapshots} evaluations per run (a short run)" if snapshots < 50 else ""
    lines = [
        f"# Intervention windows: {meta['kind']} on {meta['model']} ({meta['data']})",
        "",
        f"Baseline and disrupted runs share the recipe and seed {meta['seed']} "
        f"({meta['steps']} steps, captured every {meta['every']}); strength "
        f"{meta['strength']}{', layer ' + str(meta['layer']) if meta.get('layer') else ''}. "
        f"Baseline final held-out accuracy {runs[0]['final_accuracy']:.3f}; its step-to-step "
        f"spread over the last 10 % of captures is {noise:.4f} (the yardstick below: one seed).",
        "",
        f"**Warning: one seed{short}: not enough to conclude that an effect lasts. The yardstick "
        "is one run's own step-to-step spread, not the spread between seeds; repeat with other "
        "--seed values before reading a difference as an effect.**",
        "",
        "| window | right after the window | final accuracy | lasting change | worst class "
        "| largest lasting stable-rank change |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for s in summary:
        rel = s["stable_rank_relative_change"]
        big = max(rel, key=lambda k: abs(rel[k]) if np.isfinite(rel[k]) else -1) if rel else None
        sr = f"{big}: {100 * rel[big]:+.0f} %" if big is not None else "-"
        lines.append(
            f"| {s['window']} | {s['immediate_accuracy_change']:+.3f} | {s['final_accuracy']:.3f} "
            f"| {s['final_accuracy_change']:+.3f} | class {s['worst_class']}: "
            f"{s['worst_class_change']:+.3f} | {sr} |"
        )
    lines += ["", "## Reading", ""]
    for s in summary:
        lasting = abs(s["final_accuracy_change"]) > 2 * noise if np.isfinite(noise) else False
        verdict = "larger" if lasting else "not larger"
        lines.append(
            f"- {s['window']}: the final accuracy change is {verdict} than twice the baseline's "
            f"spread ({s['final_accuracy_change']:+.3f} at the end against "
            f"{s['immediate_accuracy_change']:+.3f} right after the window; threshold 2 x "
            f"{noise:.4f})" + ("; one seed: a candidate effect, not a finding." if lasting else ".")
        )
    lines += ["", "![intervention windows](intervene.png)", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


def deeplinear_figure(runs: list[dict[str, Any]], summary: dict[str, Any], path: Path) -> None:
    """Final test MSE per deficit and depth (seeds as dots), and the deepest net's test curves."""
    depths = sorted(summary["mse"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), layout="constrained")
    colors = plt.get_cmap("tab10")
    for i, depth in enumerate(depths):
        stats = summary["mse"][depth]
        ts = sorted(stats)
        axes[0].plot(
            ts, [stats[t]["mean"] for t in ts], "-", color=colors(i), label=f"depth {depth}"
        )
        for r in (r for r in runs if r["depth"] == depth):
            axes[0].plot(r["deficit_steps"], r["test_mse"], ".", color=colors(i), alpha=0.6)
    axes[0].set(xlabel="deficit length (steps)", ylabel="final test MSE", yscale="log")
    axes[0].set_title("final test error: seed means (line) and seeds (dots)", fontsize=9)
    axes[0].legend(fontsize=8)
    deep = depths[-1]
    deficits = sorted(summary["mse"][deep])
    cmap = plt.get_cmap("viridis")
    for r in (r for r in runs if r["depth"] == deep):
        i = deficits.index(r["deficit_steps"])
        label = f"{r['deficit_steps']}" if r["seed"] == runs[0]["seed"] else None
        x = np.asarray(r["steps"]) - r["deficit_steps"]
        axes[1].plot(x, r["test_curve"], color=cmap(i / max(1, len(deficits))), lw=0.9, label=label)
    axes[1].set(xlabel="steps after the deficit", ylabel="test MSE (final target)", yscale="log")
    axes[1].set_title(f"depth {deep}: test error aligned at the deficit's end", fontsize=9)
    axes[1].legend(fontsize=7, title="deficit steps", title_fontsize=7)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _spread(s: dict[str, float]) -> str:
    sd = f"sd {s['sd']:.3g}, " if np.isfinite(s["sd"]) else ""
    return f"{s['mean']:.4g} ({sd}range {s['min']:.4g} to {s['max']:.4g})"


def _gap_reading(depth: int, t: int, g: dict[str, Any], effect: float, none: float) -> str:
    if g["n"] < 3:
        return (
            f"- depth {depth}, {t} deficit steps: gap {_spread(g)} over {g['n']} seed(s): not "
            "enough seeds to conclude (use --seeds 3 or more)."
        )
    if g["mean"] > effect and g["min"] > 0:
        verdict = f"a lasting critical-period effect (mean gap above {effect}, every seed > 0)"
    elif abs(g["mean"]) < none and max(abs(g["min"]), abs(g["max"])) < none:
        verdict = f"no lasting effect (every seed's gap within +-{none})"
    else:
        verdict = f"neither a clear effect (> {effect}) nor its absence (< {none})"
    return f"- depth {depth}, {t} deficit steps: gap {_spread(g)} over {g['n']} seeds: {verdict}."


def deeplinear_text(summary: dict[str, Any], setup: Completion) -> str:
    """``report.md`` of the deep-linear critical period: MSE and paired gaps over seeds."""
    from ._critical import GAP_EFFECT, GAP_NONE

    if setup.deficit_rank is not None:
        deficit = (
            f"a task switch: first the same {setup.n_observed} entries of a different "
            f"rank-{setup.deficit_rank} target"
        )
    else:
        seen = setup.n_observed if setup.n_deficit is None else setup.n_deficit
        deficit = f"fewer observations: {seen} of the {setup.n_observed} entries"
    lines = [
        "# Critical periods in deep linear networks (matrix completion)",
        "",
        f"Final task: a rank-{setup.rank} {setup.n}x{setup.n} target (RMS entry 1), "
        f"{setup.n_observed} observed entries; deficit: {deficit}; then {setup.continue_steps} "
        f"steps on the final task; full-batch gradient descent, lr {setup.lr}, Gaussian "
        f"initialisation of end-to-end scale {setup.init_scale}. The published protocol of "
        "Kleinman, Achille and Soatto (ICLR 2024) is the default: rank 10 then rank 5, "
        "100x100, 2,000 entries, lr 0.2, scale 1e-3, 30,000 steps after the deficit.",
        "Test MSE: over all entries of the final target. Gap: MSE after the deficit minus MSE "
        "without one, per seed (same target, entries and initialisation), then over seeds.",
        "",
        "| depth | deficit steps | final test MSE: mean (sd, range) | gap: mean (sd, range) "
        "| seeds |",
        "| --- | --- | --- | --- | --- |",
    ]
    for depth in sorted(summary["mse"]):
        for t in sorted(summary["mse"][depth]):
            s = summary["mse"][depth][t]
            g = summary["gap"].get(depth, {}).get(t)
            gap = _spread(g) if g else "-"
            lines.append(f"| {depth} | {t} | {_spread(s)} | {gap} | {s['n']} |")
    lines += ["", "## Reading", ""]
    readings = [
        _gap_reading(depth, t, g, GAP_EFFECT, GAP_NONE)
        for depth in sorted(summary["gap"])
        for t, g in sorted(summary["gap"][depth].items())
    ]
    lines += readings or ["- no deficit of 0 steps to compare with: no gaps (add 0 to --deficits)."]
    lines += [
        "",
        f"Thresholds of the published reading: a lasting effect is a mean gap above "
        f"{GAP_EFFECT} with every seed's gap positive; none is every gap within +-{GAP_NONE}.",
        "",
        "![critical periods](deeplinear.png)",
        "",
    ]
    return "\n".join(lines)
