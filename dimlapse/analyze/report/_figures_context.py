"""Context figures: training dynamics (loss, gradient norm, accuracy, spikes), every metric."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ._axes import legend, plt, save
from ._tree import headline, node, significant_steps

SPIKE_COLOURS = {"loss": "tab:orange", "grad_norm": "tab:purple"}


def training(tree: xr.DataTree, path: Path) -> Path:
    """Loss, gradient norm and held-out accuracy, spikes shaded, transitions as ticks."""
    _, detector = headline(tree)
    tr = node(tree, "training") if "training" in tree.children else xr.Dataset()
    panels = [v for v in ("loss", "grad_norm", "test_accuracy") if v in tr.data_vars]
    fig, axes = plt.subplots(
        max(1, len(panels)),
        1,
        figsize=(10, 2.3 * max(1, len(panels))),
        squeeze=False,
        sharex=True,
        layout="constrained",
    )
    for ax, name in zip(axes[:, 0], panels, strict=False):
        y = tr[name]
        keep = np.isfinite(y.values)
        ax.plot(
            y["step"].values[keep],
            y.values[keep],
            lw=0.7,
            color="k",
            marker="." if name == "test_accuracy" else None,
            ms=2,
        )
        if name != "test_accuracy":
            ax.set_yscale("log")
        ax.set_ylabel(name.replace("_", " "), fontsize=8)
        for target in tr["target"].values if "target" in tr.coords else []:
            for a, b in zip(
                tr["spike_start"].sel(target=target).values,
                tr["spike_end"].sel(target=target).values,
                strict=True,
            ):
                if np.isfinite(a):
                    ax.axvspan(
                        a,
                        max(b, a + 1),
                        color=SPIKE_COLOURS.get(str(target), "0.5"),
                        alpha=0.25,
                        lw=0,
                        label=f"{target} spike",
                    )
    if panels:
        for kind, colour in (("activation", "tab:red"), ("weight", "tab:blue")):
            for s in significant_steps(tree, detector, kind):
                axes[0, 0].axvline(
                    s,
                    color=colour,
                    lw=0.5,
                    alpha=0.6,
                    ymax=0.15,
                    label=f"{kind} transition ({detector})",
                )
        handles: dict[str, Any] = {}
        for ax in axes[:, 0]:
            for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
                handles.setdefault(label, h)
        if handles:
            axes[0, 0].legend(list(handles.values()), list(handles), fontsize=7, ncol=4)
    axes[-1, 0].set_xlabel("step")
    fig.suptitle(f"{tree.attrs.get('run', '')}: training dynamics", fontsize=10)
    return save(fig, path)


def metrics(tree: xr.DataTree, path: Path) -> Path:
    """Small multiples: every metric (rows, TwoNN last) by space (columns), a line per layer."""
    dim = node(tree, "dimensionality")
    names = [str(m) for m in dim["metric"].values]
    kinds = [str(k) for k in dim["kind"].values]
    has_twonn = "twonn" in dim.data_vars
    rows = len(names) + has_twonn
    fig, axes = plt.subplots(
        rows,
        len(kinds),
        figsize=(4.8 * len(kinds), 1.9 * rows),
        squeeze=False,
        sharex=True,
        layout="constrained",
    )
    for c, kind in enumerate(kinds):
        for r, metric in enumerate(names):
            ax = axes[r, c]
            d = dim["dimensionality"].sel(kind=kind, metric=metric)
            for layer in d["layer"].values:
                y = d.sel(layer=layer)
                if np.isfinite(y.values).any():
                    ax.plot(y["step"], y, lw=0.7, label=str(layer))
            ax.set_title(f"{kind} · {metric}", fontsize=8)
            ax.tick_params(labelsize=7)
        if has_twonn:
            ax = axes[-1, c]
            if kind == "activation":
                tw = dim["twonn"]
                for layer in tw["layer"].values:
                    y = tw.sel(layer=layer)
                    if np.isfinite(y.values).any():
                        ax.plot(y["twonn_step"], y, lw=0.7, marker=".", ms=2, label=str(layer))
                ax.set_title("activation · TwoNN", fontsize=8)
            else:
                ax.set_visible(False)
    for c in range(len(kinds)):
        legend(axes[0, c], fontsize=6)
        axes[-1, c].set_xlabel("step")
    metric, _ = headline(tree)
    fig.suptitle(f"{tree.attrs.get('run', '')}: every metric (headline: {metric})", fontsize=10)
    return save(fig, path)
