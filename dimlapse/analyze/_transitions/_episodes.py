"""Episodes: notable events that coincide across series, labelled with their training context.

A loss spike moves every layer's dimensionality at once; counted per series it is dozens of
events, read as what happened in training it is one. ``episodes`` groups the notable events of
one detector by time: events sorted by centre (``step``) join the current episode while their
centre is at most ``window`` steps after the centre of its first event (complete linkage: an
episode spans at most ``window`` steps of centres, however dense the events). The default
window is ``EPISODE_SAMPLES`` capture intervals (5, the shortest segment PELT resolves: events
closer than that cannot be told apart in time).
An episode overlapping a caller's context window (loss or gradient spike, accuracy jump,
learning-rate change), widened by ``window``, carries its label.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import xarray as xr

from ._registry import DEFAULT_DETECTOR

EPISODE_SAMPLES = 5  # default window, in capture intervals
_DTYPES = {"kinds": str, "context": str, "n_events": np.int64, "n_series": np.int64,
           "n_layers": np.int64}  # fmt: skip


def _check_context(context: object) -> dict[str, list[tuple[float, float]]]:
    if context is None:
        return {}
    if not isinstance(context, Mapping):
        raise ValueError(
            "Expected `context` to be a mapping label -> list of (start, end) step windows, "
            f"got {context!r}"
        )
    out: dict[str, list[tuple[float, float]]] = {}
    for label, spans in context.items():
        try:
            pairs = [(float(a), float(b)) for a, b in spans]
        except (TypeError, ValueError):
            raise ValueError(
                f"Expected `context[{label!r}]` to be a list of (start, end) steps, got {spans!r}"
            ) from None
        if any(b < a for a, b in pairs):
            raise ValueError(
                f"Expected `context[{label!r}]` windows with start <= end, got {pairs}"
            )
        out[str(label)] = pairs
    return out


def _one_detector(trans: xr.Dataset, detector: str | None) -> tuple[xr.Dataset, str]:
    if "detector" not in trans.dims:
        name = str(trans["detector"].item()) if "detector" in trans.coords else ""
        if detector is not None and detector != name:
            raise ValueError(
                f"Expected `detector` to be {name!r} (the one in `trans`), got {detector!r}"
            )
        return trans, name
    have = [str(d) for d in trans["detector"].values]
    chosen = (
        detector if detector is not None else DEFAULT_DETECTOR if DEFAULT_DETECTOR in have else None
    )
    if chosen is None or chosen not in have:
        raise ValueError(f"Expected `detector` to be one of {have} in `trans`, got {detector!r}")
    return trans.sel(detector=chosen), chosen


def episodes(
    trans: xr.Dataset,
    *,
    window: float | None = None,
    context: Mapping[str, Sequence[tuple[float, float]]] | None = None,
    detector: str | None = None,
    min_series: int = 1,
) -> tuple[xr.Dataset, xr.Dataset]:
    """Group the notable events of ``trans`` into episodes across series.

    Parameters
    ----------
    trans : xr.Dataset
        A result of :func:`transitions` (with ``notable``, ``onset``, ``duration``, ``step``).
    window : float, optional
        Steps by which events may lie apart and still coincide (default ``EPISODE_SAMPLES``
        times the capture interval, ``trans.attrs["step_spacing"]``).
    context : mapping label -> list of (start, end) steps, optional
        Training events (e.g. ``{"loss spike": [(500, 520)], "accuracy jump": [(1100, 1800)]}``);
        an episode overlapping a window (widened by ``window``) is labelled with it.
    detector : str, optional
        Which detector's events when ``trans`` has a ``detector`` dim (default: the default
        detector).
    min_series : int
        Episodes with fewer distinct series are dropped (their events get -1).

    Returns
    -------
    (episodes, labelled) : (xr.Dataset, xr.Dataset)
        ``episodes`` with dim ``episode``: ``start``, ``end`` (first onset, last end, steps),
        ``step`` (median event centre), ``n_events``, ``n_series``, ``n_layers`` (distinct
        ``layer`` coordinate values, else series), ``kinds`` (distinct ``kind`` values,
        comma-joined, "" without a ``kind`` dim), ``context`` (labels, comma-joined, or "").
        ``labelled`` is ``trans`` with a per-event int ``episode`` (-1: in none; other
        detectors -1 too).

    Examples
    --------
    >>> import numpy as np
    >>> from dimlapse.analyze import transitions
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((3, 400)) * 0.01 + 1.0
    >>> x[:, 200:] += 0.5
    >>> ep, labelled = episodes(transitions(x), context={"loss spike": [(195, 205)]})
    >>> ep.n_series.values.tolist(), ep.context.values.tolist()
    ([3], ['loss spike'])
    """
    if not isinstance(trans, xr.Dataset) or "notable" not in trans:
        raise ValueError(
            "Expected `trans` to be a Dataset from `transitions` (with `notable`), got "
            f"{type(trans).__name__}"
        )
    ctx = _check_context(context)
    if isinstance(min_series, bool) or not isinstance(min_series, int) or min_series < 1:
        raise ValueError(f"Expected `min_series` to be a positive int, got {min_series!r}")
    sub, name = _one_detector(trans, detector)
    if window is None:
        window = EPISODE_SAMPLES * float(trans.attrs.get("step_spacing", 1.0))
    if isinstance(window, bool) or not isinstance(window, int | float) or not window >= 0:
        raise ValueError(f"Expected `window` to be a number of steps >= 0, got {window!r}")
    other = [d for d in sub["notable"].dims if d != "transition"]
    stacked = sub.stack(series=other) if other else sub.expand_dims("series")
    stacked = stacked.transpose("series", "transition")
    mask = stacked["notable"].values  # (series, transition)
    si, ti = np.nonzero(mask)
    onset = stacked["onset"].values[si, ti]
    end = onset + stacked["duration"].values[si, ti]
    centre = stacked["step"].values[si, ti]
    # complete linkage on the centres: an episode holds the events whose centre lies within
    # `window` steps of its first; chaining (single linkage) would merge a run whose events
    # are dense in time into one episode spanning all of it
    order = np.argsort(centre, kind="stable")
    label = np.full(si.size, -1, dtype=np.int64)
    groups: list[np.ndarray] = []
    cur: list[int] = []
    first = -np.inf
    for k in order:
        if cur and centre[k] > first + window:
            groups.append(np.array(cur))
            cur = []
        if not cur:
            first = centre[k]
        cur.append(int(k))
    if cur:
        groups.append(np.array(cur))
    groups = [g for g in groups if np.unique(si[g]).size >= min_series]

    def coord(name_: str, g: np.ndarray) -> list[str]:
        if name_ not in stacked.coords or name_ not in other:
            return []
        return sorted({str(v) for v in stacked[name_].values[si[g]]})

    names = ("start", "end", "step", "n_events", "n_series", "n_layers", "kinds", "context")
    rows: dict[str, list] = {k: [] for k in names}
    for e, g in enumerate(groups):
        label[g] = e
        a, b = float(onset[g].min()), float(end[g].max())
        layers = coord("layer", g)
        rows["start"].append(a)
        rows["end"].append(b)
        rows["step"].append(float(np.median(centre[g])))
        rows["n_events"].append(g.size)
        rows["n_series"].append(int(np.unique(si[g]).size))
        rows["n_layers"].append(len(layers) if layers else int(np.unique(si[g]).size))
        rows["kinds"].append(",".join(coord("kind", g)))
        hits = [lab for lab, spans in ctx.items()
                if any(s0 <= b + window and s1 >= a - window for s0, s1 in spans)]  # fmt: skip
        rows["context"].append(",".join(hits))
    units = {"start": "step", "end": "step", "step": "step"}
    long = {
        "start": "first onset of the episode's events", "end": "last end of its events",
        "step": "median centre of its events", "n_events": "notable events in it",
        "n_series": "distinct series", "n_layers": "distinct layers",
        "kinds": "kinds (weight/activation) among its series", "context": "training context",
    }  # fmt: skip
    ep = xr.Dataset(
        {k: ("episode", np.asarray(v, dtype=_DTYPES.get(k, np.float64))) for k, v in rows.items()},
        coords={"episode": np.arange(len(groups))},
    )
    for k in rows:
        ep[k].attrs.update(long_name=long[k], units=units.get(k, "1"))
    ep.attrs.update(
        detector=name, window=float(window), min_series=min_series,
        definition="notable events whose centres lie within `window` steps of the episode's "
        "first centre (complete linkage), across series; context windows widened by it",
    )  # fmt: skip
    ep_grid = np.full(mask.shape, -1, dtype=np.int64)
    ep_grid[si, ti] = label
    per = stacked["notable"].copy(data=ep_grid)
    per = per.unstack("series") if other else per.isel(series=0, drop=True)
    per = per.transpose(*sub["notable"].dims)
    if "detector" in trans.dims:
        per = per.expand_dims(detector=trans["detector"].values).copy()
        per = per.where(per["detector"] == name, -1).astype(np.int64)
        per = per.transpose(*trans["notable"].dims)
    per.attrs = {"long_name": "episode of a notable event (-1: none)", "units": "1"}
    return ep, trans.assign(episode=per.drop_vars([c for c in per.coords if c not in trans.coords]))


__all__ = ["EPISODE_SAMPLES", "episodes"]
