"""Reading back what a run store needs for ``--resume`` and ``replay``: attrs and last weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn


def store_attrs(store: str | Path) -> dict[str, Any]:
    """The root attrs of a run store (raises ``FileNotFoundError`` naming the path if absent)."""
    from dimlapse.capture.store import open_root

    try:
        group = open_root(str(store))
    except FileNotFoundError as e:
        raise FileNotFoundError(f"No run store at {str(store)!r}") from e
    return dict(group.attrs)


def last_snapshot(store: str | Path, model: nn.Module) -> int:
    """Load the last complete snapshot of ``store`` into ``model``; return its step.

    Parameters and buffers come from the ``weights`` group (matrices) and the ``state`` group
    (everything else: biases, norms, BatchNorm statistics). The last complete snapshot is the
    shortest valid ``step`` prefix across both groups. A tensor the store lacks raises
    ``ValueError``, because the resumed run would silently differ from the original.
    The last complete snapshot is :func:`dimlapse.capture.store.last_complete`'s, the one the
    Recorder resumes from. In spectra mode it must also be a full snapshot.
    """
    from dimlapse.capture.store import last_complete, open_root

    group = open_root(str(store))
    groups: list[Any] = [group[g] for g in ("weights", "state") if g in group]
    if not groups:
        raise ValueError(f"Cannot resume {str(store)!r}: it has no weights or state group")
    n_all, step_all = last_complete(group)
    if n_all == 0 or step_all is None:
        raise ValueError(f"Cannot resume {str(store)!r}: it holds no complete snapshot")
    steps = np.asarray(groups[0]["step"][:])
    n = int(((steps >= 0) & (steps <= step_all)).sum())  # full snapshots up to that step
    if n == 0:
        raise ValueError(f"Cannot resume {str(store)!r}: it holds no complete snapshot")
    step = int(steps[n - 1])
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
