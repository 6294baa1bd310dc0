"""The run session of one rank of a sharded (FSDP2, HSDP, tensor-parallel) job: rank 0 lays
the run out, one broadcast releases every rank, each starts its own writer; at close a barrier,
then rank 0 marks the run ``complete`` when every rank's record says so (``_sharded.py`` says
why).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from . import store as run_store
from ._session import RunSession, Started
from ._taps import Tap
from .writer import (
    Block,
    Ring,
    ShardSpec,
    SlotLayout,
    SnapshotSink,
    WorkSpec,
    declare_sharded,
    owner,
    slot_count,
    start_writer,
)

if TYPE_CHECKING:
    from ._placements import Plan

log = logging.getLogger("dimlapse.capture")


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
                      cuda: bool) -> Started:  # fmt: skip
        """Rank 0 lays the run out; a broadcast releases every rank; each starts its writer."""
        plan = self.plan
        error: str | None = None
        if plan.rank == 0:
            try:
                prior: dict[str, Any] = dict(self.root.attrs) if resume else {}
                if resume:
                    self._check_resumed(dict(prior.get("sharded") or {}))
                self._layout(model=model, taps=taps, stored=stored, n_probe=n_probe,
                             flush_every=flush_every, codec=codec)  # fmt: skip
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                self._broadcast(error)
                raise
        # full or weights mode (spectra is refused): no spectra/ groups
        groups = ("scalars", "weights", "state") + (("activations",) if taps else ())
        spec = self._spec(stored=stored)
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
            per_rank = rows.size if rows else (n_probe if plan.acts else 0)
            attrs["sharded"] = {**plan.attrs, "probe_examples_per_rank": per_rank}
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
            stored=[n for n in stored if plan.writes(n)],
            state=list(spec.blocks.get("state", {})),
            mode=mode,
            full_every=0,
            taps={n: taps[n] for n in plan.acts},
            slot_activations=list(plan.acts),
        )
        self.handle = start_writer(
            store=self.store, root=self.root, ring=ring, spec=work, sink_kwargs=sink_kwargs,
            prefer=writer, cuda=cuda, shadow=lambda kind: (None, None), timeout=self.timeout,
        )  # fmt: skip
        proc = getattr(self.handle, "process", None)
        if proc is not None and proc.pid is not None and self.lease is not None:
            run_store.add_pid(self.store, self.lease, proc.pid)
        return Started(mode=mode, taps=taps, resume_at=resume_at, recapture=recapture, t0=t0)

    def _check_resumed(self, was: dict[str, Any]) -> None:
        """A resumed run keeps its arrays, so its chunk grid: the job must be sharded alike."""
        plan = self.plan
        now = {"world_size": plan.world, "parallelism": plan.layout.kind,
               "mesh_shape": list(plan.layout.mesh_shape)}  # fmt: skip
        # runs recorded before HSDP and tensor parallelism were FSDP2 on a 1-D mesh
        was = {"parallelism": "fsdp", "mesh_shape": [was.get("world_size")], **was}
        for key, value in now.items():
            if was.get(key) != value:
                raise ValueError(
                    f"Expected the job to have the {key} of the run being resumed "
                    f"({was.get(key)}), got {value}; resume with the sharding it was recorded "
                    "with, or start a new run"
                )

    def _spec(self, *, stored: list[str]) -> ShardSpec:
        """This rank's blocks; a rank other than 0 leaves out a group it writes nothing of
        (its step index would only hold back the readers)."""
        plan = self.plan
        weights: dict[str, Block | None] = {n: plan.blocks[n] for n in stored if n in plan.blocks}
        if plan.rank == 0:
            weights.update({n: None for n in stored if n not in plan.sharded})
        # the rest (biases, norms, buffers) in state/, as in a single-process run: sharded
        # ones as blocks by the ranks holding them, unsharded ones whole by rank 0
        state = {n: b for n, b in plan.blocks.items() if n not in stored}
        if plan.rank == 0:
            state.update({n: None for n in plan.whole if n not in stored})
        acts = {n: b for n, (_, b) in plan.acts.items()}
        groups = (("weights", weights), ("state", state), ("activations", acts))
        blocks = {g: v for g, v in groups if v}
        if plan.rank == 0:
            blocks.setdefault("weights", {})
            blocks.setdefault("state", {})
        return ShardSpec(rank=plan.rank, world=plan.world, blocks=blocks)

    def _layout(self, *, model: nn.Module, taps: dict[str, Tap], stored: list[str],
                n_probe: int, flush_every: int, codec: str) -> None:  # fmt: skip
        """Rank 0 (which holds the first block of everything): every array any rank writes,
        with its logical shape and block grid."""
        root = self.root
        spec = self._spec(stored=stored)
        named = {**dict(model.named_parameters()), **dict(model.named_buffers())}
        for group, kind in (("weights", "weight"), ("state", "state")):
            shapes = {
                n: tuple(self.plan.sharded.get(n, named[n]).shape) for n in spec.blocks[group]
            }
            _declare_params(root.require_group(group), spec.blocks[group], shapes, named,
                            kind=kind, chunk=flush_every, codec=codec)  # fmt: skip
        if "activations" in spec.blocks:
            acts: dict[str, tuple[tuple[int, ...], Block | None]] = {}
            for n, tap in taps.items():
                per = int((tap.meta or {}).get("rows_per_example", 1))
                acts[n] = ((n_probe * per, self.plan.acts[n][0]), spec.blocks["activations"][n])
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
        records: list[dict[str, Any]] = [
            dict(root[f"shards/r{r}"].attrs) for r in range(self.plan.world)
        ]  # each rank's writer record (JSON)
        root_attrs: dict[str, Any] = dict(root.attrs)
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
        contents = {**dict(root_attrs.get("contents") or {}), **dict(mine.get("contents") or {})}
        stats = dict(mine.get("stats") or {})
        raw = sum(int((r.get("stats") or {}).get("bytes_raw") or 0) for r in records)
        groups = list(dict(root_attrs.get("contents") or {}).get("groups", []))
        stored = run_store.stored_bytes(root, [*groups, "shards"])
        stats.update(
            bytes_raw=raw,
            bytes_stored=stored,
            compression_ratio=raw / stored if raw and stored else None,
            writer_cpu_seconds=sum(
                float((r.get("stats") or {}).get("writer_cpu_seconds") or 0) for r in records
            ),
        )
        root.update_attributes(
            {
                "status": status,
                "finished": run_store.utcnow(),
                "contents": contents,
                "dropped_snapshots": mine.get("dropped_snapshots", 0),
                "nonfinite": nonfinite,
                "errors": [e for r in records for e in r.get("errors", [])],
                "stats": {**stats, "rank_status": statuses},
            }
        )
        if status == "complete":
            run_store.consolidate(root)


def _declare_params(group: Any, blocks: dict[str, Block | None], shapes: dict[str, tuple[int, ...]],
                    named: dict[str, torch.Tensor], *, kind: str, chunk: int,
                    codec: str) -> None:  # fmt: skip
    """Declare the parameter (and buffer) arrays of ``weights/`` or ``state/``: each name's
    logical shape and block grid; integer buffers (a batch norm's count) stay integers."""
    declare_sharded(
        group,
        {n: (shapes[n], b) for n, b in blocks.items()},
        chunk=chunk,
        codec=codec,
        attrs={n: {"layer": owner(n), "kind": kind} for n in blocks},
        dims={n: ("step", *(f"{n}.d{i}" for i in range(len(shapes[n])))) for n in blocks},
        dtypes={
            n: torch.empty(0, dtype=named[n].dtype).numpy().dtype
            for n in blocks
            if not named[n].dtype.is_floating_point
        },
    )
