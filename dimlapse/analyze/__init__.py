"""Offline analysis of a dimlapse run store (numpy, scipy, xarray, dask; never torch).

Data flow: ``open_run`` -> ``dimensionality`` (spectra -> SPECTRAL_METRICS, TwoNN) ->
``transitions`` (calibrated against null surrogates, FDR across series) -> the study's jobs
(:mod:`dimlapse.analyze.jobs`: ``phases``, ``timing``, ``coupling``, ``sampling``,
``comparison``, ``training_dynamics``, ``formation``) -> ``analyze_run`` writes
``analysis.zarr``, figures and ``report.md`` (:mod:`dimlapse.analyze.report`) under
``RESULTS_DIR/<run>/``. Live monitoring of a run being written: :mod:`dimlapse.analyze.watch`;
exports to TensorBoard, Parquet and CSV: :mod:`dimlapse.analyze.exports`.

Jobs take a DataArray or Dataset plus keyword-only options and return a Dataset, lazy when
their input is dask-backed; ``transitions`` and ``sampling`` (surrogate calibration) and
``training_dynamics`` (one row per optimizer step) compute eagerly.
"""

from dimlapse import RESULTS_DIR

from ._dimensionality import dimensionality, numerical_rank_rtol
from ._integrity import StoreIntegrityError
from ._metrics import SPECTRAL_METRICS, DegenerateSpectrumWarning
from ._pipeline import analyze_run, run_name
from ._run import Run, open_run
from ._spectra import blas_single_thread, singular_values, spectra
from ._transitions import (
    ALL_DETECTORS,
    DEFAULT_DETECTOR,
    Calibration,
    MeanShiftOptions,
    PeltOptions,
    ZScoreOptions,
    default_workers,
    episodes,
    transitions,
)
from ._twonn import twonn
from .exports import export
from .jobs import comparison, coupling, formation, phases, sampling, timing, training_dynamics

__all__ = [
    "ALL_DETECTORS",
    "DEFAULT_DETECTOR",
    "RESULTS_DIR",
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
    "comparison",
    "coupling",
    "default_workers",
    "dimensionality",
    "episodes",
    "export",
    "formation",
    "numerical_rank_rtol",
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
    if name in ("render_figures", "report_markdown", "write_report"):
        from . import report

        return getattr(report, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
