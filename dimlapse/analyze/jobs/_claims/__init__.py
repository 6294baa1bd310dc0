"""Claims as tests: each study claim, per space, tested on independent episodes with a verdict.

A claim is *reproduced* only when its stated test says so at `alpha`; *not reproduced* when the
data exclude the study's value (the interval lies on the other side of it); else *inconclusive*
(too few episodes, or a run too short for the jobs: fewer than ``MIN_CLAIM_SNAPSHOTS``).

Events are the headline detector's notable events (``notable`` from the transitions job; its
``significant`` events until that variable exists) on the headline metric. Events that coincide
across series form one *episode* (a loss spike that moves every layer is one episode, not one
per layer), and n counts episodes, never raw events (``episode_table``).
"""

from ._episodes import episode_table, fallback_episodes
from ._job import claims
from ._phases import FAST_FRACTION, fast_change_text, phase_sequence, phases_claim
from ._verdicts import (
    CLAIMS,
    MIN_CLAIM_SNAPSHOTS,
    SPACES,
    STUDY,
    VERDICTS,
    counts_claim,
    coupling_claim,
    sampling_claim,
    timing_claim,
)

__all__ = [
    "CLAIMS",
    "FAST_FRACTION",
    "MIN_CLAIM_SNAPSHOTS",
    "SPACES",
    "STUDY",
    "VERDICTS",
    "claims",
    "counts_claim",
    "coupling_claim",
    "episode_table",
    "fallback_episodes",
    "fast_change_text",
    "phase_sequence",
    "phases_claim",
    "sampling_claim",
    "timing_claim",
]
