"""Which rank writes which block of each DTensor parameter and probe activation.

Three kinds of job are recorded without a gather (every rank writes what it holds, and no two
ranks write one chunk):

- ``fsdp``: FSDP2 (``fully_shard``) on a 1-D mesh of all ranks; parameters ``(Shard(0),)``.
  Every rank writes its row block; the probe is split by example over the ranks.
- ``hsdp``: FSDP2 on a 2-D mesh (replicate, shard); parameters ``(Replicate(), Shard(0))``.
  The replicas hold identical shards, so only the ranks of replica 0 write weights (shard
  ``i`` of the shard dimension: row block ``i`` of ``ceil(d0 / S)``); the probe is still split
  by example over all ranks (every rank runs its slice), so every rank writes activations.
- ``tp``: tensor parallelism (``parallelize_module``) on a 1-D mesh of all ranks, without
  FSDP2. ``Shard(k)`` parameters (a column-wise layer's ``Shard(0)``, a row-wise layer's
  ``Shard(1)``) are written as blocks along ``dk``; ``Replicate()`` ones (a row-wise bias) by
  rank 0. Every rank feeds the whole probe; a selected module's output is a block of features
  when it is a tensor-parallel ``nn.Linear``/``nn.Embedding``'s local output slice (its size
  compared, over all ranks, with the layer's output features) or a DTensor placed
  ``Shard(-1)``, and whole (written by rank 0) when every rank holds all of them. A module
  whose output layout cannot be told that way is refused.

Anything else (FSDP2 combined with tensor parallelism, ``Shard`` on a replicate dimension,
``Partial``, meshes not spanning every rank) is refused, naming the parameter and what works.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ._taps import Tap
from .writer import Block, block_of

try:  # torch builds without distributed have neither
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.tensor import DTensor, Replicate, Shard
except ImportError:  # pragma: no cover - such builds cannot shard a model either
    FSDPModule = DTensor = Replicate = Shard = None  # type: ignore[assignment,misc]

WORKS = (
    "recorded: FSDP2 on a 1-D mesh of all ranks (Shard(0),), HSDP on a 2-D (replicate, shard) "
    "mesh (Replicate(), Shard(0)), or tensor parallelism alone on a 1-D mesh of all ranks "
    "(Shard(k) or Replicate())"
)


@dataclass(frozen=True)
class Layout:
    """The job's parallelism as the store records it (root attrs ``sharded``)."""

    kind: str  # "fsdp" | "hsdp" | "tp"
    mesh_shape: tuple[int, ...]
    dim_names: tuple[str, ...] | None
    coordinate: tuple[int, ...]  # this rank's place in the mesh

    @property
    def split_probe(self) -> bool:
        """Whether the probe is split by example over the ranks (else every rank feeds it)."""
        return self.kind != "tp"


def layout(model: nn.Module, *, world: int) -> tuple[Layout, dict[str, Any]]:
    """Check every DTensor parameter's mesh and placements; the job's layout and the DTensor
    parameters by name."""
    dtensors = {n: p for n, p in model.named_parameters() if isinstance(p, DTensor)}
    fsdp = any(isinstance(m, FSDPModule) for m in model.modules())
    meshes = {(tuple(p.device_mesh.shape), p.device_mesh.mesh_dim_names) for p in dtensors.values()}
    if len(meshes) > 1:
        raise ValueError(
            f"Expected every sharded parameter on one device mesh, got meshes {sorted(meshes)}; "
            + WORKS
        )
    first = next(iter(dtensors.values()))
    mesh = first.device_mesh
    shape, names = tuple(mesh.shape), mesh.mesh_dim_names
    kind = "hsdp" if fsdp and mesh.ndim == 2 else ("fsdp" if fsdp else "tp")
    for name, p in dtensors.items():
        if not _recordable(kind, tuple(p.placements), p.ndim) or mesh.size() != world:
            what = "FSDP2 with tensor parallelism" if fsdp and mesh.ndim == 2 else kind
            raise ValueError(
                f"Expected placements dimlapse can keep aligned across ranks ({WORKS}), got "
                f"{name!r} placed {tuple(p.placements)} on a mesh of shape {shape} "
                f"({what}, world size {world}); record the model sharded one of those ways"
            )
    if mesh.mesh.flatten().tolist() != list(range(world)):
        raise ValueError(
            f"Expected the device mesh to hold the ranks in order (init_device_mesh's), got "
            f"{mesh.mesh.tolist()}; rank 0 must hold the first shard of every parameter"
        )
    coordinate = mesh.get_coordinate()
    if coordinate is None:  # pragma: no cover - the mesh spans every rank (checked above)
        raise ValueError("Expected this rank in the sharded parameters' mesh")
    return Layout(kind, shape, names, tuple(coordinate)), dtensors


