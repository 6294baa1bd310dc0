"""The report and figures of an analysis DataTree (``analysis.zarr`` opened as a tree).

``report_markdown`` / ``write_report`` render ``report.md`` (claims table, interpretation,
training context); ``render_figures`` writes the PNG figures named in ``FIGURES``. Reading
helpers (``headline``, ``node``) are shared by both. Matplotlib (Agg backend) is imported only
when a figure is first asked for, so the report's text needs no plotting library loaded.
"""

from typing import Any

from ._markdown import claims_table, report_markdown, write_report
from ._tree import FIGURES, default_detector, headline, node

__all__ = [
    "FIGURES",
    "claims_table",
    "default_detector",
    "figures_started",
    "formation_figure",
    "headline",
    "node",
    "render_figures",
    "report_markdown",
    "write_report",
]


def __getattr__(name: str) -> Any:
    """Figures import matplotlib only when first asked for."""
    if name == "render_figures":
        from ._figures import render_figures

        return render_figures
    if name == "figures_started":
        from ._figures import figures_started

        return figures_started
    if name == "formation_figure":
        from ._formation_plot import formation_figure

        return formation_figure
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
