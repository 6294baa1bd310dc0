"""Calibrated transition detection: which jumps in a trajectory are real.

A raw detector count means little: the study's rolling z > 2 rule fires about 88 times on
1,600 samples of pure white noise. Every candidate event here therefore comes with a p-value
from the same detector run on null surrogates of the same series, and the surrogates' mean
candidate count (``n_null``) is reported next to every raw count.

Method
------
1. **Events.** A detector (``DETECTORS``, one ``DetectorSpec`` each: ``zscore``, the study's
   rule; ``meanshift``; ``pelt``, the default) turns the series into candidate events, one per
   contiguous excursion, each with a score. Onset and duration come from a ramp fit around the
   event (``_ramp``), so a step, a ramp or a sigmoid rise is one candidate.
2. **Null.** Surrogates share the observed series' smooth trend at the time scale
   ``trend_window`` (samples, default 50) and its noise: ``y_b = W x + (I - W) e_b`` with ``W``
   a linear local-quadratic smoother (``_smoother``) and ``e_b`` Gaussian AR(1) noise fitted
   robustly to the residual with the series' clear events excised (``_noise``), so a
   staircase's steps are each tested against the noise, not against each other.
3. **p-values.** Max-statistic test: ``p = (1 + #{b : max score of surrogate b >= score}) /
   (1 + n_surrogates)``, family-wise within a series; beyond the surrogate maxima a generalized
   Pareto tail (Knijnenburg et al. 2009; ``_tail``).
4. **Across series.** Benjamini and Hochberg (1995) on the series-level p-values selects R of
   the m tested series; within a selected series a candidate is significant when
   ``p <= alpha R / m`` (Benjamini and Bogomolov 2014).
5. **Time scale.** The same candidates are tested against surrogates at a ladder of trend
   windows (``Calibration.scales``); ``scale`` is the narrowest at which an event is
   significant, so a 5-step jump (significant even against a trend that smooth over 12
   samples) and a slow rise (significant only against a trend four times smoother than the
   default) are both described.

``significant`` therefore means: more abrupt than a trend smooth at ``trend_window`` samples plus
noise like the series' own would produce, anywhere in the series.
"""

from ._api import NOTABLE_RELATIVE, transitions
from ._calibrate import SeriesResult, calibrate_series
from ._detectors import MeanShiftOptions, ZScoreOptions
from ._episodes import EPISODE_SAMPLES, episodes
from ._events import Events
from ._pelt import PeltOptions
from ._pool import default_workers, worker_cpu_seconds
from ._registry import ALL_DETECTORS, DEFAULT_DETECTOR, DETECTORS
from ._spec import Calibration, DetectorSpec

__all__ = [
    "ALL_DETECTORS",
    "DEFAULT_DETECTOR",
    "DETECTORS",
    "EPISODE_SAMPLES",
    "NOTABLE_RELATIVE",
    "Calibration",
    "DetectorSpec",
    "Events",
    "MeanShiftOptions",
    "PeltOptions",
    "SeriesResult",
    "ZScoreOptions",
    "calibrate_series",
    "default_workers",
    "episodes",
    "transitions",
    "worker_cpu_seconds",
]
