"""Training-side capture: the Recorder, its options, capture schedules, activation replay.

Data flow: ``Recorder.step()`` (the hand-over, ``_handover.py``) copies a snapshot into a
shared-memory ring (``writer/_ring.py``); a writer process (``writer/_handle.py``,
``writer/_serve.py``) runs the probe forward and spectra (``writer/_work.py``) and appends
whole chunks to the run store (``writer/_sink.py``, ``writer/_chunks.py``). The run session
(``_session.py``) opens the store through :mod:`dimlapse.capture.store`, the only code that
opens, creates, trims and checks run stores. The store layout is in docs/store-layout.md.

Sub-packages with their own faces: ``store`` (run stores), ``writer`` (the writer side),
``integrations`` (Hugging Face and Lightning callbacks, imported on demand), ``ingest``
(checkpoint series into run stores).
"""

from . import _logs
from ._budget import StoreTooSmallError
from ._handover import CaptureError
from ._options import MODES, CaptureOptions
from ._recorder import Recorder
from ._replay import replay
from ._schedule import every_n, log_then_dense
from ._validate import ProbeError
from .ingest import ingest
from .store import RunExistsError, RunLockedError, RunNotFoundError, last_complete

_logs.install()  # the start and close lines are seen by default (see _logs.py)

__all__ = [
    "MODES",
    "CaptureError",
    "CaptureOptions",
    "ProbeError",
    "Recorder",
    "RunExistsError",
    "RunLockedError",
    "RunNotFoundError",
    "StoreTooSmallError",
    "every_n",
    "ingest",
    "last_complete",
    "log_then_dense",
    "replay",
]
