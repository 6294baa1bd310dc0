"""Reports of ``make intervene``: the disrupted runs, and the deep-linear critical periods."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from ._deeplinear import Completion, train_completion


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
    lines = [
        f"# Intervention windows: {meta['kind']} on {meta['model']} ({meta['data']})",
        "",
        f"Baseline and disrupted runs share the recipe and seed {meta['seed']} "
        f"({meta['steps']} steps, captured every {meta['every']}); strength "
        f"{meta['strength']}{', layer ' + str(meta['layer']) if meta.get('layer') else ''}. "
        f"Baseline final held-out accuracy {runs[0]['final_accuracy']:.3f}; its step-to-step "
        f"spread over the last 10 % of captures is {noise:.4f} (the yardstick below: one seed).",
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
        verdict = "a lasting" if lasting else "no lasting"
        lines.append(
            f"- {s['window']}: {verdict} accuracy effect ({s['final_accuracy_change']:+.3f} at the "
            f"end against {s['immediate_accuracy_change']:+.3f} right after the window; "
            f"threshold 2 x {noise:.4f})."
        )
    lines += ["", "![intervention windows](intervene.png)", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


DEFICITS = (0, 1_000, 2_000, 5_000, 10_000, 20_000)


def write_deeplinear(out: Path, *, seed: int = 0, deficits=DEFICITS) -> Path:
    """The critical-period curve of depth-1 and depth-3 networks: figure, JSON and report."""
    out.mkdir(parents=True, exist_ok=True)
    setup = Completion(seed=seed)
    curve: dict[int, list[float]] = {}
    traces: dict[tuple[int, int], Any] = {}
    for depth in (1, 3):
        curve[depth] = []
        for t in deficits:
            r = train_completion(setup, depth=depth, deficit_steps=t, record_every=100)
            curve[depth].append(float(r["test_loss"]))
            traces[(depth, t)] = r
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), layout="constrained")
    for depth, marker in ((1, "s"), (3, "o")):
        axes[0].plot(deficits, curve[depth], marker=marker, label=f"depth {depth}")
    axes[0].set(xlabel="deficit length (steps)", ylabel="final test MSE", yscale="log")
    axes[0].set_title("matrix completion: final error after the deficit", fontsize=9)
    axes[0].legend(fontsize=8)
    cmap = plt.get_cmap("viridis")
    for i, t in enumerate(deficits):
        r = traces[(3, t)]
        axes[1].plot(r["steps"] - t, r["test_curve"], color=cmap(i / len(deficits)), label=t)
    axes[1].set(xlabel="steps after the deficit", ylabel="test MSE", yscale="log")
    axes[1].set_title("depth 3: test error, aligned at the deficit's end", fontsize=9)
    axes[1].legend(fontsize=7, title="deficit", title_fontsize=7)
    fig.savefig(out / "deeplinear.png", dpi=110)
    plt.close(fig)
    (out / "deeplinear.json").write_text(
        json.dumps({"setup": setup.__dict__, "deficits": list(deficits), "test_loss": curve})
    )
    rows = [
        f"| {t} | {a:.4f} | {b:.4f} |" for t, a, b in zip(deficits, curve[1], curve[3], strict=True)
    ]
    text = [
        "# Critical periods in deep linear networks (matrix completion)",
        "",
        f"Rank-{setup.rank} {setup.n}x{setup.n} target, {setup.n_deficit} observed entries "
        f"during the deficit, {setup.n_observed} after it, {setup.continue_steps} steps after "
        f"the deficit, gradient descent lr {setup.lr}, initial scale {setup.init_scale} "
        "(the protocol of Kleinman, Achille and Soatto, ICLR 2024, scaled down).",
        "",
        "| deficit steps | depth 1 final test MSE | depth 3 final test MSE |",
        "| --- | --- | --- |",
        *rows,
        "",
        "![critical periods](deeplinear.png)",
        "",
    ]
    (out / "report.md").write_text("\n".join(text))
    return out / "report.md"
