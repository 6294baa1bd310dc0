"""Shared pytest set-up: headless plotting and quiet BLAS on the 2-core machines we test on."""

import os

# Figures are written to files only; never open a window.
os.environ.setdefault("MPLBACKEND", "Agg")
