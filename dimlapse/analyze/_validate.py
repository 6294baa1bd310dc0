"""Validation of options at the analysis' public boundaries, so every job words it the same way."""

from __future__ import annotations

from typing import Any

import numpy as np


def check_positive_int(value: Any, name: str, *, minimum: int = 1) -> int:
    """Validate an integer option at a job's boundary."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"Expected `{name}` to be an int >= {minimum}, got {value!r}")
    return int(value)


def check_fraction(value: Any, name: str, *, low: float = 0.0, high: float = 1.0) -> float:
    """Validate a float option in the open interval (low, high)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not low < value < high:
        raise ValueError(f"Expected `{name}` to be a float in ({low}, {high}), got {value!r}")
    return float(value)
