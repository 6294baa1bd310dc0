"""``dimlapse watch``: follow a run while it is written; the watch API in one place.

``watch(store, on_alert=...)`` (or ``Watcher`` in a training script's own thread) reads each
new snapshot, updates dimensionality, diagnoses and raises :class:`Alert` objects tuned by
:class:`DiagnosisOptions`; it writes the alert log, redraws a ``TerminalView`` and feeds the
local web ``Dashboard``; ``log_to=`` sends the same to TensorBoard, W&B or trackio while the
run trains. The monitor itself is :mod:`dimlapse.analyze.watch`; its types are re-exported
here so a script needs one import. ``add_arguments`` / ``main`` are the command.
"""

from dimlapse.analyze.watch import KINDS, Alert, DiagnosisOptions, Monitor

from ._command import add_arguments, main
from ._view import TerminalView, sparkline
from ._watcher import Watcher, WatchResult, alert_log_path, watch
from .dashboard import Dashboard

__all__ = [
    "KINDS",
    "Alert",
    "Dashboard",
    "DiagnosisOptions",
    "Monitor",
    "TerminalView",
    "WatchResult",
    "Watcher",
    "add_arguments",
    "alert_log_path",
    "main",
    "sparkline",
    "watch",
]