def _recordable(kind: str, placements: tuple[Any, ...], ndim: int) -> bool:
    if kind == "fsdp":
        return placements == (Shard(0),)
    if kind == "hsdp":
        return placements == (Replicate(), Shard(0))
    if len(placements) != 1:  # tensor parallelism on a 2-D mesh
        return False
    (p,) = placements
    return p == Replicate() or (isinstance(p, Shard) and 0 <= p.dim < ndim)


def weight_blocks(lay: Layout, dtensors: dict[str, Any], *, rank: int) -> dict[str, Block | None]:
    """The DTensor parameters this rank writes: name -> its block (None: the whole tensor,
    which rank 0 writes). Replicas other than HSDP's replica 0, and ranks other than 0 for
    replicated parameters, write none of them."""
    out: dict[str, Block | None] = {}
    if lay.kind == "hsdp" and lay.coordinate[0] != 0:
        return out  # an identical replica of replica 0's shards
    for name, p in dtensors.items():
        place = p.placements[-1]
        if isinstance(place, Shard):
            shards, index = lay.mesh_shape[-1], lay.coordinate[-1]
            out[name] = block_of(p.shape[place.dim], rank=index, world=shards, axis=place.dim)
        elif rank == 0:
            out[name] = None  # Replicate(): rank 0 writes it whole
    return out


def block_of_rank0(lay: Layout, p: Any) -> Block | None:
    """The block of ``p`` the first shard holds (the chunk grid every rank shares; None:
    written whole)."""
    place = p.placements[-1]
    if not isinstance(place, Shard):
        return None
    return block_of(p.shape[place.dim], rank=0, world=lay.mesh_shape[-1], axis=place.dim)


def placements(dtensors: dict[str, Any]) -> dict[str, list[str]]:
    """Name -> the placements as strings (root attrs)."""
    return {n: [repr(x) for x in p.placements] for n, p in dtensors.items()}


def activation_blocks(
    model: nn.Module, taps: dict[str, Tap], *, rank: int, world: int
) -> dict[str, tuple[int, Block | None]]:
    """Tensor parallelism: each tap's full features and this rank's block of them (None: the
    whole output, written by rank 0; other ranks leave those out). Collective: every rank
    calls it with the same taps, after the construction-time forward (it gathers each
    output's local feature count, never the output)."""
    local = [int(t.value.shape[-1]) if t.value is not None else -1 for t in taps.values()]
    counts: list[Any] = [None] * world
    torch.distributed.all_gather_object(counts, local)  # (rank, module) local features
    out: dict[str, tuple[int, Block | None]] = {}
    for i, (name, tap) in enumerate(taps.items()):
        seen = [int(c[i]) for c in counts]
        full = _full_features(model.get_submodule(name), tap, seen)
        if full is None:
            raise ValueError(
                f"Expected the selected modules of a tensor-parallel model to be layers whose "
                f"output layout dimlapse can tell (an nn.Linear or nn.Embedding parallelized "
                f"with ColwiseParallel/RowwiseParallel, or a DTensor output placed Replicate() "
                f"or Shard(-1)), got {name!r} ({tap.module_type}, {seen} output features on "
                "the ranks); select those layers with CaptureOptions(modules=[...]), or record "
                "weights only with CaptureOptions(mode='weights')"
            )
        blocks = [block_of(full, rank=r, world=world, axis=1) for r in range(world)]
        if seen == [full] * world:
            if rank == 0:
                out[name] = (full, None)  # every rank holds it whole: rank 0 writes it
        elif seen == [b.local for b in blocks]:
            out[name] = (full, blocks[rank])
        else:
            raise ValueError(
                f"Expected the output of {name!r} to hold all {full} features on every rank, or "
                f"the ranks' blocks of them ({[b.local for b in blocks]}), got {seen}; select "
                "other modules with CaptureOptions(modules=[...]), or record weights only with "
                "CaptureOptions(mode='weights')"
            )
    return out


