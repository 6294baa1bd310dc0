"""``dimlapse intervene``: disrupt training in step windows and measure the lasting effects.

``run_interventions`` trains a baseline and one run per window (same recipe and seed), with
a ``Disruption`` of a kind in ``KINDS`` applied inside its window; ``critical_period_curve``
and ``run_critical_periods`` (over depths, deficits and seeds; ``summarise_critical``,
``write_critical``) are the deep-linear critical-period check (``--kind deeplinear``) of
Kleinman, Achille and Soatto (ICLR 2024), published protocol by default. ``add_arguments`` /
``main`` are the command.
"""

from ._critical import run_critical_periods, summarise_critical, write_critical
from ._deeplinear import Completion, critical_period_curve, train_completion
from ._run import add_arguments, main, run_interventions, summarise
from ._windows import DEFAULT_STRENGTH, KINDS, Disruption, parse_windows

__all__ = [
    "DEFAULT_STRENGTH",
    "KINDS",
    "Completion",
    "Disruption",
    "add_arguments",
    "critical_period_curve",
    "main",
    "parse_windows",
    "run_critical_periods",
    "run_interventions",
    "summarise",
    "summarise_critical",
    "train_completion",
    "write_critical",
]
