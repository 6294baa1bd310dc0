"""The monitor: incremental trajectories plus diagnoses, one ``poll`` at a time."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._diagnose import Alert, Diagnoser, DiagnosisOptions
from ._tracker import DEFAULT_METRICS, NewSnapshots, Trajectories

__all__ = ["FINISHED", "STATUSES", "Monitor"]

FINISHED = ("complete", "crashed", "degraded")  # statuses after which nothing more is written
STATUSES = ("running", *FINISHED)  # every status a Recorder writes


def _json_list(v: np.ndarray) -> list[float | None]:
    """Floats for JSON: NaN and Inf become ``None`` (JSON has no NaN)."""
    return [float(x) if math.isfinite(x) else None for x in np.asarray(v, dtype=np.float64)]


class Monitor:
    """Follow one run: each :meth:`poll` reads new snapshots and returns new alerts.

    Parameters
    ----------
    path : str, os.PathLike or zarr store
        The run store, complete or still being written.
    options : DiagnosisOptions, optional
        Windows and thresholds of the diagnoses.
    metrics : tuple of str
        Metrics tracked per layer; must include ``options.metric``.
    kind : {"auto", "activation", "weight"}
        Which matrices (see :class:`Trajectories`).
    max_batch : int
        Most snapshots one :meth:`poll` reads; :attr:`backlog` counts the rest.

    Examples
    --------
    >>> mon = Monitor("data/runs/mlp-mnist1d-s0.zarr")  # doctest: +SKIP
    >>> for alert in mon.poll():  # doctest: +SKIP
    ...     print(alert.message)
    """

    def __init__(
        self,
        path: Any,
        *,
        options: DiagnosisOptions | None = None,
        metrics: tuple[str, ...] = DEFAULT_METRICS,
        kind: str = "auto",
        max_batch: int = 64,
    ) -> None:
        self.options = options or DiagnosisOptions()
        if self.options.metric not in metrics:
            raise ValueError(
                f"Expected `metrics` to include the diagnosed metric "
                f"{self.options.metric!r}, got {metrics!r}"
            )
        self.trajectories = Trajectories(path, metrics=metrics, kind=kind, max_batch=max_batch)
        self.diagnoser = Diagnoser(self.options)
        self.alerts: list[Alert] = []
        self.last = NewSnapshots(np.zeros(0, np.int64), {})  # what the latest poll read

    @property
    def status(self) -> str:
        """The run's status attr (``running``, ``complete``, ``crashed``, ``degraded``)."""
        return self.trajectories.run.status

    @property
    def backlog(self) -> int:
        """Complete snapshots not read yet (a poll reads at most ``max_batch``)."""
        return self.trajectories.backlog

    @property
    def finished(self) -> bool:
        """Whether the writer is done (its status is final)."""
        return self.status in FINISHED

    @property
    def status_known(self) -> bool:
        """Whether the status is one a Recorder writes (else no writer will ever finish it)."""
        return self.status in STATUSES

    def poll(self) -> list[Alert]:
        """Read the snapshots completed since the last poll; return the alerts they raise."""
        tr = self.trajectories
        new = self.last = tr.poll()
        alerts = self.diagnoser.non_finite(new.nonfinite)
        metric = self.options.metric
        series = {layer: tr.values[layer][metric] for layer in tr.layers}
        alerts += self.diagnoser.update(tr.steps, series, tr.widths, (tr.scalar_steps, tr.scalars))
        self.alerts += alerts
        return alerts

    def state(self, *, max_points: int = 2000) -> dict[str, Any]:
        """A JSON-ready view: trajectories (thinned to ``max_points``), loss, alerts."""
        tr = self.trajectories
        stride = max(1, math.ceil(tr.steps.size / max_points))
        keep = slice(None, None, stride)
        scalar_stride = max(1, math.ceil(tr.scalar_steps.size / max_points))
        loss = tr.scalars.get("loss", np.zeros(0))
        return {
            "run": str(tr.run.path),
            "status": self.status,
            "kind": tr.kind,
            "metrics": list(tr.metrics),
            "diagnosed_metric": self.options.metric,
            "steps": [int(s) for s in tr.steps[keep]],
            "last_step": int(tr.steps[-1]) if tr.steps.size else None,
            "snapshots": int(tr.steps.size),
            "layers": [
                {
                    "name": layer,
                    "width": tr.widths.get(layer),
                    **{m: _json_list(tr.values[layer][m][keep]) for m in tr.metrics},
                }
                for layer in tr.layers
            ],
            "loss": {
                "steps": [int(s) for s in tr.scalar_steps[::scalar_stride]],
                "values": _json_list(loss[::scalar_stride]),
            },
            "alerts": [a.to_dict() for a in self.alerts],
        }
