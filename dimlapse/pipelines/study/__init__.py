"""``dimlapse study``: recipes over seeds, one comparison report per architecture.

``run_study`` trains, captures and analyses every (model, seed), reduces each run to the
study's numbers (``CLAIMS``) and writes ``study.json``, ``study.md`` and a figure; intervals
are bootstrap percentile intervals over seeds (``mean_ci``), so they stay within each
quantity's range. Earlier runs and results are kept unless ``overwrite`` (or ``reuse``).
``add_arguments`` / ``main`` are the command.
"""

from ._claims import CLAIMS
from ._run import (
    DEFAULT_SEEDS,
    DEFAULT_STEPS,
    STUDY_MODELS,
    add_arguments,
    main,
    mean_ci,
    run_study,
)

__all__ = [
    "CLAIMS",
    "DEFAULT_SEEDS",
    "DEFAULT_STEPS",
    "STUDY_MODELS",
    "add_arguments",
    "main",
    "mean_ci",
    "run_study",
]
