"""One rank of ``dimlapse bench sharded`` (run under ``torch.distributed.run``).

An MLP of ``layers`` square ``width x width`` Linear layers, sharded one of three ways
(``kind``: ``fsdp``, each layer ``fully_shard``-ed on a 1-D mesh; ``hsdp``, the same on a
``(world / 2, 2)`` replicate x shard mesh; ``tp``, the layers alternately ``ColwiseParallel``
and ``RowwiseParallel`` on a 1-D mesh), trains ``steps`` SGD steps on random data, in one of
three arms:

- ``plain``: no capture (the baseline);
- ``recorded``: a Recorder capturing weights every ``every`` steps (two ring slots, one
  snapshot per flush: the least buffering capture allows);
- ``gather``: the control, what a recorder that gathers would hold: at the same steps every
  parameter gathered whole (``full_tensor()``) and kept until the next capture.

Writes one JSON file per rank (``<arm>-<world>-<rank>.json`` in ``out_dir``): ``full_mb``
(the whole model's parameters), ``shard_mb`` (this rank's local shards), ``peak_mb`` (this
process's peak RSS, ``ru_maxrss``) and, when recorded, ``writer_growth_mb`` (the writer
process's peak RSS, ``VmHWM``, before close, minus its RSS once started).
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from dimlapse.capture import CaptureOptions, Recorder

MB = 2**20


def _dt(p: torch.Tensor) -> Any:
    """A parameter that ``fully_shard`` made a DTensor (typed as a Parameter)."""
    return p


def _peak() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MB  # Linux: KiB


def _writer_mb(field: str) -> float:
    """``VmRSS`` or ``VmHWM`` (peak) of this process's child, the writer, in MB."""
    import os

    pid = os.getpid()
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        child = f.read().split()[0]
    with open(f"/proc/{child}/status") as f:
        line = next(x for x in f if x.startswith(field + ":"))
    return int(line.split()[1]) * 1024 / MB


def _shard(model: nn.Sequential, kind: str, world: int) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        ParallelStyle,
        RowwiseParallel,
        parallelize_module,
    )

    if kind == "tp":  # column-wise then row-wise pairs (Megatron's MLP)
        styles: dict[str, ParallelStyle] = {
            str(i): RowwiseParallel() if i % 2 else ColwiseParallel() for i in range(len(model))
        }
        parallelize_module(model, init_device_mesh("cpu", (world,)), styles)
        return
    mesh = None
    if kind == "hsdp":
        mesh = init_device_mesh("cpu", (world // 2, 2), mesh_dim_names=("replicate", "shard"))
    for layer in model:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)


def main(
    arm: str, width: int, layers: int, steps: int, every: int, out_dir: str, kind: str = "fsdp"
) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(width, width) for _ in range(layers)])
    full = sum(p.numel() * 4 for p in model.parameters()) / MB
    _shard(model, kind, world)
    shard = sum(_dt(p).to_local().numel() * 4 for p in model.parameters()) / MB
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.randn(8, width)
    rec = None
    if arm == "recorded":
        store = Path(out_dir) / f"sharded-{world}.zarr"
        slot = int(shard * MB) + 2**20  # two ring slots: the least capture allows
        options = CaptureOptions(mode="weights", flush_every=1, max_buffer_bytes=2 * slot)
        rec = Recorder(model, store, every=every, options=options, overwrite=True)
        writer_start = _writer_mb("VmRSS")
    held: list[torch.Tensor] = []
    for step in range(1, steps + 1):
        loss = model(x).pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
        if rec is not None:
            rec.step(loss)
        elif arm == "gather" and step % every == 0:  # what a recorder that gathers holds
            held = [_dt(p).full_tensor().clone() for p in model.parameters()]
            held[0].sum().item()  # the gathered values are really there
    writer = None
    if rec is not None:
        writer = _writer_mb("VmHWM") - writer_start  # every snapshot is written at capture
        rec.close()
    del held
    row = {
        "arm": arm, "world": world, "rank": rank, "full_mb": full, "shard_mb": shard,
        "peak_mb": _peak(), "writer_growth_mb": writer,
    }  # fmt: skip
    (Path(out_dir) / f"{kind}-{arm}-{world}-{rank}.json").write_text(json.dumps(row))
    dist.destroy_process_group()


if __name__ == "__main__":
    w, n, s, e = (int(v) for v in sys.argv[2:6])
    out = sys.argv[6] if len(sys.argv) > 6 else tempfile.mkdtemp()
    main(sys.argv[1], w, n, s, e, out, sys.argv[7] if len(sys.argv) > 7 else "fsdp")
