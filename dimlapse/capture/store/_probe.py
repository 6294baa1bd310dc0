"""The probe batch in the store (``probe/inputs``, ``probe/targets``): written once, read back
for a resume, ``replay`` and the analysis."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec

from ._open import existing_root


def _host(t: torch.Tensor) -> np.ndarray:
    t = t.detach().cpu()
    if t.is_floating_point():
        t = t.float()  # bfloat16 has no NumPy dtype
    return t.numpy()


def write_probe(root: zarr.Group, inputs: Any, targets: torch.Tensor | None) -> None:
    """Store the probe batch itself, lossless: ``probe/inputs`` for a tensor, ``inputs.<key>``
    / ``inputs.<i>`` for a dict / tuple probe (see ``_probe``), and ``probe/targets``."""
    from .._probe import probe_arrays

    group = root.require_group("probe")
    arrays = probe_arrays(inputs)
    if targets is not None:
        arrays["targets"] = _host(targets)
    for name, value in arrays.items():
        dims = ("probe", *(f"{name}.d{i}" for i in range(1, value.ndim)))
        if name in ("inputs", "targets"):
            dims = ("probe", *(f"probe.d{i}" for i in range(1, value.ndim)))
        floating = np.issubdtype(value.dtype, np.floating)
        arr = group.create_array(
            name,
            shape=value.shape,
            chunks=value.shape if value.size else "auto",
            dtype=value.dtype,
            fill_value=np.nan if floating else 0,
            compressors=[ZstdCodec(level=1), Crc32cCodec()],
            dimension_names=dims,
            overwrite=True,
        )
        arr[...] = value


def read_probe(root: zarr.Group) -> tuple[Any, torch.Tensor | None]:
    """The stored probe batch (a tensor, dict or tuple of CPU tensors) and targets or None."""
    from .._probe import probe_from_arrays

    group: Any = root["probe"]
    arrays = {name: np.asarray(arr[...]) for name, arr in group.arrays()}
    targets = torch.from_numpy(arrays["targets"]) if "targets" in arrays else None
    return probe_from_arrays(arrays), targets


def stored_probe(store: Any) -> tuple[Any, Any]:
    """The probe and targets stored in the run at ``store``, or ``(None, None)``."""
    root: Any = existing_root(store)
    if root is None:
        return None, None
    if "probe" in root and any(True for _ in root["probe"].arrays()):
        return read_probe(root)
    return None, None
