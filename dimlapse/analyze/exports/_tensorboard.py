"""TensorBoard event files of one analysed run, written without torch or TensorFlow.

Tags (one event per tag and step, written in step order so readers never see a step go back):

| tag                                          | kind   | steps                               |
| -------------------------------------------- | ------ | ----------------------------------- |
| ``scalars/<name>`` (loss, grad_norm, lr, ...) | scalar | every optimizer step                |
| ``dimensionality/<kind>/<layer>/<metric>``   | scalar | every snapshot (``twonn``: its own) |
| ``events/<detector>``                        | text   | steps where reported events centre  |
| ``alerts``                                   | text   | steps where watch raised alerts     |
| ``run/summary``                              | text   | 0: provenance, what was left out    |

Scalars are ``simple_value`` summaries, the form every TensorBoard reader (and the Hugging
Face Hub's viewer) accepts; the format stores them as float32, so values are the source
rounded to float32 (NaN kept). Event wall times are the run's ``created`` time plus its
recorded ``wall_time`` scalar (interpolated at snapshot steps), so TensorBoard's relative and
wall-clock axes show the training's real timing; ``wall_time`` itself is not a tag.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.plugins.text.metadata import create_summary_metadata
from tensorboard.summary.writer.event_file_writer import EventFileWriter
from tensorboard.util.tensor_util import make_tensor_proto

from ._markdown import ALERT_COLUMNS, markdown_table
from ._source import ExportSource

__all__ = ["EVENT_FILE_PREFIX", "scalar_event", "text_event", "write_tensorboard"]

EVENT_FILE_PREFIX = "events.out.tfevents."
_TEXT_METADATA = create_summary_metadata(display_name=None, description=None)


def scalar_event(tag: str, step: int, value: float, wall_time: float) -> Event:
    """One scalar summary event (``simple_value``: float32 in the file)."""
    summary = Summary(value=[Summary.Value(tag=tag, simple_value=float(value))])
    return Event(wall_time=wall_time, step=int(step), summary=summary)


def text_event(tag: str, step: int, text: str, wall_time: float) -> Event:
    """One text-plugin summary event (Markdown, rendered by TensorBoard's Text tab)."""
    tensor = make_tensor_proto(np.array(text.encode("utf-8"), dtype=object))
    value = Summary.Value(tag=tag, tensor=tensor, metadata=_TEXT_METADATA)
    return Event(wall_time=wall_time, step=int(step), summary=Summary(value=[value]))


class _Clock:
    """Epoch seconds at a step: run start plus the recorded ``wall_time`` scalar."""

    def __init__(self, created: object, steps: np.ndarray, seconds: np.ndarray) -> None:
        try:
            start = dt.datetime.fromisoformat(str(created)).timestamp()
        except ValueError:
            start = time.time()
        ok = np.isfinite(seconds)
        self.start, self.steps, self.seconds = start, steps[ok], seconds[ok]

    def __call__(self, step: float) -> float:
        if not len(self.steps):
            return self.start
        return self.start + float(np.interp(step, self.steps, self.seconds))


def _clock(source: ExportSource, scalars: pd.DataFrame | None) -> _Clock:
    created = source.run.attrs.get("created") if source.run is not None else None
    created = created or source.tree.attrs.get("run_created") or ""
    if scalars is None:
        return _Clock(created, np.zeros(0), np.zeros(0))
    wall = scalars[scalars["name"] == "wall_time"]
    return _Clock(created, wall["step"].to_numpy(np.float64), wall["value"].to_numpy(np.float64))


def _table(rows: pd.DataFrame, columns: list[str]) -> str:
    """A Markdown table of `columns` (those present) of `rows`."""
    cols = [c for c in columns if c in rows.columns]
    return markdown_table(rows[cols].to_dict("records"), cols)


EVENT_COLUMNS = ["kind", "layer", "metric", "step", "sign", "score", "p_value", "scale",
                 "duration", "effect", "episode"]  # fmt: skip


def _events(
    source: ExportSource,
    *,
    dims: pd.DataFrame,
    scalars: pd.DataFrame | None,
    events: pd.DataFrame,
    alerts: pd.DataFrame,
    summary: str,
) -> Iterator[Event]:
    clock = _clock(source, scalars)
    by_name = scalars.groupby("name", sort=True) if scalars is not None else ()
    for name, rows in by_name:
        if name == "wall_time":
            continue
        for step, value in zip(rows["step"], rows["value"], strict=True):
            yield scalar_event(f"scalars/{name}", step, value, clock(step))
    for (kind, layer, metric), rows in dims.groupby(["kind", "layer", "metric"], sort=False):
        tag = f"dimensionality/{kind}/{layer}/{metric}"
        for step, value in zip(rows["step"], rows["value"], strict=True):
            yield scalar_event(tag, step, value, clock(step))
    reported = events[events["reported"]].copy()
    reported["at"] = np.rint(reported["step"]).astype(np.int64)
    for (detector, at), rows in reported.groupby(["detector", "at"], sort=True):
        yield text_event(f"events/{detector}", at, _table(rows, EVENT_COLUMNS), clock(at))
    for at, rows in alerts.dropna(subset=["step"]).groupby("step", sort=True):
        yield text_event("alerts", int(at), _table(rows, ALERT_COLUMNS), clock(int(at)))
    yield text_event("run/summary", 0, summary, clock(0))


def write_tensorboard(
    source: ExportSource,
    folder: Path,
    *,
    dims: pd.DataFrame,
    scalars: pd.DataFrame | None,
    events: pd.DataFrame,
    alerts: pd.DataFrame,
    summary: str,
) -> Path:
    """Write one event file into `folder` (created); returns its path.

    The tables are those of :mod:`._tables`; ``events`` must hold the ``reported`` column.
    Events are sorted by step (then tag) before writing.
    """
    batch: Iterable[Event] = sorted(
        _events(source, dims=dims, scalars=scalars, events=events, alerts=alerts,
                summary=summary),
        key=lambda e: e.step,
    )  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    before = set(folder.glob(f"{EVENT_FILE_PREFIX}*"))
    writer = EventFileWriter(str(folder), max_queue_size=1024, flush_secs=3600)
    try:
        for event in batch:
            writer.add_event(event)
    finally:
        writer.close()
    (path,) = set(folder.glob(f"{EVENT_FILE_PREFIX}*")) - before
    return path
