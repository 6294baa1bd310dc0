"""The same three lines in every rank of a ``torch.distributed`` job.

The Recorder finds the default process group itself. Under data parallelism (DDP) the weights
are replicated, so one rank (``rank=0`` by default) records and every other rank's Recorder is
a no-op: nothing is written, no collective is issued at capture steps, so ranks cannot
deadlock there. With ``average_scalars=True`` every rank's ``rec.step()`` joins one
``all_reduce`` of its scalars (loss, user scalars), so the recording rank stores the mean over
ranks (the global batch's loss for equal shards); this is one small collective per step, in
every rank, in the same order.

``DistributedDataParallel`` and ``DataParallel`` wrappers are unwrapped, so parameter and
module names are those of a single-process run. Models sharded with FSDP2 (``fully_shard``,
DTensor parameters) are recorded by every rank, each writing its local shard (``_sharded.py``).
FSDP1 (``FullyShardedDataParallel``) is refused, pointing to FSDP2: its ranks hold flat
parameters whose shards cut across parameter boundaries, and ``use_orig_params=True`` exposes
per-parameter views of a rank's slice of that flat buffer (any part of a parameter, flattened,
often empty), not a block of rows, so recording it would mean a gather or a second layout.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the world size (0, 1 outside a process group)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DDP / DataParallel; refuse FSDP1 (``FullyShardedDataParallel``)."""
    if isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel):
        model = model.module
    fsdp1 = any(type(m).__name__ == "FullyShardedDataParallel" for m in model.modules())
    if fsdp1:
        raise ValueError(
            "Expected `model` to be sharded with FSDP2 (torch.distributed.fsdp.fully_shard), "
            "got an FSDP1 FullyShardedDataParallel model: its flat-parameter shards cut across "
            "parameters. Shard with fully_shard(module) instead (every rank then records its "
            "own rows of each parameter), or record a DDP replica"
        )
    return model


def average(row: dict[str, Any], *, world: int, device: torch.device) -> dict[str, Any]:
    """Mean of each scalar over ranks (one ``all_reduce``; every rank must call it)."""
    keys = sorted(row)
    values = [
        v.detach().reshape(()).to(device, torch.float64)
        if isinstance(v, torch.Tensor)
        else torch.tensor(float(v), dtype=torch.float64, device=device)
        for v in (row[k] for k in keys)
    ]
    if not values:
        return row
    flat = torch.stack(values)
    torch.distributed.all_reduce(flat)
    flat /= world
    if flat.is_cuda:
        return dict(zip(keys, flat.unbind(), strict=True))  # stays on the device: no sync
    return dict(zip(keys, flat.tolist(), strict=True))
