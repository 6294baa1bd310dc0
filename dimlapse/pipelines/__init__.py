"""Runnable recipes and workflows, using both capture and analyze; the ``dimlapse`` command.

Sub-packages, one per workflow:

- :mod:`.zoo`: recipes, models, offline datasets;
- :mod:`.training`: the train-and-capture loop (``dimlapse capture --model mlp`` records the
  study's MLP on MNIST-1D into ``data/runs/mlp-mnist1d-s0.zarr``), resume, replay;
- :mod:`.watch`: follow a run live (terminal view, alert log, dashboard);
- :mod:`.study`: architectures over seeds; :mod:`.intervene`: disruption windows;
- :mod:`.bench`: the benchmarks; :mod:`.cli`: the ``dimlapse`` command.
"""

from dimlapse import RUNS_DIR

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
