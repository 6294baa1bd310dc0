"""Matplotlib for files only (the Agg backend, set before pyplot loads) and two figure helpers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before pyplot: files only, never a window
import matplotlib.pyplot as plt

__all__ = ["legend", "plt", "save"]  # figure modules take pyplot from here, after use("Agg")


def legend(ax: Any, **kw: Any) -> None:
    """A legend only where something is labelled (matplotlib warns on an empty one)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kw)


def save(fig: Any, path: Path) -> Path:
    """Write `fig` to `path` (PNG, 110 dpi) and close it.

    Every report figure uses constrained layout, which already fits titles, labels and legends
    inside the figure; ``bbox_inches="tight"`` would only trim its margin, at the cost of a
    second full layout and draw (measured: 30-40 % of the figures' CPU time).
    """
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
