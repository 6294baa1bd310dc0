"""Runnable recipes: the model and data zoo, the train-and-capture loop, the CLI.

``python -m dimlapse.pipelines capture --model mlp`` trains the study's MLP on MNIST-1D and
records it into ``data/runs/mlp-mnist1d-s0.zarr``; ``replay`` materialises activations of a
weights-only run; ``bench-capture`` measures the Recorder's overhead.
"""

from ._data import Dataset, DataSpec, digits, load_dataset, mnist1d, modadd
from ._models import CNN, MLP, ResNet, Transformer, ViT, build_model
from ._recipes import DATASETS, DEFAULT_DATA, MODELS, Recipe
from ._replay import model_from_store, replay_run
from ._train import RunResult, train
from ._watch import Watcher, WatchResult, watch

__all__ = [
    "CNN",
    "DATASETS",
    "DEFAULT_DATA",
    "MLP",
    "MODELS",
    "DataSpec",
    "Dataset",
    "Recipe",
    "ResNet",
    "RunResult",
    "Transformer",
    "ViT",
    "WatchResult",
    "Watcher",
    "build_model",
    "digits",
    "load_dataset",
    "mnist1d",
    "modadd",
    "model_from_store",
    "replay_run",
    "train",
    "watch",
]
