"""Sharded capture (FSDP2, HSDP, tensor parallelism): the same three lines on every rank, one
logical run, no gather.

A model sharded with ``torch.distributed.fsdp.fully_shard`` (or parallelized with
``parallelize_module``) holds DTensor parameters. Every rank records: its writer process writes
the rank's LOCAL shard (``p.to_local()``; the full parameter exists on no rank) into its own
blocks of the same logical arrays (``writer/_shards.py``); which rank writes which block of
what is decided once, from the placements (``_placements.py``: FSDP2 ``Shard(0)``, HSDP's
replica 0, tensor-parallel ``Shard(k)``/``Replicate()``). Under FSDP2 and HSDP the probe is
split by example across ranks (ceil-sized slices, as FSDP2 splits rows); under tensor
parallelism every rank feeds the whole probe. At capture steps every rank runs its probe
through the model under ``no_grad`` in eval mode, in lockstep (the forward's collectives), and
the writer stores its rows (or, for a tensor-parallel layer's local output, its feature
columns) of ``activations/<module>``. Scalars come from rank 0 (or their mean over ranks with
``average_scalars``). Buffers and unsharded parameters are written by rank 0.

Order at start: rank 0 takes the lease, creates (or trims, to resume) the layout and writes the
root attrs (mesh, placements, split); one broadcast tells every rank it may start (or why it
may not); then every rank starts its writer. At close every rank's writer records its own
status under ``shards/r<rank>``; after a barrier rank 0 marks the run ``complete`` when every
rank's record says so, else ``crashed``/``degraded``. A rank that dies leaves its writer to
mark its record ``crashed`` (rank 0's writer marks the root too); a reader keeps the prefix
every rank completed.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from torch import nn

from . import _validate
from . import store as run_store
from ._handover import HandOver
from ._placements import Plan, plan, plan_activations
from ._probe import probe_batch_size
from ._shard_session import ShardedSession
from ._taps import Tap, probe_forward
from .writer import (
    Block,
    SlotLayout,
    block_of,
)

log = logging.getLogger("dimlapse.capture")

try:  # torch builds without distributed have neither
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.tensor import DTensor
except ImportError:  # pragma: no cover - such builds cannot shard a model either
    FSDPModule = DTensor = None  # type: ignore[assignment,misc]


def is_sharded(model: nn.Module) -> bool:
    """Whether ``model`` holds DTensor parameters (FSDP2 ``fully_shard``)."""
    return DTensor is not None and any(isinstance(p, DTensor) for p in model.parameters())


def reshard(model: nn.Module) -> None:
    """Put every FSDP2 module back in its sharded state (a no-grad forward leaves the root's
    parameters gathered; the Recorder must see the sharded ones)."""
    for m in model.modules():
        if FSDPModule is not None and isinstance(m, FSDPModule):
            m.reshard()


def probe_slice(probe: Any, *, rank: int, world: int) -> tuple[Any, Block]:
    """This rank's examples of the probe: ceil(n / world) per rank; every rank needs one."""
    n = probe_batch_size(probe)
    block = block_of(n, rank=rank, world=world)
    if (world - 1) * block.size >= n:
        fits = [k * world for k in range(1, 4)] + [(k - 1) * world + 1 for k in (2, 3)]
        raise _validate.ProbeError(
            f"Expected `probe` to give every one of the {world} ranks at least one example "
            f"(ceil(n / {world}) per rank), got n={n}; use for example n in {sorted(fits)}"
        )
    sl = slice(block.start, block.start + block.local)
    if isinstance(probe, torch.Tensor):
        return probe[sl], block
    if isinstance(probe, dict):
        if "attention_mask" in probe:
            raise _validate.ProbeError(
                "Expected a probe without `attention_mask` for a sharded model: token samples "
                "under a mask depend on the whole probe, which no rank holds; pad-free probes "
                "are recorded"
            )
        return {k: v[sl] for k, v in probe.items()}, block
    return type(probe)(v[sl] for v in probe), block


