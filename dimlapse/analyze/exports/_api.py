"""``export``: one analysed run into TensorBoard event files or tidy Parquet / CSV tables."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from dimlapse import RESULTS_DIR

from ._source import ExportSource, load_source, read_alerts
from ._tables import (
    alerts_table,
    claims_table,
    dimensionality_table,
    events_table,
    scalars_table,
)

__all__ = ["FORMATS", "ExportExistsError", "Exported", "export"]

#: Export formats: name -> file suffix of its tables ("" for TensorBoard's event files).
FORMATS = {"tensorboard": "", "parquet": ".parquet", "csv": ".csv"}


class ExportExistsError(FileExistsError):
    """An export would replace files of an earlier one; pass ``overwrite=True`` to allow it."""


@dataclass(frozen=True)
class Exported:
    """What :func:`export` wrote, and what it left out (one sentence per note)."""

    files: tuple[Path, ...]
    notes: tuple[str, ...]
    view: str = ""  # the command that shows a TensorBoard export with every point


#: TensorBoard keeps this many points per tag by default (reservoir sampling): more need
#: ``--samples_per_plugin``. Measured with tensorboard 2.21: 1000 scalars; text 100 with its
#: default data server, 10 with ``--load_fast=false``, so the smaller one is the threshold.
_TB_SAMPLES = {"scalars": 1000, "text": 10}


def _view(logdir: Path, tables: dict[str, pd.DataFrame]) -> str:
    """``tensorboard --logdir ...``, with ``--samples_per_plugin`` when a tag has more points
    than TensorBoard keeps by default."""
    counts = [tables["dimensionality"].groupby(["kind", "layer", "metric"]).size().max()]
    if "scalars" in tables:
        counts.append(tables["scalars"].groupby("name").size().max())
    events = tables["events"][tables["events"]["reported"]]
    texts = [events.groupby("detector")["step"].apply(lambda s: s.round().nunique()).max()]
    texts.append(tables["alerts"]["step"].nunique())
    need = {
        "scalars": int(max((c for c in counts if c == c), default=0)),
        "text": int(max((t for t in texts if t == t), default=0)),
    }
    extra = ",".join(f"{k}={n}" for k, n in need.items() if n > _TB_SAMPLES[k])
    return f"tensorboard --logdir {logdir}" + (f" --samples_per_plugin {extra}" if extra else "")


def _tables(source: ExportSource) -> dict[str, pd.DataFrame]:
    tree = source.tree
    tables = {"dimensionality": dimensionality_table(tree["dimensionality"].to_dataset())}
    if source.run is not None:
        tables["scalars"] = scalars_table(source.run.scalars.load())
    tables["events"] = events_table(tree["transitions"].to_dataset())
    if "claims" in tree.children:
        claims = claims_table(tree["claims"].to_dataset())
        tables["claims"] = claims
        if claims.attrs.get("left_out"):
            source.notes.append(
                "claims variables on other dims than the verdict's left out of the claims "
                f"table: {', '.join(claims.attrs['left_out'])}"
            )
    else:
        source.notes.append(
            "claims table left out: this analysis.zarr has no claims group (re-run "
            "`dimlapse analyze` with a version that writes it)"
        )
    tables["alerts"] = alerts_table(read_alerts(source.alerts_path))
    if not source.alerts_path.exists():
        source.notes.append(f"no alerts: {source.alerts_path} does not exist (no watch log)")
    return tables


def _summary(source: ExportSource, tables: dict[str, pd.DataFrame]) -> str:
    attrs = source.tree.attrs
    rule = "notable" if "notable" in source.tree["transitions"] else "significant"
    events = tables["events"]
    lines = [
        f"**run** {source.name}; store {attrs.get('store', '?')}; analysed "
        f"{attrs.get('analysed', '?')}; default detector {attrs.get('default_detector') or '?'}",
        f"**events** shown: the {rule} ones ({int(events['reported'].sum())} of "
        f"{len(events)} candidates); all candidates are in analysis.zarr and the events table",
    ]
    if source.notes:
        lines.append("**left out**\n\n" + "\n".join(f"- {note}" for note in source.notes))
    return "\n\n".join(lines)


def _targets(folder: Path, to: str, run: str, names: list[str]) -> list[Path]:
    if to == "tensorboard":
        return sorted((folder / "tensorboard" / run).glob("events.out.tfevents.*"))
    paths = (folder / f"{n}{FORMATS[to]}" for n in dict.fromkeys(names))
    return [p for p in paths if p.exists()]


def export(
    run_or_results: str | os.PathLike[str],
    *,
    to: str,
    out: str | os.PathLike[str] | None = None,
    results_dir: str | os.PathLike[str] = RESULTS_DIR,
    overwrite: bool = False,
) -> Exported:
    """Export an analysed run to TensorBoard event files or tidy Parquet / CSV tables.

    Parameters
    ----------
    run_or_results : str or path
        A run store (path or fsspec URL; its results are ``<results_dir>/<run>/``) or a
        results folder holding ``analysis.zarr``.
    to : {"tensorboard", "parquet", "csv"}
        ``tensorboard``: one event file in ``<out>/tensorboard/<run>/`` (tags in
        :mod:`._tensorboard`'s table), so TensorBoard names the run, and runs exported to
        one `out` are compared with ``tensorboard --logdir <out>/tensorboard``.
        ``parquet`` / ``csv``: ``<out>/<table>.<ext>`` for the tables dimensionality,
        scalars (when the run store is reachable), events, claims (when analysed) and alerts
        (columns in ``COLUMNS``).
    out : str or path, optional
        Default ``<results>/export/``.
    results_dir : str or path
        Where run stores' results are.
    overwrite : bool
        Replace the files of an earlier export of the same format (default: refuse).

    Returns
    -------
    Exported
        ``files``: the files written; ``notes``: what was left out and why (no run store,
        no claims group, no alerts log); ``view``: for TensorBoard, the command that shows
        every point (TensorBoard samples 1000 points per scalar tag and 10-100 per text tag
        by default).

    Raises
    ------
    ValueError
        An unknown format.
    NotAnalysedError
        The run has no analysis.zarr (a FileNotFoundError; the message names the command).
    ExportExistsError
        Files of an earlier export are there and `overwrite` is False.

    Examples
    --------
    >>> export("data/runs/none.zarr", to="excel")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: Expected `to` to be one of tensorboard, parquet, csv, got 'excel'
    """
    if to not in FORMATS:
        raise ValueError(f"Expected `to` to be one of {', '.join(FORMATS)}, got {to!r}")
    source = load_source(run_or_results, results_dir=results_dir)
    folder = Path(out) if out is not None else source.results / "export"
    tables = _tables(source)
    existing = _targets(folder, to, source.name, [*tables, "scalars", "claims"])
    if existing and not overwrite:
        raise ExportExistsError(
            f"An earlier {to} export is in {folder}: {', '.join(p.name for p in existing)}; "
            "pass overwrite=True (`--overwrite`) to replace it, or choose another `out`"
        )
    for path in existing:  # only files this function writes
        path.unlink()
    if to == "tensorboard":
        from ._tensorboard import write_tensorboard

        path = write_tensorboard(
            source,
            folder / "tensorboard" / source.name,
            dims=tables["dimensionality"],
            scalars=tables.get("scalars"),
            events=tables["events"],
            alerts=tables["alerts"],
            summary=_summary(source, tables),
        )
        view = _view(folder / "tensorboard", tables)
        return Exported(files=(path,), notes=tuple(source.notes), view=view)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, df in tables.items():
        path = folder / f"{name}{FORMATS[to]}"
        if to == "parquet":
            df.to_parquet(path, engine="pyarrow", index=False)
        else:
            df.to_csv(path, index=False)
        written.append(path)
    return Exported(files=tuple(written), notes=tuple(source.notes))
