"""Training-side capture: the Recorder, capture schedules, and activation replay."""

from ._recorder import CaptureError, Recorder
from ._replay import replay
from ._schedule import every_n, log_then_dense
from ._store import RunExistsError, RunNotFoundError

__all__ = [
    "CaptureError",
    "Recorder",
    "RunExistsError",
    "RunNotFoundError",
    "every_n",
    "log_then_dense",
    "replay",
]
