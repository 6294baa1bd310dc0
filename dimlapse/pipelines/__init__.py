"""Runnable recipes and workflows, using both capture and analyze; the ``dimlapse`` command.

Sub-packages, one per workflow:

- :mod:`.zoo`: recipes, models, offline datasets;
- :mod:`.training`: the train-and-capture loop (``dimlapse capture --model mlp`` records the
  study's MLP on MNIST-1D into ``data/runs/mlp-mnist1d-s0.zarr``), resume, replay;
- :mod:`.watch`: follow a run live (terminal view, alert log, dashboard);
- :mod:`.study`: architectures over seeds; :mod:`.intervene`: disruption windows;
- :mod:`.bench`: the benchmarks; :mod:`.cli`: the ``dimlapse`` command.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dimlapse import RUNS_DIR

from ._lazy import lazy_names

if TYPE_CHECKING:  # static tools see the names eagerly
    from .training import RunResult, model_from_store, replay_run, train
    from .zoo import (
        CNN,
        DATASETS,
        DEFAULT_DATA,
        MLP,
        MODELS,
        Dataset,
        DataSpec,
        Recipe,
        ResNet,
        Transformer,
        ViT,
        build_model,
        digits,
        load_dataset,
        mnist1d,
        modadd,
    )

# Names load on first use (PEP 562): `dimlapse analyze` and the other commands that need no model
# import this package without torch (about 2 s of a small run's analysis).
_LAZY = {
    "RunResult": ".training",
    "model_from_store": ".training",
    "replay_run": ".training",
    "train": ".training",
    "CNN": ".zoo",
    "DATASETS": ".zoo",
    "DEFAULT_DATA": ".zoo",
    "MLP": ".zoo",
    "MODELS": ".zoo",
    "Dataset": ".zoo",
    "DataSpec": ".zoo",
    "Recipe": ".zoo",
    "ResNet": ".zoo",
    "Transformer": ".zoo",
    "ViT": ".zoo",
    "build_model": ".zoo",
    "digits": ".zoo",
    "load_dataset": ".zoo",
    "mnist1d": ".zoo",
    "modadd": ".zoo",
}


__getattr__, __dir__ = lazy_names(__name__, _LAZY)

__all__ = [
    "CNN",
    "DATASETS",
    "DEFAULT_DATA",
    "MLP",
    "MODELS",
    "RUNS_DIR",
    "DataSpec",
    "Dataset",
    "Recipe",
    "ResNet",
    "RunResult",
    "Transformer",
    "ViT",
    "build_model",
    "digits",
    "load_dataset",
    "mnist1d",
    "modadd",
    "model_from_store",
    "replay_run",
    "train",
]
