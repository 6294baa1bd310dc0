"""``make replay``: rebuild a run's model from its stored recipe and materialise activations."""

from __future__ import annotations

from pathlib import Path

from ..zoo import DataSpec, Recipe, build_model
from ._loop import resolve_device
from ._resume import store_attrs


def model_from_store(store: str | Path):
    """Rebuild the (untrained) model of a run captured through ``make capture``.

    Returns
    -------
    (model, recipe)
        The model built from the store's ``config`` (recipe) and ``dataset`` (data spec) attrs.
    """
    attrs = store_attrs(store)
    if not isinstance(attrs.get("config"), dict) or not isinstance(attrs.get("dataset"), dict):
        raise ValueError(
            f"Run store {str(store)!r} has no recipe (`config` and `dataset` attrs); it was not "
            f"captured through `make capture`. Call dimlapse.capture.replay(store, model) with "
            f"your own model instead."
        )
    recipe = Recipe.from_dict(attrs["config"])
    spec = DataSpec.from_dict(attrs["dataset"])
    return build_model(recipe.model, spec), recipe


def replay_run(store: str | Path, *, overwrite: bool = False, device: str = "cpu") -> int:
    """Materialise the probe activations of every stored weight snapshot of ``store``.

    Returns
    -------
    int
        The number of snapshots replayed.
    """
    from dimlapse.capture import replay

    model, recipe = model_from_store(store)
    model = model.to(resolve_device(device))
    return replay(
        str(store), model, positions=recipe.positions, tokens=recipe.tokens, overwrite=overwrite
    )
