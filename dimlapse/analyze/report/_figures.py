"""Figures of an analysis DataTree (PNG via matplotlib's Agg backend, no display needed)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ._axes import legend, plt, save
from ._figures_context import metrics, training
from ._tree import headline, kinds_in, node, phase_segments

PHASE_COLOURS = {
    "collapse": "tab:red",
    "expansion": "tab:green",
    "stabilisation": "0.6",
    "unresolved": "tab:olive",
}
DETECTOR_MARKERS = {"zscore": "v", "meanshift": "o", "pelt": "s"}


def _layers(tree: xr.DataTree, kind: str, metric: str) -> list[str]:
    """Layers with a finite trajectory of `kind`."""
    dim = node(tree, "dimensionality")["dimensionality"].sel(kind=kind, metric=metric)
    return [str(x) for x in dim["layer"].values if np.isfinite(dim.sel(layer=x).values).any()]


def trajectories(tree: xr.DataTree, path: Path) -> Path:
    """Per layer and kind: the trajectory, its phases and the significant transitions."""
    metric, _ = headline(tree)
    kinds = kinds_in(tree)
    layers = sorted({x for k in kinds for x in _layers(tree, k, metric)})
    fig, axes = plt.subplots(
        max(1, len(layers)),
        len(kinds),
        figsize=(5.5 * len(kinds), 2.4 * max(1, len(layers))),
        squeeze=False,
        sharex=True,
        layout="constrained",
    )
    dim = node(tree, "dimensionality")["dimensionality"]
    ph, tr = node(tree, "phases"), node(tree, "transitions")
    for r, layer in enumerate(layers):
        for c, kind in enumerate(kinds):
            ax = axes[r, c]
            sel = {"kind": kind, "layer": layer, "metric": metric}
            y = dim.sel(sel)
            if not np.isfinite(y.values).any():
                ax.set_visible(False)
                continue
            ax.plot(y["step"], y, lw=0.8, color="k", label=metric)
            p = ph.sel(sel)
            ax.plot(p["step"], p["fitted"], lw=1.0, ls="--", color="tab:blue", label="fit")
            for a, b, name in phase_segments(p):  # every segment, shaded by its class
                ax.axvspan(a, b, color=PHASE_COLOURS[name], alpha=0.12, lw=0, label=name)
            t = tr.sel(sel)
            for det in [str(d) for d in t["detector"].values]:
                td = t.sel(detector=det)
                sig = td["significant"].fillna(False).astype(bool) & td["step"].notnull()
                if "notable" in td:
                    sig = sig & td["notable"].fillna(False).astype(bool)
                steps = td["step"].values[sig.values]
                if steps.size:
                    vals = np.interp(steps, y["step"].values, y.values)
                    ax.scatter(
                        steps,
                        vals,
                        marker=DETECTOR_MARKERS.get(det, "x"),
                        s=22,
                        facecolors="none",
                        edgecolors="tab:purple",
                        label=f"{det} ({'notable' if 'notable' in td else 'significant'})",
                    )
            ax.set_title(f"{kind} · {layer}", fontsize=9)
            ax.set_ylabel(metric, fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("step")
    handles: dict[str, Any] = {}
    for ax in axes.ravel():
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, h)
    if handles:
        fig.legend(
            list(handles.values()),
            list(handles.keys()),
            loc="outside lower center",
            ncol=6,
            fontsize=7,
        )
    fig.suptitle(f"{tree.attrs.get('run', '')}: {metric}, phases and significant transitions")
    return save(fig, path)


def dimensionality_vs_loss(tree: xr.DataTree, path: Path) -> Path:
    """Activation dimensionality beside the training loss, over steps and as a scatter."""
    metric, _ = headline(tree)
    cp = node(tree, "coupling")
    loss = cp["aligned"].sel(target="loss") if "loss" in cp["target"].values else None
    kind = "activation" if "activation" in kinds_in(tree) else kinds_in(tree)[0]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
    dim = node(tree, "dimensionality")["dimensionality"].sel(kind=kind, metric=metric)
    for layer in _layers(tree, kind, metric):
        y = dim.sel(layer=layer)
        ax.plot(y["step"], y, lw=0.9, label=f"{layer}")
        if loss is not None:
            rho = cp["rho"].sel(kind=kind, layer=layer, metric=metric, target="loss")
            bx.scatter(
                loss,
                y,
                s=3,
                alpha=0.5,
                label=f"{layer}: rho {rho.sel(transform='raw').item():+.2f} raw, "
                f"{rho.sel(transform='diff').item():+.2f} diff",
            )
    ax.set_xlabel("step")
    ax.set_ylabel(f"{kind} {metric}")
    legend(ax, fontsize=7)
    if loss is not None:
        twin = ax.twinx()
        twin.plot(loss["step"], loss, color="k", lw=0.8, ls=":", label="loss")
        twin.set_ylabel("loss (interval mean)")
        bx.set_xlabel("training loss")
        bx.set_ylabel(metric)
        legend(bx, fontsize=7)
    ax.set_title("dimensionality and loss over training", fontsize=9)
    bx.set_title("dimensionality against loss (Spearman rho)", fontsize=9)
    return save(fig, path)


def sampling(tree: xr.DataTree, path: Path) -> Path:
    """Transition counts against sampling interval: raw, significant, null, finest found."""
    metric, _ = headline(tree)
    sm = node(tree, "sampling")
    kind = "activation" if "activation" in kinds_in(tree) else kinds_in(tree)[0]
    dets = [str(d) for d in sm["detector"].values]
    fig, axes = plt.subplots(
        1, len(dets), figsize=(4.2 * len(dets), 3.6), squeeze=False, layout="constrained"
    )
    x = sm["effective_interval"].values
    for ax, det in zip(axes[0], dets, strict=True):
        s = sm.sel(kind=kind, metric=metric, detector=det).sum("layer", min_count=1)
        ax.plot(x, s["n_raw"], "o-", label="raw")
        ax.plot(x, s["n_null"], "o--", color="0.5", label="null surrogates")
        ax.plot(x, s["n_significant"], "s-", color="tab:red", label="significant")
        ax.plot(x, s["n_base_found"], "^:", color="tab:green", label="finest significant found")
        ax.set_xscale("log")
        ax.set_xlabel("sampling interval (steps)")
        ax.set_title(f"{det}: {kind} {metric}, all layers", fontsize=9)
    axes[0, 0].set_ylabel("transitions")
    legend(axes[0, 0], fontsize=7)
    return save(fig, path)


def activation_vs_weight(tree: xr.DataTree, path: Path) -> Path:
    """Normalised activation and weight trajectories per layer, and their lagged xcorr."""
    metric, _ = headline(tree)
    cmp = node(tree, "compare")
    norm = cmp["normalised"].sel(metric=metric)
    layers = [str(x) for x in norm["layer"].values]
    fig, axes = plt.subplots(
        len(layers), 2, figsize=(11, 2.4 * len(layers)), squeeze=False, layout="constrained"
    )
    for r, layer in enumerate(layers):
        ax, bx = axes[r]
        for kind in [str(k) for k in norm["kind"].values]:
            y = norm.sel(kind=kind, layer=layer)
            if np.isfinite(y.values).any():
                ax.plot(y["step"], y, lw=0.9, label=kind)
        ax.set_title(f"{layer}: {metric}, min-max normalised", fontsize=9)
        legend(ax, fontsize=7)
        if "xcorr" in cmp:
            xc = cmp["xcorr"].sel(layer=layer, metric=metric)
            bx.plot(xc["lag"], xc, lw=0.9)
            bx.axvline(0, color="0.7", lw=0.6)
            bx.set_title(
                f"{layer}: rank xcorr of differences (+lag: activation follows)", fontsize=9
            )
        else:
            bx.set_visible(False)
    axes[-1, 0].set_xlabel("step")
    axes[-1, 1].set_xlabel("lag (samples)")
    return save(fig, path)


def render_figures(tree: xr.DataTree, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write every figure of `tree` as PNG into `out_dir`; returns name -> path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    makers = {
        "training": training,
        "metrics": metrics,
        "trajectories": trajectories,
        "dimensionality_vs_loss": dimensionality_vs_loss,
        "sampling": sampling,
        "activation_vs_weight": activation_vs_weight,
    }
    paths = {name: make(tree, out / f"{name}.png") for name, make in makers.items()}
    if "formation" in tree.children:
        from ._formation_plot import formation_figure

        metric, _ = headline(tree)
        dim = node(tree, "dimensionality")["dimensionality"]
        paths["formation"] = formation_figure(
            node(tree, "formation"), dim, out / "formation.png", metric=metric
        )
    return paths
