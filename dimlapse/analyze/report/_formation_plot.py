"""Figure of the formation job beside the dimensionality: does formation coincide with expansion?"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import xarray as xr

from ._axes import plt, save


def formation_figure(
    form: xr.Dataset,
    dim: xr.DataArray | None,
    path: str | os.PathLike[str],
    *,
    metric: str = "stable_rank",
    title: str = "",
) -> Path:
    """Per layer: decodability (left axis) and activation ``metric`` (right axis) over steps.

    Parameters
    ----------
    form : xarray.Dataset
        A computed :func:`formation` result (``decodability``, ``formation_step``, ``chance``).
    dim : xarray.DataArray or None
        ``dimensionality`` (kind, layer, step, metric) of the same run; None draws decodability
        only.
    path : str or path
        PNG file to write.

    Returns
    -------
    Path
        The written file. Formation steps are dashed vertical lines (one per fraction).
    """
    layers = [str(x) for x in form["layer"].values]
    fig, axes = plt.subplots(
        1, len(layers), figsize=(3.6 * len(layers), 3.2), squeeze=False, layout="constrained"
    )
    for ax, layer in zip(axes[0], layers, strict=True):
        dec = form["decodability"].sel(layer=layer)
        ax.plot(dec["step"], dec, color="tab:blue", lw=1.2)
        ax.axhline(float(form["chance"]), color="0.6", lw=0.8, ls=":")
        times = form["formation_step"].sel(layer=layer).values
        for f, t in zip(form["fraction"].values, times, strict=True):
            if np.isfinite(t):
                ax.axvline(t, color="tab:blue", ls="--", lw=0.8, alpha=0.4 + 0.6 * float(f))
        ax.set_xlabel("step")
        ax.set_title(layer, fontsize=9)
        if dim is not None and layer in dim["layer"].values:
            tw = ax.twinx()
            sr = dim.sel(kind="activation", layer=layer, metric=metric)
            tw.plot(sr["step"], sr, color="tab:orange", lw=1.0)
            tw.tick_params(axis="y", colors="tab:orange", labelsize=7)
    axes[0, 0].set_ylabel("probe decodability (CV accuracy)", color="tab:blue")
    fig.suptitle(
        title or f"decodability (blue; dashed: formation steps) and {metric} (orange)",
        fontsize=9,
    )
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    return save(fig, out)
