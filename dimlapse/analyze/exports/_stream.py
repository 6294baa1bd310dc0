"""``LiveLog``: what a watch reads, sent to TensorBoard and W&B-style runs while a run trains.

A sink is any object with ``log(values: dict, step: int)``: a W&B run (``wandb.init(...)``;
``WANDB_MODE=offline`` keeps it on disk), a trackio run (the same call), or
:class:`TensorBoardLog`. The keys are the export's TensorBoard tags:

| key                                          | value                      | steps            |
| -------------------------------------------- | -------------------------- | ---------------- |
| ``dimensionality/<kind>/<layer>/<metric>``   | float (NaN: degenerate)    | every snapshot   |
| ``scalars/<name>`` (loss, grad_norm, lr, ...) | float, finite values only  | every step       |
| ``alerts``                                   | Markdown table (str)       | steps with alerts |

A non-finite loss or gradient norm is not logged as a value: the watch reports it as a
``non_finite`` alert, and ``test_accuracy`` is NaN between evaluations.

Order: W&B keeps a logged step only if it is not below the last one (calls for one step
merge), so rows go out in step order, one call per step and sink. A row waits until both
the snapshots and the scalar rows read so far have passed its step (scalar rows are
readable before the writer completes the snapshot of the same step); :meth:`LiveLog.flush`
sends what still waits when the watch ends. An alert raised for a step already sent (a
non-finite value found late) goes to the last step sent, its table naming its own step; a
value read for a step already sent (only possible for scalar rows that appear after the
first snapshots were sent) is not logged, and counted in ``late``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ._markdown import ALERT_COLUMNS, markdown_table

if TYPE_CHECKING:
    from dimlapse.analyze.watch import Alert, NewSnapshots

__all__ = ["LiveLog"]


def _is_sink(obj: object) -> bool:
    return callable(getattr(obj, "log", None))


class LiveLog:
    """Send each watch poll's dimensionality, scalars and alerts to `sinks`, step by step.

    Parameters
    ----------
    sinks : object with ``log(dict, step=int)``, or a sequence of them
        W&B / trackio runs, :class:`TensorBoardLog`; the caller owns them (finishes the run,
        closes the file). A sink's ``flush()``, when it has one, is called after each update.

    Attributes
    ----------
    last_step : int or None
        The last step sent.
    rows : int
        Calls made per sink so far (one per step sent).
    late : int
        Values not logged because their step had been sent already.

    Examples
    --------
    >>> import numpy as np
    >>> from dimlapse.analyze.watch import NewSnapshots
    >>> class Run:  # any W&B-style run
    ...     def log(self, values, step):
    ...         print(step, values)
    >>> live = LiveLog(Run())
    >>> live.update(NewSnapshots(np.array([0, 5]), {"fc1": {"stable_rank": np.array([2.0, 3.5])}},
    ...                          kind="activation",
    ...                          scalar_steps=np.arange(4), scalars={"loss": np.ones(4)}))
    0 {'dimensionality/activation/fc1/stable_rank': 2.0, 'scalars/loss': 1.0}
    1 {'scalars/loss': 1.0}
    2 {'scalars/loss': 1.0}
    3 {'scalars/loss': 1.0}
    >>> live.flush()  # the watch ended: what waited for the scalars goes out
    5 {'dimensionality/activation/fc1/stable_rank': 3.5}
    """

    def __init__(self, sinks: Any) -> None:
        group = [sinks] if _is_sink(sinks) else sinks
        if isinstance(group, str | bytes) or not isinstance(group, Iterable):
            raise ValueError(
                "Expected `sinks` to be an object with .log(dict, step=int) (a W&B or trackio "
                f"run, a TensorBoardLog) or a sequence of them, got {sinks!r}"
            )
        group = list(group)
        bad = [s for s in group if not _is_sink(s)]
        if not group or bad:
            raise ValueError(
                "Expected `sinks` to be objects with .log(dict, step=int) (a W&B or trackio "
                f"run, a TensorBoardLog), got {bad[0] if bad else group!r}"
            )
        self.sinks: list[Any] = group
        self.last_step: int | None = None
        self.rows = 0
        self.late = 0
        self._rows: dict[int, dict[str, object]] = {}
        self._alerts: dict[int, list[dict[str, Any]]] = {}
        self._snapshot = -1  # newest snapshot step read
        self._scalar: int | None = None  # newest scalar step read (None: no scalars yet)

    def update(self, new: NewSnapshots, alerts: Sequence[Alert] = ()) -> None:
        """Take one poll's new snapshots, scalar rows and alerts; send the steps both passed."""
        for i, step in enumerate(new.steps.tolist()):
            row = self._rows.setdefault(int(step), {})
            for layer, metrics in new.metrics.items():
                for metric, values in metrics.items():
                    row[f"dimensionality/{new.kind}/{layer}/{metric}"] = float(values[i])
            self._snapshot = max(self._snapshot, int(step))
        steps = new.scalar_steps.tolist()
        for name, values in new.scalars.items():
            for step, value in zip(steps, values.tolist(), strict=True):
                if math.isfinite(value):
                    self._rows.setdefault(int(step), {})[f"scalars/{name}"] = float(value)
        if steps:
            self._scalar = max(self._scalar if self._scalar is not None else -1, int(steps[-1]))
        for alert in alerts:
            self._alerts.setdefault(int(alert.step), []).append(alert.to_dict())
        self._send(self._snapshot if self._scalar is None else min(self._snapshot, self._scalar))

    def flush(self) -> None:
        """Send every row still waiting (call it when the watch ends)."""
        self._send(None)

    def _send(self, upto: int | None) -> None:
        due = sorted(
            s for s in self._rows.keys() | self._alerts.keys() if upto is None or s <= upto
        )
        for step in due:
            row = self._rows.pop(step, {})
            alerts = self._alerts.pop(step, None)
            if self.last_step is not None and step < self.last_step:
                self.late += len(row)  # a value logged at another step would mislead
                row = {}
            if alerts:
                row["alerts"] = markdown_table(alerts, ["step", *ALERT_COLUMNS])
            if not row:
                continue
            at = step if self.last_step is None else max(step, self.last_step)  # W&B: never back
            for sink in self.sinks:
                sink.log(row, step=at)
            self.last_step = at
            self.rows += 1
        for sink in self.sinks:
            flush = getattr(sink, "flush", None)
            if callable(flush):
                flush()
