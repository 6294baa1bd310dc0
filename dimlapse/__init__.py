"""dimlapse: record how a network's representations evolve during training, then analyse it.

The package's folders follow the data flow: :mod:`dimlapse.capture` (training side: the
Recorder writes a run store) -> :mod:`dimlapse.analyze` (reads run stores, writes results) ->
:mod:`dimlapse.pipelines` (recipes, workflows and the ``dimlapse`` command, using both).
"""

__version__ = "0.1.0"

#: Where the recipes and the CLI write run stores, relative to the working directory.
RUNS_DIR = "data/runs"
#: Where analysis results go: ``RESULTS_DIR/<run>/`` (``analysis.zarr``, figures, report).
RESULTS_DIR = "data/results"
