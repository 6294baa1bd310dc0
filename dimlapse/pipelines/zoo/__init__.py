"""The model and data zoo: recipes (frozen, JSON round-tripping configs), models, datasets.

Every MODEL has a default dataset that works offline (``DEFAULT_DATA``); ``Recipe.default``
fills a model's defaults; ``build_model`` builds a model from a :class:`DataSpec` alone, which
is how ``replay`` rebuilds a recorded model from its run store.
"""

from ._data import digits, load_dataset, mnist1d, modadd, stdlib
from ._dataset import DEFAULT_CACHE, Dataset, DataSpec
from ._models import CNN, MLP, ResNet, Transformer, ViT, build_model
from ._recipes import DATASETS, DEFAULT_DATA, MODELS, Recipe, check_run_name

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
