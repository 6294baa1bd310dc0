"""Probe batches as models take them: a tensor, a dict of keyword tensors, or a tuple.

A probe is one of

- a tensor ``(n, ...)``: the model is called as ``model(probe)``;
- a mapping ``{name: tensor (n, ...)}`` with identifier keys (``input_ids``,
  ``attention_mask``, ``pixel_values``): ``model(**probe)``;
- a tuple (or list) of tensors ``(n, ...)``: ``model(*probe)``.

Every tensor shares the leading example dimension ``n``. An ``attention_mask`` entry of a
mapping probe, ``(n, tokens)`` with nonzero for real tokens, tells the token reductions which
positions are padding (see ``_select``).

In the store, the probe is a flat set of arrays under ``probe/`` (:func:`probe_arrays`):
``inputs`` for a tensor, ``inputs.<key>`` for a mapping, ``inputs.<i>`` for a tuple. Mapping
keys are Python identifiers (they become keyword arguments), so a name whose suffix is all
digits is a tuple position and anything else a keyword: :func:`probe_from_arrays` rebuilds the
same structure from the names alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

import numpy as np
import torch

Probe: TypeAlias = torch.Tensor | Mapping[str, torch.Tensor] | tuple[torch.Tensor, ...]

MASK_KEY = "attention_mask"
_EXPECTED = (
    "a tensor (n, ...), a dict of tensors keyed by the model's keyword arguments "
    "({'input_ids': ..., 'attention_mask': ...}), or a tuple of positional input tensors"
)


def _parts(probe: Any, name: str = "probe") -> dict[str, torch.Tensor]:
    """``{array name: tensor}`` of a probe, validated (the names :func:`probe_arrays` uses)."""
    if isinstance(probe, torch.Tensor):
        parts = {"inputs": probe}
    elif isinstance(probe, Mapping):
        bad = [k for k in probe if not (isinstance(k, str) and k.isidentifier())]
        if bad:
            raise ValueError(
                f"Expected `{name}` keys to be keyword-argument names, got {bad!r}; "
                f"expected {_EXPECTED}"
            )
        parts = {f"inputs.{k}": v for k, v in probe.items()}
    elif isinstance(probe, Sequence) and not isinstance(probe, str | bytes):
        parts = {f"inputs.{i}": v for i, v in enumerate(probe)}
    else:
        raise ValueError(f"Expected `{name}` to be {_EXPECTED}, got {probe!r:.80}")
    if not parts:
        raise ValueError(f"Expected `{name}` to hold at least one tensor, got {probe!r}")
    for key, value in parts.items():
        if not isinstance(value, torch.Tensor) or value.ndim == 0:
            raise ValueError(
                f"Expected `{name}` entry {key.removeprefix('inputs.')!r} to be a tensor "
                f"(n, ...), got {value!r:.80}; expected {_EXPECTED}"
            )
    sizes = {key: int(v.shape[0]) for key, v in parts.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(
            f"Expected every tensor of `{name}` to have the same number of examples "
            f"(leading dimension), got {sizes}"
        )
    return parts


def probe_batch_size(probe: Probe) -> int:
    """Number of examples ``n`` in a probe (the shared leading dimension), validated.

    Examples
    --------
    >>> probe_batch_size({"input_ids": torch.zeros(3, 7, dtype=torch.long)})
    3
    """
    return int(next(iter(_parts(probe).values())).shape[0])


def probe_to(probe: Probe, device: torch.device | str) -> Probe:
    """The same probe structure with every tensor on ``device``."""
    _parts(probe)
    if isinstance(probe, torch.Tensor):
        return probe.to(device)
    if isinstance(probe, Mapping):
        return {k: v.to(device) for k, v in probe.items()}
    return tuple(v.to(device) for v in probe)


def probe_call(model: torch.nn.Module, probe: Probe) -> Any:
    """``model(probe)``, ``model(**probe)`` or ``model(*probe)`` as the structure says."""
    if isinstance(probe, torch.Tensor):
        return model(probe)
    if isinstance(probe, Mapping):
        return model(**probe)
    return model(*probe)


def probe_mask(probe: Probe) -> torch.Tensor | None:
    """The probe's attention mask as bool ``(n, tokens)`` (True: a real token), or None.

    Only a mapping probe with an ``attention_mask`` entry has one. Every example must keep at
    least one real token (the token reductions sample among them).
    """
    if not isinstance(probe, Mapping) or MASK_KEY not in probe:
        return None
    mask = probe[MASK_KEY]
    if not isinstance(mask, torch.Tensor) or mask.ndim != 2:
        raise ValueError(
            f"Expected `probe['{MASK_KEY}']` to be a (n, tokens) tensor, got {mask!r:.80}"
        )
    real = mask != 0  # (n, tokens)
    empty = torch.nonzero(~real.any(dim=1)).flatten().tolist()
    if empty:
        raise ValueError(
            f"Expected every probe example to have at least one real token in "
            f"`probe['{MASK_KEY}']`, got none in examples {empty[:10]}; drop those examples"
        )
    return real


def _host(t: torch.Tensor) -> np.ndarray:
    t = t.detach().cpu()
    if t.is_floating_point():
        t = t.float()  # bfloat16 has no NumPy dtype; float32 holds it exactly
    return t.numpy()


def probe_arrays(probe: Probe) -> dict[str, np.ndarray]:
    """The probe as host arrays named for ``probe/`` in the store.

    ``inputs`` for a tensor, ``inputs.<key>`` for a mapping, ``inputs.<i>`` for a tuple.
    Floating tensors are stored as float32 (exact for float16/bfloat16), others as they are.

    Examples
    --------
    >>> arrays = probe_arrays((torch.ones(2, 3), torch.zeros(2, dtype=torch.long)))
    >>> {k: v.shape for k, v in arrays.items()}
    {'inputs.0': (2, 3), 'inputs.1': (2,)}
    """
    return {key: _host(v) for key, v in _parts(probe).items()}


def probe_from_arrays(arrays: Mapping[str, np.ndarray]) -> Probe:
    """Rebuild the probe that :func:`probe_arrays` stored (CPU tensors).

    Names other than ``inputs`` and ``inputs.*`` (``targets``) are ignored. Tuple positions
    come back in numeric order.
    """
    names = [k for k in arrays if k == "inputs" or k.startswith("inputs.")]
    if names == ["inputs"]:
        return torch.from_numpy(np.asarray(arrays["inputs"]))
    suffixes = [k.removeprefix("inputs.") for k in names if k != "inputs"]
    if not suffixes or len(suffixes) != len(names):
        raise ValueError(
            "Expected stored probe arrays named either 'inputs' alone or 'inputs.<key>' / "
            f"'inputs.<i>', got {sorted(arrays)}"
        )
    tensors = {s: torch.from_numpy(np.asarray(arrays[f"inputs.{s}"])) for s in suffixes}
    if all(s.isdigit() for s in suffixes):
        order = sorted(tensors, key=int)
        if [int(s) for s in order] != list(range(len(order))):
            raise ValueError(f"Expected tuple probe positions 0..{len(order) - 1}, got {order}")
        return tuple(tensors[s] for s in order)
    if any(s.isdigit() for s in suffixes):
        raise ValueError(
            f"Expected stored probe names of one kind (keys or positions), got {names}"
        )
    return tensors


def probe_equal(a: Probe, b: Probe) -> bool:
    """Whether two probes have the same structure, shapes and values (compared on the host)."""
    pa, pb = probe_arrays(a), probe_arrays(b)
    return pa.keys() == pb.keys() and all(
        pa[k].shape == pb[k].shape and np.array_equal(pa[k], pb[k].astype(pa[k].dtype)) for k in pa
    )


def probe_summary(probe: Probe) -> dict[str, Any]:
    """JSON description of a probe for the root attrs: ``n``, ``structure`` and per-array
    ``shape`` and ``dtype`` (original torch dtypes)."""
    parts = _parts(probe)
    structure = (
        "tensor"
        if isinstance(probe, torch.Tensor)
        else "mapping"
        if isinstance(probe, Mapping)
        else "tuple"
    )
    return {
        "n": probe_batch_size(probe),
        "structure": structure,
        "arrays": {
            k: {"shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch.")}
            for k, v in parts.items()
        },
    }
