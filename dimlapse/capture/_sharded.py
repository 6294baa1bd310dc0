"""Sharded (FSDP2) capture: the same three lines on every rank, one logical run, no gather.

A model sharded with ``torch.distributed.fsdp.fully_shard`` holds DTensor parameters placed
``Shard(0)`` on a 1-D mesh of all ranks. Every rank records: its writer process writes the
rank's LOCAL shard (``p.to_local()``; the full parameter exists on no rank) into its own chunk
column of the same logical arrays (``writer/_shards.py``). The probe is split by example across
ranks (ceil-sized slices, as FSDP2 splits rows); at capture steps every rank runs its slice
through the model under ``no_grad`` in eval mode, in lockstep (FSDP2's forward all-gathers),
and the writer stores its rows of ``activations/<module>``. Scalars come from rank 0 (or their
mean over ranks with ``average_scalars``). Buffers and unsharded parameters are written by
rank 0.

Order at start: rank 0 takes the lease, creates (or trims, to resume) the layout and writes the
root attrs (mesh, placements, split); one broadcast tells every rank it may start (or why it
may not); then every rank starts its writer. At close every rank's writer records its own
status under ``shards/r<rank>``; after a barrier rank 0 marks the run ``complete`` when every
rank's record says so, else ``crashed``/``degraded``. A rank that dies leaves its writer to
mark its record ``crashed`` (rank 0's writer marks the root too); a reader keeps the prefix
every rank completed.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from . import _validate
from . import store as run_store
from ._handover import HandOver
from ._probe import probe_batch_size
from ._session import RunSession, Started
from ._taps import Tap, probe_forward
from .writer import (
    Block,
    Ring,
    ShardSpec,
    SlotLayout,
    SnapshotSink,
    WorkSpec,
    block_of,
    declare_sharded,
    owner,
    slot_count,
    start_writer,
)

log = logging.getLogger("dimlapse.capture")

try:  # torch builds without distributed have neither
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.tensor import DTensor, Shard
except ImportError:  # pragma: no cover - such builds cannot shard a model either
    FSDPModule = DTensor = Shard = None  # type: ignore[assignment,misc]


def is_sharded(model: nn.Module) -> bool:
    """Whether ``model`` holds DTensor parameters (FSDP2 ``fully_shard``)."""
    return DTensor is not None and any(isinstance(p, DTensor) for p in model.parameters())


def reshard(model: nn.Module) -> None:
    """Put every FSDP2 module back in its sharded state (a no-grad forward leaves the root's
    parameters gathered; the Recorder must see the sharded ones)."""
    for m in model.modules():
        if FSDPModule is not None and isinstance(m, FSDPModule):
            m.reshard()


@dataclass
class Plan:
    """What this rank records of a sharded model."""

    rank: int
    world: int
    sharded: dict[str, Any]  # name -> the DTensor parameter (placed Shard(0))
    whole: list[str]  # unsharded parameters and buffers: rank 0 writes them
    attrs: dict[str, Any]  # the root attrs' ``sharded`` entry


def plan(model: nn.Module, *, rank: int, world: int, stored: list[str]) -> Plan:
    """Check the placements (``Shard(0)`` on a 1-D mesh of every rank) and split the params."""
    sharded: dict[str, Any] = {}
    placements: dict[str, list[str]] = {}
    mesh_shape: list[int] = []
    for name, p in model.named_parameters():
        if not isinstance(p, DTensor):
            continue
        mesh = p.device_mesh
        if mesh.ndim != 1 or tuple(p.placements) != (Shard(0),) or mesh.size() != world:
            raise ValueError(
                f"Expected sharded parameters placed (Shard(0),) on a 1-D mesh of all {world} "
                f"ranks (FSDP2 fully_shard), got {name!r} placed {tuple(p.placements)} on a mesh "
                f"of shape {tuple(mesh.shape)}; hybrid (HSDP) and tensor-parallel placements "
                "are not recorded yet"
            )
        sharded[name] = p
        placements[name] = [repr(x) for x in p.placements]
        mesh_shape = list(mesh.shape)
    whole = [n for n, _ in model.named_parameters() if n not in sharded]
    whole += [n for n, _ in model.named_buffers()]
    attrs = {
        "world_size": world,
        "mesh_shape": mesh_shape,
        "placements": placements,
        "shard_rows": {
            n: block_of(p.shape[0], rank=0, world=world).size for n, p in sharded.items()
        },
        "recorded_by": "every rank: its local shard (p.to_local()), no gather",
        "stored": [n for n in stored if n in sharded],
    }
    return Plan(rank=rank, world=world, sharded=sharded, whole=whole, attrs=attrs)


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
        named = [(n, p.to_local()) for n, p in self.plan.sharded.items()]
        if self.plan.rank == 0:
            everything = {**dict(self.model.named_parameters()),
                          **dict(self.model.named_buffers())}  # fmt: skip
            named += [(n, everything[n]) for n in self.plan.whole]
        named += [(f"activations/{n}", v) for n, v in self.acts.items()]
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


def check_options(opts: Any, mode: str, world: int) -> None:
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
    if world < 2:
        raise ValueError(f"Expected a sharded model in a job of 2 or more ranks, got {world}")


class ShardedSession(RunSession):
    """The run session of one rank of a sharded job (``RunSession`` on rank 0, plus the
    start-up broadcast and the closing barrier)."""

    def __init__(self, store: Any, plan: Plan, *, timeout: float) -> None:
        super().__init__(store)
        self.plan, self.timeout = plan, timeout

    def open(self, **kwargs: Any) -> None:
        if self.plan.rank == 0:
            super().open(**kwargs)

    def start_sharded(self, *, model: nn.Module, schedule: Any, mode: str,
                      taps: dict[str, Tap], stored: list[str], layout: SlotLayout, probe: Any,
                      targets: Any, n_probe: int, rows: Block | None, codec: str,
                      flush_every: int, scalar_chunk: int, resume: bool,
                      start_step: int | None, user_attrs: dict[str, Any],
                      max_buffer_bytes: int, writer: str, projected: dict[str, Any],
                      cuda: bool, acts: dict[str, torch.Tensor]) -> Started:  # fmt: skip
        """Rank 0 lays the run out; a broadcast releases every rank; each starts its writer."""
        plan = self.plan
        error: str | None = None
        if plan.rank == 0:
            try:
                self._layout(model=model, taps=taps, stored=stored, rows=rows, n_probe=n_probe,
                             flush_every=flush_every, codec=codec,
                             features={n: int(t.shape[-1]) for n, t in acts.items()})  # fmt: skip
                root = self.root
                prior: dict[str, Any] = dict(root.attrs) if resume else {}
                if resume and prior.get("sharded", {}).get("world_size") != plan.world:
                    raise ValueError(
                        f"Expected the job to have the world size of the run being resumed "
                        f"({prior.get('sharded', {}).get('world_size')}), got {plan.world}"
                    )
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                self._broadcast(error)
                raise
        groups = self._groups(mode, taps)
        spec = self._spec(stored=stored, taps=taps, rows=rows, model=model)
        sink_kwargs: dict[str, Any] = {
            "chunk": flush_every,
            "scalar_chunk": scalar_chunk,
            "codec": codec,
            "probe_examples": n_probe,
            "groups": groups if plan.rank == 0 else tuple(spec.blocks),
            "shard": spec,
        }
        if plan.rank == 0:
            sink = SnapshotSink(self.root, **sink_kwargs)
            resume_at, recapture = (
                run_store.trim_for_resume(sink, start_step) if resume else (None, True)
            )
            created = prior.get("created", self.created)
            attrs = run_store.root_attrs(
                model=model, schedule=schedule, probe=probe, has_targets=targets is not None,
                codec=codec, flush_every=flush_every, scalar_chunk=scalar_chunk,
                modules=list(taps), params=stored, user_attrs=user_attrs, prior=prior,
                created=created, mode=mode, full_every=0, projected=projected, groups=groups,
            )  # fmt: skip
            attrs["sharded"] = {**plan.attrs, "probe_examples_per_rank": rows.size if rows else 0}
            if resume:
                attrs["resumed"] = [*prior.get("resumed", []), {"at_step": resume_at}]
            self.prior_dropped = int(prior.get("dropped_snapshots", 0))
            self.root.update_attributes(attrs)
            if probe is not None and not (resume and "probe" in self.root):
                run_store.write_probe(self.root, probe, targets)
            self._broadcast(None)
        else:
            error = self._broadcast(None)
            if error is not None:
                raise RuntimeError(f"rank 0 could not start the sharded run: {error}")
            self.root = run_store.open_root(self.store, mode="r+")
            created = str(self.root.attrs.get("created", run_store.utcnow()))
            sink = SnapshotSink(self.root, **sink_kwargs)
            resume_at, recapture = (
                run_store.trim_for_resume(sink, start_step) if resume else (None, True)
            )
        t0 = time.perf_counter() - (time.time() - dt.datetime.fromisoformat(created).timestamp())
        ring = Ring(layout, slot_count(layout, max_buffer_bytes))
        if cuda:
            ring.pin()
        work = WorkSpec(
            stored=[n for n in stored if n in plan.sharded or plan.rank == 0],
            state=[n for n in plan.whole if n not in stored] if plan.rank == 0 else [],
            mode=mode,
            full_every=0,
            taps=taps,
            slot_activations=list(taps),
        )
        self.handle = start_writer(
            store=self.store, root=self.root, ring=ring, spec=work, sink_kwargs=sink_kwargs,
            prefer=writer, cuda=cuda, shadow=lambda kind: (None, None), timeout=self.timeout,
        )  # fmt: skip
        proc = getattr(self.handle, "process", None)
        if proc is not None and proc.pid is not None and self.lease is not None:
            run_store.add_pid(self.store, self.lease, proc.pid)
        return Started(mode=mode, taps=taps, resume_at=resume_at, recapture=recapture, t0=t0)

    @staticmethod
    def _groups(mode: str, taps: dict[str, Tap]) -> tuple[str, ...]:
        return ("scalars", "weights", "state") + (("activations",) if taps else ())

    def _spec(self, *, stored: list[str], taps: dict[str, Tap], rows: Block | None,
              model: nn.Module) -> ShardSpec:  # fmt: skip
        plan = self.plan
        weights: dict[str, Block | None] = {
            n: block_of(plan.sharded[n].shape[0], rank=plan.rank, world=plan.world)
            for n in stored
            if n in plan.sharded
        }
        if plan.rank == 0:
            weights.update({n: None for n in stored if n not in plan.sharded})
        blocks: dict[str, dict[str, Block | None]] = {"weights": weights}
        if taps and rows is not None:
            blocks["activations"] = {n: self._act_block(t, rows) for n, t in taps.items()}
        return ShardSpec(rank=plan.rank, world=plan.world, blocks=blocks)

    def _act_block(self, tap: Tap, rows: Block) -> Block:
        per = int((tap.meta or {}).get("rows_per_example", 1))
        n = rows.length
        return Block(length=n * per, size=rows.size * per, index=self.plan.rank)

    def _layout(self, *, model: nn.Module, taps: dict[str, Tap], stored: list[str],
                rows: Block | None, n_probe: int, flush_every: int, codec: str,
                features: dict[str, int]) -> None:  # fmt: skip
        """Rank 0: every array any rank writes, with its logical shape and block grid."""
        root = self.root
        spec = self._spec(stored=stored, taps=taps, rows=rows, model=model)
        weights = {}
        for n in stored:
            p = self.plan.sharded.get(n)
            if p is None:
                p = dict(model.named_parameters())[n]
            weights[n] = (tuple(p.shape), spec.blocks["weights"].get(n))
        declare_sharded(
            root.require_group("weights"),
            weights,
            chunk=flush_every,
            codec=codec,
            attrs={n: {"layer": owner(n), "kind": "weight"} for n in weights},
            dims={
                n: ("step", *(f"{n}.d{i}" for i in range(len(s)))) for n, (s, _) in weights.items()
            },
        )
        if "activations" in spec.blocks:
            acts = {}
            for n, tap in taps.items():
                per = int((tap.meta or {}).get("rows_per_example", 1))
                acts[n] = ((n_probe * per, features[n]), self._act_block(tap, rows))
            declare_sharded(
                root.require_group("activations"),
                acts,
                chunk=flush_every,
                codec=codec,
                attrs={
                    n: {
                        "layer": n,
                        "kind": "activation",
                        "probe_examples": n_probe,
                        **(taps[n].meta or {}),
                    }
                    for n in acts
                },
                dims={n: ("step", f"{n}.sample", f"{n}.feature") for n in acts},
            )
        for r in range(self.plan.world):
            root.require_group(f"shards/r{r}")

    def _broadcast(self, error: str | None) -> str | None:
        """Rank 0's verdict on the start (None: go) to every rank; the start-up barrier."""
        box = [error]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def finish(self, final: dict[str, Any]) -> dict[str, Any]:
        """Close this rank's writer; then (a clean close) a barrier, and rank 0 marks the run
        complete when every rank's record says so."""
        self.closing = str(final.get("status"))
        out = super().finish(final)
        if final.get("status") != "complete":
            return out  # a crash: no barrier (a peer may be dead); the writers said so
        try:
            self._barrier()
        except Exception as exc:  # a peer died before closing: the run is not complete
            log.error("dimlapse: a rank did not close the sharded run: %s", exc)
            if self.plan.rank == 0:
                run_store.update_attrs(self.store, {"status": "crashed"})
            return out
        if self.plan.rank == 0:
            self._finalise()
        return out

    def mark_degraded(self, error: str | None) -> None:
        """The writer died before its final attrs: this rank's record says so; rank 0's
        root says ``crashed`` when the job was ending on an error (under ``torchrun`` a
        failed peer's job is torn down, writers included), else ``degraded``."""
        status = "crashed" if getattr(self, "closing", None) == "crashed" else "degraded"
        try:
            group = self.root.require_group(f"shards/r{self.plan.rank}")
            group.update_attributes({"status": status, "errors": [error]})
            if self.plan.rank == 0:
                self.root.update_attributes({"status": status, "errors": [error]})
        except Exception as exc:  # the store may be the thing that broke
            log.error("dimlapse: could not mark the store %s: %s", status, exc)

    def _barrier(self) -> None:
        dist = torch.distributed
        if dist.get_backend() == "gloo":
            dist.monitored_barrier(timeout=dt.timedelta(seconds=self.timeout))
        else:
            dist.barrier()

    def _finalise(self) -> None:
        """Rank 0, after every rank closed: the root's status from every rank's record."""
        root = run_store.open_root(self.store, mode="r+")
        records = [dict(root[f"shards/r{r}"].attrs) for r in range(self.plan.world)]
        statuses = [str(r.get("status", "crashed")) for r in records]
        status = (
            "complete"
            if all(s == "complete" for s in statuses)
            else ("degraded" if "degraded" in statuses else "crashed")
        )
        mine = records[0]
        nonfinite: dict[str, list[int]] = {}
        for r in records:
            for k, v in dict(r.get("nonfinite") or {}).items():
                nonfinite[k] = sorted({*nonfinite.get(k, []), *v})
        contents = {**dict(root.attrs.get("contents") or {}), **dict(mine.get("contents") or {})}
        root.update_attributes(
            {
                "status": status,
                "finished": run_store.utcnow(),
                "contents": contents,
                "dropped_snapshots": mine.get("dropped_snapshots", 0),
                "nonfinite": nonfinite,
                "errors": [e for r in records for e in r.get("errors", [])],
                "stats": {**dict(mine.get("stats") or {}), "rank_status": statuses},
            }
        )
        if status == "complete":
            run_store.consolidate(root)


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
    reshard(model)  # a model used before the Recorder may hold gathered root parameters
    mode = opts.mode
    check_options(opts, mode, world)
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
    local_probe = local_targets = None
    if probe is not None:
        local_probe, rows = probe_slice(probe, rank=rank, world=world)
        if probe_targets is not None:
            local_targets = probe_targets[rows.start : rows.start + rows.local]
    _, taps = _validate.probe_taps(
        model, local_probe, local_targets, modules=opts.modules, positions=opts.positions,
        tokens=opts.tokens, mode=mode,
    )  # fmt: skip
    reshard(model)
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
    kept = [n for n in stored if n in the_plan.sharded or rank == 0]
    projected = projection(
        layout, stored=kept, taps=taps, schedule=schedule, mode=mode, codec=codec,
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
            writer=opts.writer, projected=projected, cuda=ho.cuda, acts=ho.acts,
        )  # fmt: skip
    except Exception:
        ho.closed = True
        if session.handle is not None:
            session.handle.close({"status": "crashed"})
        session.release()
        raise
    ho.handle, ho.t0 = session.handle, started.t0
    if ho.cuda:
        ho.stream = torch.cuda.Stream(ho.tensors[0].device)
    ho.current_step = (start_step or 0) if started.resume_at is None else started.resume_at
    ho.active = True
    if started.recapture:
        ho.capture(ho.current_step)  # the construction-time forward's rows are this step's
