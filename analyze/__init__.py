"""Offline analysis of a dimlapse run store (numpy, scipy, xarray, dask; never torch).

Data flow: ``open_run`` -> ``dimensionality`` (spectra -> SPECTRAL_METRICS, TwoNN) ->
``transitions`` (calibrated against null surrogates, FDR across series) -> the study's jobs
(``phases``, ``timing``, ``coupling``, ``sampling``, ``compare``) -> ``analyze_run`` writes
``analysis.zarr``, figures and ``report.md``.
"""

from ._compare import compare
from ._coupling import coupling
from ._detectors import DETECTORS
from ._dimensionality import dimensionality
from ._formation import formation
from ._metrics import SPECTRAL_METRICS, DegenerateSpectrumWarning
from ._phases import phases
from ._pipeline import analyze_run
from ._run import Run, open_run
from ._sampling import sampling
from ._spectra import blas_single_thread, singular_values, spectra
from ._timing import timing
from ._transitions import find_transitions
from ._transitions_many import transitions
from ._twonn import twonn

__all__ = [
    "DETECTORS",
    "SPECTRAL_METRICS",
    "DegenerateSpectrumWarning",
    "Run",
    "analyze_run",
    "blas_single_thread",
    "compare",
    "coupling",
    "dimensionality",
    "find_transitions",
    "formation",
    "open_run",
    "phases",
    "sampling",
    "singular_values",
    "spectra",
    "timing",
    "transitions",
    "twonn",
]
