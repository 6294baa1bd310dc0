"""The train-and-capture loop of a recipe, resuming it, and replaying a weights-only run.

``train(recipe, store)`` trains the recipe's model on its data and records it with a
:class:`dimlapse.capture.Recorder`; ``replay_run`` rebuilds the model from a run store's
recipe and materialises its probe activations from the stored weights.
"""

from ._loop import DataSizeError, RunResult, default_threads, resolve_device, train
from ._replay import model_from_store, replay_run
from ._resume import last_snapshot, store_attrs

__all__ = [
    "DataSizeError",
    "RunResult",
    "default_threads",
    "last_snapshot",
    "model_from_store",
    "replay_run",
    "resolve_device",
    "store_attrs",
    "train",
]
