"""What an export reads: the analysed results of one run, and its store when it can be opened.

An export starts from a run store (path or URL; its results are ``<results_dir>/<run>/``) or
from a results folder that holds ``analysis.zarr`` (its run store is the ``store`` attribute
that ``analyze_run`` recorded). The analysis is required: a run that has not been analysed is
refused with the command that analyses it. The store is optional: without it the training
scalars are left out and the export says so.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import xarray as xr

from dimlapse import RESULTS_DIR

from .._pipeline import run_name
from .._run import Run, open_run

__all__ = ["ExportSource", "NotAnalysedError", "load_source"]


class NotAnalysedError(FileNotFoundError):
    """The run has no ``analysis.zarr`` yet; the message names the command that makes it."""


@dataclass
class ExportSource:
    """One analysed run, loaded for export.

    Attributes
    ----------
    name : str
        The run's name (its store's name without ``.zarr``).
    results : Path
        The folder holding ``analysis.zarr`` (and ``alerts.jsonl`` when watch wrote one).
    tree : xr.DataTree
        The analysis, loaded into memory.
    run : Run or None
        The run store, lazily opened; None when it could not be found (``notes`` says why).
    notes : list of str
        What the export leaves out and why, one sentence each.
    """

    name: str
    results: Path
    tree: xr.DataTree
    run: Run | None
    notes: list[str] = field(default_factory=list)

    @property
    def alerts_path(self) -> Path:
        """``<results>/alerts.jsonl``, the log ``dimlapse watch`` writes."""
        return self.results / "alerts.jsonl"


def _is_url(text: str) -> bool:
    return "://" in text


def load_source(
    run_or_results: str | os.PathLike[str], *, results_dir: str | os.PathLike[str]
) -> ExportSource:
    """Open the analysis of `run_or_results` and, when reachable, its run store.

    Parameters
    ----------
    run_or_results : str or path
        A results folder holding ``analysis.zarr``, or a run store (path or fsspec URL)
        whose results are ``<results_dir>/<run>/``.
    results_dir : str or path
        Where the results of run stores are (``data/results`` by default in the CLI).

    Raises
    ------
    TypeError
        `run_or_results` is neither a string nor a path.
    NotAnalysedError
        No ``analysis.zarr`` for the run; the message names ``dimlapse analyze --run ...``.
    ValueError
        A run store path whose name cannot be a results folder (see ``run_name``).
    """
    if not isinstance(run_or_results, str | os.PathLike):
        raise TypeError(
            "Expected `run_or_results` to be a run store path or URL, or a results folder "
            f"holding analysis.zarr, got {type(run_or_results).__name__} {run_or_results!r}"
        )
    text = os.fspath(run_or_results)
    if not _is_url(text) and (Path(text) / "analysis.zarr").exists():
        results = Path(text)
        store = None
    else:
        name = run_name(text)
        results = Path(results_dir) / name
        store = text
    path = results / "analysis.zarr"
    if not path.exists():
        default = Path(RESULTS_DIR) / results.name
        where = "" if results == default else f" --out-dir {results}"
        raise NotAnalysedError(
            f"Run {text!r} has not been analysed: no {path}. Analyse it first with "
            f"`dimlapse analyze --run {text}{where}`, or pass a results folder that holds "
            "analysis.zarr"
        )
    tree = xr.open_datatree(path, engine="zarr").load()
    name = str(tree.attrs.get("run") or results.name)
    notes: list[str] = []
    if store is None:
        store = str(tree.attrs.get("store") or "")
    run = None
    if store and (_is_url(store) or Path(store).exists()):
        run = open_run(store)
    else:
        notes.append(
            f"training scalars left out: the run store {store or '(not recorded)'!r} named by "
            f"{path} cannot be found"
        )
    return ExportSource(name=name, results=results, tree=tree, run=run, notes=notes)


def read_alerts(path: Path) -> list[dict[str, Any]]:
    """The alerts of ``alerts.jsonl``, one dict per non-empty line; [] when there is no file.

    Raises ValueError naming the file and line when a line is not a JSON object.
    """
    if not path.exists():
        return []
    alerts = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"Expected one JSON object per line in {path}, line {i}: {e}") from e
        if not isinstance(record, dict):
            raise ValueError(
                f"Expected one JSON object per line in {path}, line {i} holds "
                f"{type(record).__name__}"
            )
        alerts.append(record)
    return alerts
