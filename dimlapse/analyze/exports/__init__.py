"""Exports of an analysed run to the tools users look at: TensorBoard, Parquet, CSV.

``export(run_or_results, to=..., out=...)`` reads ``analysis.zarr`` (required), the run
store's scalars (when reachable) and watch's ``alerts.jsonl`` (when present), and writes
either one TensorBoard event file (tags in :mod:`._tensorboard`) or tidy tables, one row per
observation (columns in ``COLUMNS``). The run store and ``analysis.zarr`` stay the source:
an export is a view of them, refused over an earlier one unless ``overwrite=True``.

``TensorBoardLog`` appends the same tags while a run is being written, and ``LiveLog``
sends what a watch reads to it and to any W&B-style run (``run.log(dict, step=...)``: W&B,
trackio), for live logging from watch. TensorBoard and Parquet need the ``export`` extra
(``pip install 'dimlapse[export]'``: tensorboard, pyarrow), W&B the ``wandb`` extra;
tensorboard is imported only when asked for, wandb never (the caller makes its run).
"""

from ._api import FORMATS, Exported, ExportExistsError, export
from ._source import NotAnalysedError
from ._stream import LiveLog
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
    "LiveLog",
    "NotAnalysedError",
    "TensorBoardLog",
    "alerts_table",
    "claims_table",
    "dimensionality_table",
    "events_table",
    "export",
    "scalars_table",
]


def __getattr__(name: str) -> object:
    """``TensorBoardLog`` imports tensorboard only when first asked for."""
    if name == "TensorBoardLog":
        from ._live import TensorBoardLog

        return TensorBoardLog
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
