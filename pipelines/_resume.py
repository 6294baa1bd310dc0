"""Reading back what a run store needs for ``--resume`` and ``replay``: attrs and last weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr
from torch import nn


def store_attrs(store: str | Path) -> dict[str, Any]:
    """The root attrs of a run store (raises ``FileNotFoundError`` naming the path if absent)."""
    try:
        group = zarr.open_group(str(store), mode="r")
    except FileNotFoundError as e:
        raise FileNotFoundError(f"No run store at {str(store)!r}") from e
    return dict(group.attrs)


def complete_rows(steps: np.ndarray) -> int:
    """Length of the prefix of a group's ``step`` index holding valid (>= 0) entries.

    The writer writes ``step`` last at each flush, so this marks the last complete snapshot.
    """
    bad = np.flatnonzero(steps < 0)
    return int(bad[0]) if bad.size else len(steps)


def last_snapshot(store: str | Path, model: nn.Module) -> int:
    """Load the last complete weight snapshot of ``store`` into ``model``; return its step.

    Every parameter and buffer the store holds is restored; entries the store does not hold
    (for example biases when only matrices were captured) raise ``ValueError``, because the
    resumed run would silently differ from the original.
    """
    group = zarr.open_group(str(store), mode="r")
    if "weights" not in group:
        raise ValueError(f"Cannot resume {str(store)!r}: it has no weights group")
    weights = group["weights"]
    n = complete_rows(np.asarray(weights["step"][:]))
    if n == 0:
        raise ValueError(f"Cannot resume {str(store)!r}: it holds no complete snapshot")
    step = int(weights["step"][n - 1])
    state = model.state_dict()
    missing = [k for k, v in state.items() if v.is_floating_point() and k not in weights]
    if missing:
        raise ValueError(
            f"Cannot resume {str(store)!r}: the store lacks {missing[:5]} "
            f"({len(missing)} tensors); capture with params='*' to make runs resumable, "
            f"or start over with --overwrite"
        )
    new = {
        k: torch.as_tensor(np.asarray(weights[k][n - 1])).to(v) if k in weights else v
        for k, v in state.items()
    }
    model.load_state_dict(new)
    return step