def _full_features(module: nn.Module, tap: Tap, seen: list[int]) -> int | None:
    """A tap's full output features: a DTensor output's placements say whether the ranks'
    features are whole (``Replicate()``) or blocks (``Shard`` of the last dim); a
    tensor-parallel ``nn.Linear``'s or ``nn.Embedding``'s weight gives its output features.
    None: neither (the layout cannot be told)."""
    if tap.placed is not None:
        placed, ndim = tap.placed
        if placed == (Replicate(),):
            return seen[0]
        if len(placed) == 1 and isinstance(placed[0], Shard) and placed[0].dim in (-1, ndim - 1):
            return sum(seen)
        return None
    weight = getattr(module, "weight", None)
    if not isinstance(weight, DTensor):
        return None
    if isinstance(module, nn.Linear):
        return int(weight.shape[0])
    if isinstance(module, nn.Embedding):
        return int(weight.shape[1])
    return None


@dataclass
class Plan:
    """What this rank records of a sharded model."""

    rank: int
    world: int
    layout: Layout
    sharded: dict[str, Any]  # name -> every DTensor parameter
    blocks: dict[str, Block | None]  # the DTensor parameters this rank writes (None: whole)
    whole: list[str]  # unsharded parameters and buffers: rank 0 writes them
    attrs: dict[str, Any]  # the root attrs' ``sharded`` entry
    # the probe activations this rank writes: module -> (features, its block; None: whole)
    acts: dict[str, tuple[int, Block | None]] = field(default_factory=dict)

    def writes(self, name: str) -> bool:
        """Whether this rank writes parameter or buffer ``name``."""
        return name in self.blocks or (self.rank == 0 and name in self.whole)


def plan(model: nn.Module, *, rank: int, world: int, stored: list[str]) -> Plan:
    """Check the placements (:func:`layout`) and split the params: what this rank records."""
    lay, sharded = layout(model, world=world)
    blocks = weight_blocks(lay, sharded, rank=rank)
    whole = [n for n, _ in model.named_parameters() if n not in sharded]
    whole += [n for n, _ in model.named_buffers()]
    first = {n: block_of_rank0(lay, p) for n, p in sharded.items()}
    attrs = {
        "world_size": world,
        "parallelism": lay.kind,
        "mesh_shape": list(lay.mesh_shape),
        "mesh_dim_names": list(lay.dim_names) if lay.dim_names else None,
        "placements": placements(sharded),
        "shard_rows": {n: b.size for n, b in first.items() if b is not None and b.axis == 0},
        "shard_blocks": {
            n: {"dim": b.axis, "size": b.size} for n, b in first.items() if b is not None
        },
        "recorded_by": "every rank: its local shard (p.to_local()), no gather"
        + (" (replica 0's ranks write the weights)" if lay.kind == "hsdp" else ""),
        "stored": [n for n in stored if n in sharded],
    }
    return Plan(rank=rank, world=world, layout=lay, sharded=sharded, blocks=blocks,
                whole=whole, attrs=attrs)  # fmt: skip


def plan_activations(
    the_plan: Plan, model: nn.Module, taps: dict[str, Tap], rows: Block | None
) -> None:
    """The probe activations this rank writes (``the_plan.acts``), after the construction-time
    forward: its rows of every module (probe split by example), or under tensor parallelism its
    block of features of each module (a collective: every rank calls it)."""
    if not taps:
        return
    if the_plan.layout.split_probe:
        assert rows is not None  # a split probe gave this rank its rows
        for n, tap in taps.items():
            per = int((tap.meta or {}).get("rows_per_example", 1))
            features = int(tap.value.shape[-1]) if tap.value is not None else 0
            the_plan.acts[n] = (
                features,
                Block(length=rows.length * per, size=rows.size * per, index=the_plan.rank),
            )
    else:
        the_plan.acts = activation_blocks(model, taps, rank=the_plan.rank, world=the_plan.world)
    dim = "sample" if the_plan.layout.split_probe else "feature"
    the_plan.attrs["activation_blocks"] = {  # rank 0's: it writes every module
        n: {"dim": dim, "size": b.size} if b is not None else "whole"
        for n, (_, b) in the_plan.acts.items()
    }
