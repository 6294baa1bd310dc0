"""``TensorBoardLog``: TensorBoard event files fed while a run is being written (for watch).

The offline export writes one file at the end; a live view appends as snapshots complete.
The tags are the export's (``dimensionality/<kind>/<layer>/<metric>``, ``scalars/<name>``,
``alerts``), so a live log and a later export of the same run read alike in TensorBoard.
``log(values, step=...)`` is the W&B run's call, so :class:`LiveLog` feeds this file and a
W&B or trackio run alike.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

import numpy as np
from tensorboard.summary.writer.event_file_writer import EventFileWriter

from ._tensorboard import scalar_event, text_event

__all__ = ["TensorBoardLog"]


class TensorBoardLog:
    """Append scalars and texts to one TensorBoard event file in `folder` (created).

    One event per (tag, step). Events are flushed every `flush_secs` seconds and on
    :meth:`flush` / :meth:`close`, so a TensorBoard pointed at `folder` follows the run.

    Parameters
    ----------
    folder : str or path
        The log directory (``tensorboard --logdir folder``).
    flush_secs : float
        Longest time an event waits in memory before it is written.

    Examples
    --------
    >>> import tempfile
    >>> with TensorBoardLog(tempfile.mkdtemp()) as log:
    ...     log.dimensionality(5, {("activation", "fc1", "stable_rank"): 3.2})
    ...     log.alert(5, "**warning** bottleneck fc1: stalled")
    """

    def __init__(self, folder: str | os.PathLike[str], *, flush_secs: float = 5.0) -> None:
        if not flush_secs > 0:
            raise ValueError(f"Expected `flush_secs` > 0 seconds, got {flush_secs!r}")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._writer = EventFileWriter(str(self.folder), flush_secs=flush_secs)

    def scalars(
        self, step: int, values: Mapping[str, float], *, wall_time: float | None = None
    ) -> None:
        """``scalars/<name>`` for each training scalar at `step` (NaN kept)."""
        now = time.time() if wall_time is None else wall_time
        for name, value in values.items():
            self._writer.add_event(scalar_event(f"scalars/{name}", step, value, now))

    def dimensionality(
        self,
        step: int,
        values: Mapping[tuple[str, str, str], float],
        *,
        wall_time: float | None = None,
    ) -> None:
        """``dimensionality/<kind>/<layer>/<metric>`` for each ``(kind, layer, metric)``."""
        now = time.time() if wall_time is None else wall_time
        for (kind, layer, metric), value in values.items():
            tag = f"dimensionality/{kind}/{layer}/{metric}"
            self._writer.add_event(scalar_event(tag, step, float(np.float64(value)), now))

    def alert(self, step: int, text: str, *, wall_time: float | None = None) -> None:
        """One ``alerts`` text (Markdown) at `step`; join several alerts of a step first."""
        now = time.time() if wall_time is None else wall_time
        self._writer.add_event(text_event("alerts", step, text, now))

    def log(
        self, values: Mapping[str, object], *, step: int, wall_time: float | None = None
    ) -> None:
        """Each ``tag: value`` at `step`: a number as a scalar, a string as a text (Markdown).

        The call a W&B run takes (``run.log(values, step=...)``), with the keys as tags.
        """
        now = time.time() if wall_time is None else wall_time
        for tag, value in values.items():
            if isinstance(value, str):
                self._writer.add_event(text_event(tag, step, value, now))
            elif isinstance(value, int | float | np.number):
                self._writer.add_event(scalar_event(tag, step, float(value), now))
            else:
                raise TypeError(
                    f"Expected the value of {tag!r} to be a number or a string, got {value!r}"
                )

    def flush(self) -> None:
        """Write every pending event to disk."""
        self._writer.flush()

    def close(self) -> None:
        """Flush and close the file (idempotent)."""
        self._writer.close()

    def __enter__(self) -> TensorBoardLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
