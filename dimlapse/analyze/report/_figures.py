"""Figures of an analysis DataTree (PNG via matplotlib's Agg backend, no display needed)."""

from __future__ import annotations

import contextlib
import gc
import multiprocessing as mp
import os
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ._axes import legend, plt, save
from ._figures_context import metrics, training
from ._formation_plot import formation_figure
from ._tree import FIGURES, headline, kinds_in, node, phase_segments

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


def _formation(tree: xr.DataTree, path: Path) -> Path:
    metric, _ = headline(tree)
    dim = node(tree, "dimensionality")["dimensionality"]
    return formation_figure(node(tree, "formation"), dim, path, metric=metric)


#: Figure makers, in the order the figures are handed to workers: the costliest first
#: (measured CPU on a 21-snapshot MLP run: metrics 1.1 s, activation_vs_weight 0.6 s,
#: trajectories 0.4 s, the others 0.2-0.3 s), so that the workers finish together.
_MAKERS: dict[str, Callable[[xr.DataTree, Path], Path]] = {
    "metrics": metrics,
    "activation_vs_weight": activation_vs_weight,
    "trajectories": trajectories,
    "training": training,
    "sampling": sampling,
    "formation": _formation,
    "dimensionality_vs_loss": dimensionality_vs_loss,
}
#: The tree that forked figure workers render (set before the fork; never pickled).
_TREE: xr.DataTree | None = None


def _render(name: str, path: Path) -> Path:
    """One figure of the inherited :data:`_TREE` (runs in a forked worker)."""
    assert _TREE is not None
    return _MAKERS[name](_TREE, path)


def _workers(workers: int | None, n: int) -> int:
    if workers is not None and (
        isinstance(workers, bool) or not isinstance(workers, int) or workers < 1
    ):
        raise ValueError(
            f"Expected `workers` to be a positive int (1 draws the figures in this process) "
            f"or None (the usable cores), got {workers!r}"
        )
    if workers is None:
        from .._transitions import default_workers

        workers = default_workers()
    forkable = "fork" in mp.get_all_start_methods() and not mp.current_process().daemon
    return max(1, min(int(workers), n)) if forkable else 1


@contextlib.contextmanager
def figures_started(
    tree: xr.DataTree, out_dir: str | os.PathLike[str], *, workers: int | None = None
) -> Iterator[Callable[[], dict[str, Path]]]:
    """Start rendering every figure of `tree` into `out_dir`; yields a wait for name -> path.

    With more than one worker (default: the usable cores) the figures render in forked
    processes, one figure a task, while the caller's block runs (the analysis saves its tree
    meanwhile); matplotlib is imported before the fork, once. Each figure is drawn by the same
    code with the same inputs as in one process, so the PNG files are the same bytes. Forking
    is safe here: a worker only draws from the inherited in-memory tree with matplotlib's Agg
    backend (no threads, locks or I/O of the parent's). Where fork is unavailable (macOS,
    Windows) or in a daemonic process, figures render serially when waited for. The pool is
    shut down on leaving the block, also on error.
    """
    global _TREE
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = [n for n in _MAKERS if n != "formation" or "formation" in tree.children]
    paths = {n: out / f"{n}.png" for n in names}
    order = list(FIGURES) + (["formation"] if "formation" in names else [])
    w = _workers(workers, len(names))
    if w <= 1:
        yield lambda: {n: _MAKERS[n](tree, paths[n]) for n in order}
        return
    _TREE = tree
    try:
        with ProcessPoolExecutor(w, mp_context=mp.get_context("fork")) as pool:
            # objects that exist before the fork are left out of the workers' garbage
            # collections, which would otherwise write to (and so copy) every page holding one
            # (measured: about half the page faults)
            gc.freeze()
            try:
                with warnings.catch_warnings():  # Python >= 3.12 warns on forking with threads
                    warnings.filterwarnings("ignore", r".*multi-threaded.*fork", DeprecationWarning)
                    futures = {n: pool.submit(_render, n, paths[n]) for n in names}  # forks here
            finally:
                gc.unfreeze()
            _TREE = None
            yield lambda: {n: futures[n].result() for n in order}
    finally:
        _TREE = None


def render_figures(
    tree: xr.DataTree, out_dir: str | os.PathLike[str], *, workers: int | None = None
) -> dict[str, Path]:
    """Write every figure of `tree` as PNG into `out_dir`; returns name -> path.

    ``workers``: processes drawing figures in parallel (default: the usable cores; 1 draws
    them here, one after another). The files do not depend on it.
    """
    with figures_started(tree, out_dir, workers=workers) as wait:
        return wait()
