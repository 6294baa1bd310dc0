"""The claims job: every study claim per space, tested, with the episodes it counted."""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from ..._provenance import params_attrs
from ._episodes import episode_table
from ._phases import phases_claim
from ._verdicts import (
    CLAIMS,
    EPISODE_FIELDS,
    EPISODE_SAMPLES,
    MIN_CLAIM_SNAPSHOTS,
    SPACES,
    STUDY,
    VERDICTS,
    _row,
    counts_claim,
    coupling_claim,
    sampling_claim,
    timing_claim,
)

_TEXT = ("statistic_name", "test", "verdict", "detail")


def claims(
    trans: xr.Dataset,
    *,
    phases: xr.Dataset,
    coupling: xr.Dataset,
    sampling: xr.Dataset,
    metric: str,
    detector: str,
    total_steps: float,
    start_step: float = 0.0,
    n_snapshots: int,
    every: float | None = None,
    context: dict[str, list[tuple[float, float]]] | None = None,
    share: float = 0.25,
    alpha: float = 0.05,
    window: float | None = None,
) -> xr.Dataset:
    """Every study claim, per space, as a test with a verdict; and the episodes it counted.

    Parameters
    ----------
    trans : xr.Dataset
        The transitions job (kind, layer, metric, detector, transition).
    phases, coupling, sampling : xr.Dataset
        The phases, coupling and sampling jobs of the same run.
    metric, detector : str
        Headline metric and detector the claims are judged on.
    total_steps, start_step : float
        Last and first step of the run (the timing claim's span).
    n_snapshots : int
        Snapshots of the run; below ``MIN_CLAIM_SNAPSHOTS`` every verdict is inconclusive.
    every : float, optional
        Capture interval (default: the median spacing of ``phases.step``).
    context : dict, optional
        Training-context windows, label -> [(start, end)] (:func:`context_windows`).
    share, alpha : float
        Early share of training for the timing claim; level of every test.
    window : float, optional
        Episode window in steps; default ``EPISODE_SAMPLES`` capture intervals.

    Returns
    -------
    xr.Dataset
        Dims (claim, space): ``statistic``, ``statistic_name``, ``test``, ``p_value``,
        ``low``/``high`` (interval), ``n`` (episodes, or layers for phases and coupling),
        ``verdict`` (``VERDICTS``), ``detail``, ``study``; dim ``episode``: the episodes of
        each space (``episode_space``, ``episode_start``, ``episode_end``, ``episode_step``,
        ``episode_n_layers``, ``episode_context``). Attrs: every parameter, the episode source.
    """
    if every is None:
        every = float(np.median(np.diff(phases["step"].values)))
    window = EPISODE_SAMPLES * float(every) if window is None else float(window)
    context = context or {}
    cutoff = float(start_step + share * (total_steps - start_step))
    t = trans.sel(detector=detector, metric=metric)
    rows: dict[tuple[str, str], dict] = {}
    episodes, source = [], "none"
    n_ep = {}
    for space in SPACES:
        if space not in t["kind"].values:
            n_ep[space] = 0
            continue
        ep, _, source = episode_table(t.sel(kind=[space]), window=window, context=context)
        fields = {v: ("episode", ep[v].values) for v in EPISODE_FIELDS}
        episodes.append(xr.Dataset(fields | {"space": ("episode", [space] * ep.sizes["episode"])}))
        ep_steps = np.asarray(ep["step"].values, dtype=np.float64)
        n_ep[space] = ep_steps.size
        rows[("timing", space)] = timing_claim(ep_steps, cutoff=cutoff, share=share, alpha=alpha)
    for space in SPACES:
        rows[("counts", space)] = counts_claim(n_ep["activation"], n_ep["weight"], alpha=alpha)
        for target, key, sign in (("loss", "rho_loss", -1), ("grad_norm", "rho_grad_norm", -1)):
            ok = space in coupling["kind"].values and target in coupling["target"].values
            rows[(key, space)] = (
                coupling_claim(
                    coupling.sel(kind=space, metric=metric, target=target),
                    study_sign=sign,
                    level=float(coupling.attrs.get("level", 0.95)),
                )
                if ok
                else _row(detail="not recorded")
            )
        rows[("phases", space)] = (
            phases_claim(phases.sel(kind=space, metric=metric))
            if space in phases["kind"].values
            else _row(detail="no trajectories")
        )
        ok = all(space in sampling[d].values for d in ("kind",)) and (
            metric in sampling["metric"].values and detector in sampling["detector"].values
        )
        steps = phases["step"].values
        rows[("sampling", space)] = (
            sampling_claim(
                sampling.sel(kind=space, metric=metric, detector=detector),
                every=float(every),
                first=float(steps.min()),
                last=float(steps.max()),
                window=window,
                alpha=alpha,
            )
            if ok
            else _row(detail="not computed for this space or metric")
        )
    short = n_snapshots < MIN_CLAIM_SNAPSHOTS
    if short:
        for row in rows.values():
            row["verdict"] = "inconclusive"
            row["detail"] = f"run too short ({n_snapshots} snapshots): " + row["detail"]
    empty = _row()
    grid = {v: [[rows.get((c, s), empty)[v] for s in SPACES] for c in CLAIMS] for v in empty}
    dims = ("claim", "space")
    data: dict[str, tuple[Any, np.ndarray]] = {
        v: (dims, np.asarray(grid[v], dtype=object if v in _TEXT else float)) for v in grid
    }
    data["study"] = ("claim", np.asarray([STUDY[c] for c in CLAIMS], dtype=object))
    out = xr.Dataset(data, coords={"claim": list(CLAIMS), "space": list(SPACES)})
    if episodes:
        ep = xr.concat(episodes, dim="episode")
        for v in ("space", *EPISODE_FIELDS):
            out[f"episode_{v}"] = ("episode", ep[v].values)
    out.attrs = params_attrs(
        "claims",
        {
            "metric": metric,
            "detector": detector,
            "alpha": alpha,
            "share": share,
            "cutoff_step": cutoff,
            "episode_window": window,
            "episode_source": source,
            "events": "notable events (significant ones where notable is absent)",
            "n_snapshots": int(n_snapshots),
            "min_snapshots": MIN_CLAIM_SNAPSHOTS,
            "short_run": bool(short),
            "verdicts": list(VERDICTS),
            "context": {k: [list(w) for w in v] for k, v in context.items()},
        },
    )
    return out
