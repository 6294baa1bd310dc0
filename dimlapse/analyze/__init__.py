"""Offline analysis of a dimlapse run store (numpy, scipy, xarray, dask; never torch).

Data flow: ``open_run`` -> ``dimensionality`` (spectra -> SPECTRAL_METRICS, TwoNN) ->
``transitions`` (calibrated against null surrogates, FDR across series) -> the study's jobs
(``phases``, ``timing``, ``coupling``, ``sampling``, ``comparison``, ``training_dynamics``) ->
``analyze_run`` writes ``analysis.zarr``, figures (``render_figures``) and ``report.md``
(``write_report``). Jobs take a DataArray or Dataset plus keyword-only options and return a
Dataset, lazy when their input is dask-backed; ``transitions`` and ``sampling`` (surrogate
calibration) and ``training_dynamics`` (one row per optimizer step) compute eagerly.
"""

from ._compare import compare, comparison
from ._coupling import coupling
from ._dimensionality import dimensionality
from ._formation import formation
from ._integrity import StoreIntegrityError
from ._metrics import SPECTRAL_METRICS, DegenerateSpectrumWarning
from ._phases import phases
from ._pipeline import analyze_run, run_name
from ._run import Run, open_run
from ._sampling import sampling
from ._spectra import blas_single_thread, singular_values, spectra
from ._timing import timing
from ._training import training_dynamics
from ._transitions import (
    ALL_DETECTORS,
    DEFAULT_DETECTOR,
    DETECTORS,
    Calibration,
    MeanShiftOptions,
    PeltOptions,
    ZScoreOptions,
    transitions,
)
from ._twonn import twonn

__all__ = [
    "ALL_DETECTORS",
    "DEFAULT_DETECTOR",
    "DETECTORS",
    "SPECTRAL_METRICS",
    "Calibration",
    "DegenerateSpectrumWarning",
    "MeanShiftOptions",
    "PeltOptions",
    "Run",
    "StoreIntegrityError",
    "ZScoreOptions",
    "analyze_run",
    "blas_single_thread",
    "compare",
    "comparison",
    "coupling",
    "dimensionality",
    "formation",
    "open_run",
    "phases",
    "render_figures",
    "report_markdown",
    "run_name",
    "sampling",
    "singular_values",
    "spectra",
    "timing",
    "training_dynamics",
    "transitions",
    "twonn",
    "write_report",
]


def __getattr__(name: str) -> object:
    """Figures and the report import matplotlib (Agg backend) only when first asked for."""
    if name == "render_figures":
        from ._figures import render_figures

        return render_figures
    if name in ("report_markdown", "write_report"):
        from . import _report

        return getattr(_report, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
