"""``study.md`` and ``study.png``: each claim per architecture, mean over seeds, 95 % interval."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from ._claims import CLAIM_AXIS, CLAIMS


def _cell(v: list[float]) -> str:
    mean, lo, hi, n = v
    if not np.isfinite(mean):
        return "n/a"
    fmt = "{:.0f}" if abs(mean) >= 100 else "{:.3g}"
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return f"{fmt.format(mean)} (n={n})"
    return f"{fmt.format(mean)} [{fmt.format(lo)}, {fmt.format(hi)}] (n={n})"


def _figure(runs: list[dict], summary: dict, path: Path) -> None:
    models = list(dict.fromkeys(r["model"] for r in runs))
    colors = plt.get_cmap("tab10")
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8), layout="constrained")
    for i, m in enumerate(models):
        for r in (r for r in runs if r["model"] == m):
            axes[0].plot(r["early_steps"], r["early_curve"], color=colors(i), lw=0.9, alpha=0.8)
        axes[0].plot([], [], color=colors(i), label=m)
    axes[0].axhline(1, color="0.5", lw=0.7)
    axes[0].set(xlabel="step (first 10 % of training)", ylabel="stable rank / step 0")
    axes[0].set_title("early expansion: activation stable rank, layer mean, each seed", fontsize=9)
    axes[0].legend(fontsize=7)
    axes[1].set_ylabel("relative change or share")
    axes[2].set_ylabel("share of training (step / total)")
    for ax, claims in (
        (axes[1], ("early_change", "phase_order_share", "early_sig")),
        (axes[2], ("formation_50", "formation_90", "early_min_at")),
    ):
        width = 0.8 / len(models)
        for i, m in enumerate(models):
            for j, c in enumerate(claims):
                mean, lo, hi, _ = summary[c][m]
                x = j + (i - (len(models) - 1) / 2) * width
                err = [[mean - lo], [hi - mean]] if np.isfinite(lo) else None
                ax.errorbar(x, mean, yerr=err, fmt="o", color=colors(i), ms=4, capsize=2)
                per_seed = [r["values"].get(c, np.nan) for r in runs if r["model"] == m]
                ax.plot([x] * len(per_seed), per_seed, ".", color=colors(i), ms=3, alpha=0.5)
        ax.set_xticks(range(len(claims)), [CLAIM_AXIS[c] for c in claims], fontsize=7)
        ax.axhline(0, color="0.5", lw=0.7)
        ax.set_title("mean over seeds, 95 % bootstrap interval (dots: seeds)", fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_study(runs: list[dict], summary: dict, meta: dict[str, Any], out: Path) -> Path:
    """The comparison report: one row per claim, one column per architecture."""
    _figure(runs, summary, out / "study.png")
    models = list(dict.fromkeys(r["model"] for r in runs))
    data = {m: next(r["data"] for r in runs if r["model"] == m) for m in models}
    head = " | ".join(f"{m} ({data[m]})" for m in models)
    lines = ["# Study: architectures over seeds", ""]
    lines += [f"**Warning: {w}**" for w in meta.get("warnings", [])]
    lines += [
        "",
        f"{meta['seeds']} seed(s) per architecture, {meta['steps']} steps each "
        f"(capture every {meta['every'] or 5}); each cell: mean over seeds "
        "[95 % bootstrap percentile interval, seeds resampled; it stays within the seeds' "
        "range, so within what the quantity allows] (n = seeds where the number is defined). "
        "Per-run analyses: stable rank, the default detectors; formation from the probe "
        "targets.",
        "",
        f"| claim | {head} |",
        "| --- | " + " | ".join("---" for _ in models) + " |",
    ]
    for key, label in CLAIMS.items():
        lines.append(f"| {label} | " + " | ".join(_cell(summary[key][m]) for m in models) + " |")
    lines += ["", "![study](study.png)", ""]
    path = out / "study.md"
    path.write_text("\n".join(lines))
    return path
