"""Episodes: events that coincide across series, as one unit (the ONE adapter to transitions).

The transitions API's ``episodes`` (contract: a Dataset with dim ``episode`` holding ``start``,
``end``, ``step``, ``n_series``, ``n_layers``, ``kinds``, ``context``, and per event an episode
id) is used when it exists; until then a single-linkage grouping of events closer than `window`
steps stands in, with the same fields.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr


def _events(trans: xr.Dataset) -> xr.DataArray:
    """Boolean (..., transition): the events claims count (notable, else significant)."""
    sig = trans["significant"].fillna(False).astype(bool) & trans["step"].notnull()
    if "notable" in trans:
        sig = sig & trans["notable"].fillna(False).astype(bool)
    return sig


def fallback_episodes(
    trans: xr.Dataset, *, window: float, context: dict[str, list[tuple[float, float]]]
) -> xr.Dataset:
    """Single-linkage episodes: events (any series) closer than `window` steps join one.

    Events sorted by step chain into one episode while each is within `window` steps of the
    previous one (a run of loss spikes closer than that is one long episode). An episode's
    ``step`` is its first event's; its ``context`` the first label whose window overlaps it.
    Returns the episode fields of the contract and ``event_episode`` (shape of
    ``trans['step']``, -1 where no event).
    """
    ev = _events(trans)
    steps = trans["step"].where(ev)
    flat = steps.values.ravel()  # (series x transition,) NaN where no event
    idx = np.flatnonzero(np.isfinite(flat))
    order = idx[np.argsort(flat[idx], kind="stable")]
    ids = np.full(flat.shape, -1, dtype=np.int64)
    groups: list[list[int]] = []
    for i in order:
        if groups and flat[i] - flat[groups[-1][-1]] <= window:
            groups[-1].append(i)
        else:
            groups.append([i])
    layer_of = (
        xr.broadcast(steps, steps["layer"])[1].values.ravel() if "layer" in steps.dims else None
    )
    kind_of = xr.broadcast(steps, steps["kind"])[1].values.ravel() if "kind" in steps.dims else None
    rows = []
    for e, g in enumerate(groups):
        ids[g] = e
        s = flat[g]
        a, b = float(s.min()), float(s.max())
        label = next(
            (k for k, spans in context.items() if any(lo <= b and a <= hi for lo, hi in spans)),
            "",
        )
        rows.append(
            (
                a,
                b,
                a,
                len(g),
                len(set(layer_of[g])) if layer_of is not None else 1,
                ",".join(sorted(set(map(str, kind_of[g])))) if kind_of is not None else "",
                label,
            )
        )
    cols: list[tuple[Any, ...]] = list(zip(*rows, strict=True)) if rows else [()] * 7
    names = ("start", "end", "step", "n_series", "n_layers", "kinds", "context")
    out = xr.Dataset(
        {
            n: ("episode", np.asarray(c, dtype=object if n in ("kinds", "context") else float))
            for n, c in zip(names, cols, strict=True)
        }
    )
    out["event_episode"] = steps.copy(data=ids.reshape(steps.shape))
    return out


def episode_table(
    trans: xr.Dataset, *, window: float, context: dict[str, list[tuple[float, float]]]
) -> tuple[xr.Dataset, xr.DataArray, str]:
    """The one adapter to the transitions API's episodes (:func:`dimlapse.analyze.episodes`).

    Returns the episode Dataset (dim ``episode``: ``start``, ``end``, ``step``, ``n_layers``,
    ``context``), the per-event episode id aligned with ``trans['step']`` (-1: not an event)
    and the source (``"transitions.episodes"``).
    """
    from ..._transitions import episodes

    if "notable" not in trans:  # an analysis written before notable events: significant ones
        trans = trans.assign(notable=trans["significant"])
    for name, fill in (("onset", trans["step"]), ("duration", xr.zeros_like(trans["step"]))):
        if name not in trans:  # instantaneous events
            trans = trans.assign({name: fill})
    ep, labelled = episodes(trans, window=window, context=context)  # (episodes, trans + ids)
    return ep, labelled["episode"].fillna(-1).astype(np.int64), "transitions.episodes"
