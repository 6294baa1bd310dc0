"""The study's jobs: each takes dimensionality trajectories (or a run) plus keyword-only options
and returns a labelled Dataset, lazy when its input is dask-backed.

=========================  ==================================================================
``phases``                 collapse / expansion / stabilisation segments per trajectory
``timing``                 transition counts per layer and their share early in training
``coupling``               Spearman rho with loss and gradient norm (raw, differenced, bootstrap)
``sampling``               what coarser capture intervals would have found
``comparison``             activation versus weight dimensionality and transition counts
``training_dynamics``      loss / gradient-norm spikes and held-out accuracy, per step
``formation``              linear decodability of the probe targets per layer and step
``nonfinite_record``       steps with non-finite values, per group and array
``claims``                 each study claim per space as a test on episodes, with a verdict
=========================  ==================================================================
"""

from ._claims import (
    CLAIMS,
    FAST_FRACTION,
    MIN_CLAIM_SNAPSHOTS,
    STUDY,
    VERDICTS,
    claims,
    episode_table,
    fast_change_text,
    phase_sequence,
)
from ._compare import comparison
from ._coupling import coupling
from ._formation import formation
from ._nonfinite import excluded_steps, nonfinite_record
from ._phases import phases
from ._sampling import DEFAULT_INTERVALS, MIN_SAMPLES, sampling
from ._timing import timing, transition_counts
from ._training import accuracy_rise, context_windows, find_spikes, spike_at, training_dynamics

__all__ = [
    "CLAIMS",
    "DEFAULT_INTERVALS",
    "FAST_FRACTION",
    "MIN_CLAIM_SNAPSHOTS",
    "MIN_SAMPLES",
    "STUDY",
    "VERDICTS",
    "accuracy_rise",
    "claims",
    "comparison",
    "context_windows",
    "coupling",
    "episode_table",
    "excluded_steps",
    "fast_change_text",
    "find_spikes",
    "formation",
    "nonfinite_record",
    "phase_sequence",
    "phases",
    "sampling",
    "spike_at",
    "timing",
    "training_dynamics",
    "transition_counts",
]
