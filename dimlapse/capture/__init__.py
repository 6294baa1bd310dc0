"""Training-side capture: the Recorder, capture schedules, activation replay.

Data flow: ``Recorder.step()`` copies a snapshot into a shared-memory ring (``writer/_ring``);
a writer process (``writer/_handle``, ``writer/_serve``) runs the probe forward and spectra
(``writer/_work``) and appends whole chunks to the run store (``writer/_sink``,
``writer/_chunks``). The store layout is in docs/store-layout.md.
"""

from ._budget import StoreTooSmallError
from ._lock import RunLockedError
from ._recorder import MODES, CaptureError, Recorder
from ._replay import replay
from ._resume import last_complete
from ._schedule import every_n, log_then_dense
from ._store import RunExistsError, RunNotFoundError
from ._validate import ProbeError

__all__ = [
    "MODES",
    "CaptureError",
    "ProbeError",
    "Recorder",
    "RunExistsError",
    "RunLockedError",
    "RunNotFoundError",
    "StoreTooSmallError",
    "every_n",
    "last_complete",
    "log_then_dense",
    "replay",
]