class ShardedHandOver(HandOver):
    """The hand-over of one rank: local shards and this rank's probe rows into the ring."""

    def setup(self, plan: Plan, *, probe: Any, taps: dict[str, Tap]) -> None:
        self.plan, self.probe, self.taps = plan, probe, taps
        self.acts: dict[str, torch.Tensor] = {}
        self.lockstep = self._probe_forward if taps else None

    def sources(self) -> list[tuple[str, torch.Tensor]]:
        """(name, tensor) copied at a capture step: local shards, then (rank 0) the rest."""
        named = [(n, self.plan.sharded[n].to_local()) for n in self.plan.blocks]
        if self.plan.rank == 0:
            everything = {**dict(self.model.named_parameters()),
                          **dict(self.model.named_buffers())}  # fmt: skip
            named += [(n, everything[n]) for n in self.plan.whole]
        named += [(f"activations/{n}", v) for n, v in self.acts.items() if n in self.plan.acts]
        return named

    def bind(self, **kwargs: Any) -> None:
        super().bind(**kwargs)
        named = self.sources()
        self.names = [n for n, _ in named]
        self.tensors = [t for _, t in named]

    def _probe_forward(self, step: int) -> None:
        """Every rank, every capture step, also with capture off: FSDP2 all-gathers."""
        model = self.model
        modes = [(m, m.training) for m in model.modules()]
        rng = torch.get_rng_state()
        try:
            model.eval()
            with torch.no_grad():
                out = probe_forward(model, self.probe, self.taps)
        finally:
            for m, was in modes:
                m.training = was
            torch.set_rng_state(rng)
            reshard(model)
        self.acts = {n: out[n] for n in self.taps}

    def capture(self, step: int) -> bool:
        self.maybe_changed = False  # FSDP2 re-registers the same DTensors at every forward
        self.tensors = [t for _, t in self.sources()]
        return self.hand_over(step, snapshot=True, block=True)


def check_options(opts: Any, mode: str) -> None:
    """Refuse what a sharded run cannot keep aligned across ranks."""
    if opts.backpressure != "block":
        raise ValueError(
            f"Expected backpressure='block' for a sharded model, got {opts.backpressure!r}: a "
            "rank dropping a snapshot the others keep would misalign the ranks' rows"
        )
    if mode == "spectra":
        raise ValueError(
            "Expected mode 'full' or 'weights' for a sharded model, got 'spectra' (the "
            "spectrum of a sharded matrix needs every shard; analyse the stored shards instead)"
        )


