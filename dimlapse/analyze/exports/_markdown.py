"""Markdown tables for TensorBoard's Text tab and W&B text values (no tensorboard import)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

__all__ = ["ALERT_COLUMNS", "markdown_table"]

#: Columns of an alert in the text logged for it (export and live log alike).
ALERT_COLUMNS = ["severity", "kind", "layer", "metric", "message", "statistic", "threshold"]


def _cell(value: object) -> str:
    if isinstance(value, float | np.floating):
        return "nan" if np.isnan(value) else f"{value:.4g}"
    return str(value).replace("|", "\\|")


def markdown_table(records: Iterable[Mapping[str, object]], columns: Sequence[str]) -> str:
    """A Markdown table of `columns` (those the first record has) of `records`.

    Floats are written with 4 significant digits; ``|`` inside a value is escaped.

    Examples
    --------
    >>> print(markdown_table([{"kind": "bottleneck", "statistic": 1.23456}], ["kind", "statistic"]))
    | kind | statistic |
    | --- | --- |
    | bottleneck | 1.235 |
    """
    rows = list(records)
    cols = [c for c in columns if not rows or c in rows[0]]
    lines = ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    lines += ["| " + " | ".join(_cell(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)
