"""Exports of an analysed run to the tools users look at: TensorBoard, Parquet, CSV.

``export(run_or_results, to=..., out=...)`` reads ``analysis.zarr`` (required), the run
store's scalars (when reachable) and watch's ``alerts.jsonl`` (when present), and writes
either one TensorBoard event file (tags in :mod:`._tensorboard`) or tidy tables, one row per
observation (columns in ``COLUMNS``). The run store and ``analysis.zarr`` stay the source:
an export is a view of them, refused over an earlier one unless ``overwrite=True``.

The TensorBoard writer needs the ``export`` extra (``pip install dimlapse[export]``:
tensorboard, pyarrow); it is imported only when that format is asked for.
"""

from ._api import FORMATS, Exported, ExportExistsError, export
from ._source import NotAnalysedError
from ._tables import (
    COLUMNS,
    alerts_table,
    claims_table,
    dimensionality_table,
    events_table,
    scalars_table,
)

__all__ = [
    "COLUMNS",
    "FORMATS",
    "ExportExistsError",
    "Exported",
    "NotAnalysedError",
    "alerts_table",
    "claims_table",
    "dimensionality_table",
    "events_table",
    "export",
    "scalars_table",
]
