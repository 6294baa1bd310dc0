"""Tidy tables of one analysed run: one row per observation, columns documented in ``COLUMNS``.

==================  ==============================  ==========================================
table               one row per                     columns
==================  ==============================  ==========================================
``dimensionality``  (kind, layer, metric, step)     kind, layer, metric, step, value
``scalars``         (scalar, optimizer step)        name, step, value
``events``          transition candidate            kind, layer, metric, detector, transition,
                                                    step, significant, notable (when present),
                                                    every other per-event variable, reported
``claims``          (claim, space)                  its dims, then every variable of the group
``alerts``          line of ``alerts.jsonl``        step, kind, layer, metric, severity,
                                                    message, statistic, threshold,
                                                    window_start, window_end, time, calibration
==================  ==============================  ==========================================

Strings are pandas ``string`` columns, steps ``int64`` (event steps, fitted centres of a ramp,
``float64``), values ``float64`` (NaN kept: a NaN in the source is a NaN in the table).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

__all__ = [
    "COLUMNS",
    "alerts_table",
    "claims_table",
    "dimensionality_table",
    "events_table",
    "reported_events",
    "scalars_table",
]

#: Column -> meaning, per table (the ``events`` and ``claims`` tables add the variables of
#: their groups, whose meaning is their ``long_name`` in analysis.zarr).
COLUMNS: dict[str, dict[str, str]] = {
    "dimensionality": {
        "kind": "'activation' (probe activations) or 'weight' (parameters)",
        "layer": "module or parameter name as captured",
        "metric": "a SPECTRAL_METRICS name, or 'twonn' (TwoNN intrinsic dimension, activations)",
        "step": "optimizer step of the snapshot (int64)",
        "value": "the metric at that snapshot (float64; NaN where the spectrum is not finite)",
    },
    "scalars": {
        "name": "scalar recorded every optimizer step (loss, grad_norm, lr, accuracy, ...)",
        "step": "optimizer step (int64)",
        "value": "the scalar (float64, NaN kept)",
    },
    "events": {
        "kind, layer, metric": "the series the candidate was detected in",
        "detector": "transition detector (zscore, meanshift, pelt)",
        "transition": "index of the candidate within its series and detector",
        "step": "step where the change is centred (float64)",
        "significant": "abrupt relative to the trend after FDR control (bool)",
        "notable": "significant and above the effect-size threshold (bool; when analysed)",
        "reported": "the events figures and claims speak of: notable where the analysis has "
        "it, else significant (bool)",
        "...": "every other per-event variable of the transitions group (onset, duration, "
        "scale, score, sign, p_value, effect, episode, ...)",
    },
    "claims": {
        "claim, space": "the claim and the space (activation / weight) it is tested in",
        "...": "every variable of the claims group (statistic, test, p-value or interval, n, "
        "verdict, ...)",
    },
    "alerts": {
        "step": "step the alert was raised at (Int64, pandas' nullable int64)",
        "kind": "diagnosis (non_finite, rank_collapse, bottleneck, instability, ...)",
        "layer": "the layer the diagnosis read",
        "metric": "the dimensionality series the diagnosis read",
        "severity": "'warning' or 'critical'",
        "message": "the alert's sentence",
        "statistic": "the evidence (float64)",
        "threshold": "what the statistic was compared with (float64)",
        "window_start": "first step of the evidence window (Int64)",
        "window_end": "last step of the evidence window (Int64)",
        "time": "when the alert was raised (ISO 8601, UTC)",
        "calibration": "what the threshold was calibrated on (JSON text)",
        "context": "the training event the alert coincides with (spike, accuracy or lr change)",
    },
}


def _strings(df: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    for name in names:
        df[name] = df[name].astype(str).astype("string")
    return df


def dimensionality_table(dims: xr.Dataset) -> pd.DataFrame:
    """Long table of the dimensionality group: metrics per (kind, layer, step), TwoNN too.

    Parameters
    ----------
    dims : xr.Dataset
        The ``dimensionality`` group: ``dimensionality`` (kind, layer, step, metric) and,
        when computed, ``twonn`` (layer, twonn_step) on activations.

    Returns
    -------
    pd.DataFrame
        Columns kind, layer, metric (string), step (int64), value (float64); one row per
        (kind, layer, metric, step), sorted in that order.
    """
    da = dims["dimensionality"].transpose("kind", "layer", "metric", "step")
    k, ly, m, s = np.meshgrid(
        *(da[d].values for d in ("kind", "layer", "metric", "step")), indexing="ij"
    )
    parts = [
        pd.DataFrame(
            {
                "kind": k.ravel(),
                "layer": ly.ravel(),
                "metric": m.ravel(),
                "step": s.ravel(),
                "value": np.asarray(da.values, dtype=np.float64).ravel(),
            }
        )
    ]
    if "twonn" in dims:
        tw = dims["twonn"].transpose("layer", "twonn_step")
        ly, s = np.meshgrid(tw["layer"].values, tw["twonn_step"].values, indexing="ij")
        parts.append(
            pd.DataFrame(
                {
                    "kind": "activation",
                    "layer": ly.ravel(),
                    "metric": "twonn",
                    "step": s.ravel(),
                    "value": np.asarray(tw.values, dtype=np.float64).ravel(),
                }
            )
        )
    df = pd.concat(parts, ignore_index=True)
    df["step"] = df["step"].astype(np.int64)
    df = df.sort_values(["kind", "layer", "metric", "step"], kind="stable", ignore_index=True)
    return _strings(df, ["kind", "layer", "metric"])


def scalars_table(scalars: xr.Dataset) -> pd.DataFrame:
    """Long table of the run's per-step scalars (``Run.scalars``), ``wall_time`` included.

    Returns
    -------
    pd.DataFrame
        Columns name (string), step (int64), value (float64); one row per (name, step),
        names in alphabetical order.
    """
    steps = np.asarray(scalars["step"].values, dtype=np.int64)
    parts = [
        pd.DataFrame(
            {"name": name, "step": steps, "value": np.asarray(scalars[name], dtype=np.float64)}
        )
        for name in sorted(map(str, scalars.data_vars))
        if scalars[name].dims == ("step",)
    ]
    if not parts:
        return _strings(
            pd.DataFrame(
                {
                    "name": pd.Series(dtype=str),
                    "step": pd.Series(dtype=np.int64),
                    "value": pd.Series(dtype=np.float64),
                }
            ),
            ["name"],
        )
    return _strings(pd.concat(parts, ignore_index=True), ["name"])


def reported_events(trans: xr.Dataset) -> xr.DataArray:
    """Boolean (..., transition): notable events where the analysis has ``notable``, else
    significant ones (notable implies significant)."""
    chosen = trans["significant"].fillna(False).astype(bool)
    if "notable" in trans:
        chosen = chosen & trans["notable"].fillna(False).astype(bool)
    return chosen


def events_table(trans: xr.Dataset) -> pd.DataFrame:
    """One row per transition candidate (padding rows, where ``step`` is NaN, dropped).

    Parameters
    ----------
    trans : xr.Dataset
        The ``transitions`` group: per-event variables on (kind, layer, metric, detector,
        transition).

    Returns
    -------
    pd.DataFrame
        kind, layer, metric, detector (string), transition (int64), step, significant,
        notable (when present), then every other variable that has the ``transition`` dim,
        then ``reported`` (bool). Sorted by kind, layer, metric, detector, step.
    """
    series = ("kind", "layer", "metric", "detector")
    first = ["step", "significant", "notable"]
    names = [str(v) for v in trans.data_vars if "transition" in trans[v].dims]
    names = [n for n in first if n in names] + [n for n in names if n not in first]
    ds = trans[names].assign(reported=reported_events(trans))
    ds = ds.transpose(*series, "transition", ...)
    df = ds.to_dataframe().reset_index()
    df = df[df["step"].notna()].reset_index(drop=True)
    df["transition"] = df["transition"].astype(np.int64)
    for name in [*names, "reported"]:
        if ds[name].dtype == bool:
            df[name] = df[name].astype(bool)
    df = df.sort_values([*series, "step"], kind="stable", ignore_index=True)
    return _strings(df, list(series))


def claims_table(claims: xr.Dataset) -> pd.DataFrame:
    """One row per cell of the claims group (per claim and space), every variable a column.

    Variables on other dims than the verdict's (or, without a verdict, the largest set of
    dims) would multiply rows, so they are left out; their names are in
    ``df.attrs["left_out"]``.
    """
    if not claims.data_vars:
        return pd.DataFrame()
    ref = "verdict" if "verdict" in claims else max(claims.data_vars, key=lambda v: claims[v].ndim)
    dims = claims[ref].dims
    keep = [str(v) for v in claims.data_vars if set(claims[v].dims) <= set(dims)]
    left = sorted(str(v) for v in claims.data_vars if str(v) not in keep)
    df = (
        claims[keep].to_dataframe().reset_index()
        if dims
        else pd.DataFrame([{v: claims[v].item() for v in keep}])
    )
    for name in df.columns:
        if df[name].dtype == object or str(df[name].dtype).startswith(("<U", "str")):
            df[name] = df[name].map(_text).astype("string")
    df = df[[*dims, *keep]] if dims else df
    df.attrs["left_out"] = left
    return df


def _text(value: Any) -> Any:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return pd.NA
    return value if isinstance(value, str) else json.dumps(value, default=str)


def alerts_table(alerts: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per alert of ``alerts.jsonl`` (as :func:`read_alerts` returns them).

    Returns
    -------
    pd.DataFrame
        Columns of ``COLUMNS["alerts"]`` in that order, then any other field the log holds
        (as JSON text); empty with those columns when there are no alerts.
    """
    fixed = list(COLUMNS["alerts"])
    rows = []
    for a in alerts:
        window = a.get("window") or [None, None]
        row = {k: a.get(k) for k in fixed}
        row["window_start"], row["window_end"] = window[0], window[-1]
        row["calibration"] = json.dumps(a.get("calibration", {}), sort_keys=True)
        row.update({k: _text(v) for k, v in a.items() if k not in fixed and k != "window"})
        rows.append(row)
    df = pd.DataFrame(rows, columns=None if rows else fixed)
    extra = [c for c in df.columns if c not in fixed]
    df = df.reindex(columns=[*fixed, *extra])
    for name in ("step", "window_start", "window_end"):
        df[name] = pd.array(df[name], dtype="Int64")
    for name in ("statistic", "threshold"):
        df[name] = pd.to_numeric(df[name], errors="coerce").astype(np.float64)
    for name in ("kind", "layer", "metric", "severity", "message", "time", "calibration", *extra):
        df[name] = df[name].astype("string")
    return df
