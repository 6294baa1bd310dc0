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
    """Load the last complete snapshot of ``store`` into ``model``; return its step.

    Parameters and buffers come from the ``weights`` group (matrices) and the ``state`` group
    (everything else: biases, norms, BatchNorm statistics). The last complete snapshot is the
    shortest valid ``step`` prefix across both groups. A tensor the store lacks raises
    ``ValueError``, because the resumed run would silently differ from the original.
    """
    group = zarr.open_group(str(store), mode="r")
    groups: list[Any] = [group[g] for g in ("weights", "state") if g in group]
    if not groups:
        raise ValueError(f"Cannot resume {str(store)!r}: it has no weights or state group")
    steps = [np.asarray(g["step"][:]) for g in groups]
    n = min(complete_rows(s) for s in steps)
    if n == 0:
        raise ValueError(f"Cannot resume {str(store)!r}: it holds no complete snapshot")
    step = int(steps[0][n - 1])
    state = model.state_dict()
    new = {}
    for k, v in state.items():
        source = next((g for g in groups if k in g), None)
        if source is None:
            if v.is_floating_point():
                raise ValueError(
                    f"Cannot resume {str(store)!r}: the store lacks {k!r}; start over with "
                    f"--overwrite"
                )
            new[k] = v  # e.g. BatchNorm's num_batches_tracked when not stored
            continue
        new[k] = torch.as_tensor(np.asarray(source[k][n - 1])).to(v)
    model.load_state_dict(new)
    return step
