"""The model and data zoo: recipes (frozen, JSON round-tripping configs), models, datasets.

Every MODEL has a default dataset that works offline (``DEFAULT_DATA``); ``Recipe.default``
fills a model's defaults; ``build_model`` builds a model from a :class:`DataSpec` alone, which
is how ``replay`` rebuilds a recorded model from its run store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_names

if TYPE_CHECKING:  # static tools see the names eagerly
    from ._data import digits, load_dataset, mnist1d, modadd, stdlib
    from ._dataset import DEFAULT_CACHE, Dataset, DataSpec
    from ._models import CNN, MLP, ResNet, Transformer, ViT, build_model
    from ._recipes import DATASETS, DEFAULT_DATA, MODELS, Recipe, check_run_name

# Names load on first use (PEP 562): recipes and run names need no torch; models and data do.
_LAZY = {
    "digits": "._data",
    "load_dataset": "._data",
    "mnist1d": "._data",
    "modadd": "._data",
    "stdlib": "._data",
    "DEFAULT_CACHE": "._dataset",
    "Dataset": "._dataset",
    "DataSpec": "._dataset",
    "CNN": "._models",
    "MLP": "._models",
    "ResNet": "._models",
    "Transformer": "._models",
    "ViT": "._models",
    "build_model": "._models",
    "DATASETS": "._recipes",
    "DEFAULT_DATA": "._recipes",
    "MODELS": "._recipes",
    "Recipe": "._recipes",
    "check_run_name": "._recipes",
}


__getattr__, __dir__ = lazy_names(__name__, _LAZY)

__all__ = [
    "CNN",
    "DATASETS",
    "DEFAULT_CACHE",
    "DEFAULT_DATA",
    "MLP",
    "MODELS",
    "DataSpec",
    "Dataset",
    "Recipe",
    "ResNet",
    "Transformer",
    "ViT",
    "build_model",
    "check_run_name",
    "digits",
    "load_dataset",
    "mnist1d",
    "modadd",
    "stdlib",
]