def construct(rec: Any, model: nn.Module, store: Any, *, opts: Any, every: Any, probe: Any,
              probe_targets: Any, attrs: Any, overwrite: bool, resume: bool,
              start_step: int | None) -> None:  # fmt: skip
    """The Recorder's constructor for a sharded model, on every rank (``Recorder.__init__``
    calls it; it sets the same attributes)."""
    from ._recorder import MAX_SCALAR_CHUNK, ROWS_PER_MESSAGE, auto_flush_every
    from ._schedule import as_schedule, typical_interval
    from ._select import select_params
    from ._session import projection
    from .writer import DEFAULT_CODEC, parse_codec

    dist = torch.distributed
    rank, world = dist.get_rank(), dist.get_world_size()
    if not isinstance(store, str | os.PathLike) or str(store).startswith("memory://"):
        raise ValueError(
            f"Expected a store path or URL every rank can open for a sharded model, got "
            f"{store!r} (an in-memory store lives in one process); pass e.g. 'data/runs/x.zarr'"
        )
    reshard(model)  # a model used before the Recorder may hold gathered root parameters
    mode = opts.mode
    check_options(opts, mode)
    if overwrite and resume:
        raise ValueError("Expected at most one of `overwrite`, `resume` to be True, got both")
    codec = opts.codec
    if codec is None:
        codec = run_store.stored_attr(store, "codec", DEFAULT_CODEC) if resume else DEFAULT_CODEC
    codec = parse_codec(codec)
    if codec.startswith("bitround-"):
        raise ValueError(
            f"Expected a codec without filters for a sharded model, got {codec!r}; use 'lz4', "
            "'zstd', 'blosc-zstd', 'none' or 'float16'"
        )
    if start_step is not None:
        _validate.positive_int("start_step", start_step, minimum=0)
    user_attrs = _validate.check_user_attrs(run_store.check_json(attrs))
    schedule = as_schedule(every)
    # chunking from the model's full size (every rank the same; a shard is smaller)
    flush_every = opts.flush_every or auto_flush_every(model)
    stored = select_params(model, opts.params)
    the_plan = plan(model, rank=rank, world=world, stored=stored)
    if resume and probe is None and mode != "weights":
        probe, probe_targets = run_store.stored_probe(store)
    rows: Block | None = None
    local_probe, local_targets = probe, probe_targets  # tensor parallelism: the whole probe
    if probe is not None and the_plan.layout.split_probe:
        local_probe, rows = probe_slice(probe, rank=rank, world=world)
        if probe_targets is not None:
            local_targets = probe_targets[rows.start : rows.start + rows.local]
    _, taps = _validate.probe_taps(
        model, local_probe, local_targets, modules=opts.modules, positions=opts.positions,
        tokens=opts.tokens, mode=mode,
    )  # fmt: skip
    reshard(model)
    plan_activations(the_plan, model, taps, rows)
    n_probe = probe_batch_size(probe) if probe is not None else 0
    if mode == "full" and not taps:
        mode = "weights"
    rec.model, rec.store, rec.options = model, store, opts
    rec.strict, rec.mode, rec.schedule, rec.stored = opts.strict, mode, schedule, stored
    rec._taps, rec.modules = taps, list(taps)
    session = ShardedSession(store, the_plan, timeout=opts.writer_timeout)
    rec._session = session
    ho = ShardedHandOver(model, strict=opts.strict, world=world,
                         average=bool(opts.average_scalars))  # fmt: skip
    rec._ho = ho
    ho.setup(the_plan, probe=local_probe, taps=taps)
    ho.acts = {n: t.value for n, t in taps.items() if t.value is not None}
    scalar_chunk = min(MAX_SCALAR_CHUNK, flush_every * typical_interval(schedule))
    per_message = min(scalar_chunk, ROWS_PER_MESSAGE)
    ho.bind(schedule=schedule, backpressure="block", scalar_chunk=per_message,
            timeout=opts.writer_timeout)  # fmt: skip
    named = list(zip(ho.names, ho.tensors, strict=True))
    layout = SlotLayout.of(named, scalar_capacity=4 * per_message + 16)
    kept = [n for n in stored if the_plan.writes(n)]
    written = {n: taps[n] for n in the_plan.acts}
    projected = projection(
        layout, stored=kept, taps=written, schedule=schedule, mode=mode, codec=codec,
        full_every=0, total_steps=opts.total_steps, store=store,
    )  # fmt: skip
    ho.closed = False
    try:
        session.open(overwrite=overwrite, resume=resume, codec=codec, flush_every=flush_every,
                     probe=probe, timeout=opts.writer_timeout)  # fmt: skip
    except Exception as exc:
        session._broadcast(f"{type(exc).__name__}: {exc}")
        ho.closed = True
        session.release()
        raise
    try:
        started = session.start_sharded(
            model=model, schedule=schedule, mode=mode, taps=taps, stored=stored, layout=layout,
            probe=probe, targets=probe_targets, n_probe=n_probe, rows=rows, codec=codec,
            flush_every=flush_every, scalar_chunk=scalar_chunk, resume=resume,
            start_step=start_step, user_attrs=user_attrs, max_buffer_bytes=opts.max_buffer_bytes,
            writer=opts.writer, projected=projected, cuda=ho.cuda,
        )  # fmt: skip
    except Exception:
        _abandon(ho, session)
        raise
    ho.handle, ho.t0 = session.handle, started.t0
    if ho.cuda:  # a rank may copy nothing (an HSDP replica other than 0 recording weights)
        device = ho.tensors[0].device if ho.tensors else torch.cuda.current_device()
        ho.stream = torch.cuda.Stream(device)
    ho.current_step = (start_step or 0) if started.resume_at is None else started.resume_at
    ho.active = True
    if started.recapture:
        try:
            ho.capture(ho.current_step)  # the construction-time forward's rows are this step's
        except Exception:
            _abandon(ho, session)  # else the writer, waiting for more, holds the exit forever
            raise


def _abandon(ho: ShardedHandOver, session: ShardedSession) -> None:
    """A constructor that fails after the writer started: close it (``crashed``) and release."""
    ho.closed = True
    if session.handle is not None:
        session.handle.close({"status": "crashed"})
    session.release()
