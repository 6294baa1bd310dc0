"""Live monitoring of a run being written: incremental dimensionality and diagnoses.

``Trajectories`` reads only the snapshots completed since its last poll (the store's step
index says what is complete) and extends each layer's metrics; ``Diagnoser`` turns the
series into alerts with their evidence; ``Monitor`` ties the two together. The terminal
view, alert log, hooks and dashboard are in :mod:`dimlapse.pipelines`.
"""

from ._alert import KINDS, Alert, DiagnosisOptions
from ._diagnose import Diagnoser
from ._monitor import FINISHED, STATUSES, Monitor
from ._tracker import DEFAULT_METRICS, NewSnapshots, Trajectories

__all__ = [
    "DEFAULT_METRICS",
    "FINISHED",
    "KINDS",
    "STATUSES",
    "Alert",
    "Diagnoser",
    "DiagnosisOptions",
    "Monitor",
    "NewSnapshots",
    "Trajectories",
]
