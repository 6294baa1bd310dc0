"""A run store from a series of checkpoints: ``weights/`` and ``state/`` per checkpoint, content
hashes, duplicate snapshots flagged, activations through ``replay``.

Memory: a checkpoint is opened for its names, shapes and dtypes only and read one tensor at a
time (``_sources``). Checkpoints of at least ``CHUNK_BYTES`` are written one snapshot per chunk,
each tensor written and dropped before the next is read, so the peak is about one tensor;
smaller ones are gathered ``CHUNK_BYTES // size`` snapshots per chunk (at most 64), so the peak
is at most ``CHUNK_BYTES`` of chunk buffers plus one tensor.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import store as run_store
from .._replay import replay
from ..writer import DEFAULT_CODEC, SnapshotSink, host, parse_codec
from ._sources import Checkpoint, open_checkpoint

log = logging.getLogger("dimlapse.capture")

CHUNK_BYTES = 32 * 2**20  # smaller checkpoints share chunks up to this many bytes
HASH = "blake2b-128"  # of each row's bytes as stored (C order, the array's dtype)


class _Steps:
    """The capture schedule of an ingested series: exactly the checkpoints' steps."""

    def __init__(self, steps: list[int]) -> None:
        self.steps = steps
        gaps = set(np.diff(steps).tolist())
        if len(gaps) == 1 and steps[0] % next(iter(gaps)) == 0:
            self.n = next(iter(gaps))  # evenly spaced from a multiple: the run's ``every``

    def __call__(self, step: int) -> bool:
        return step in self.steps

    def describe(self) -> dict[str, Any]:
        return {"kind": "checkpoints", "steps": list(self.steps)}

    def __repr__(self) -> str:
        return f"checkpoints({len(self.steps)} steps, {self.steps[0]}..{self.steps[-1]})"


def _selected(names: list[str], params: str | Sequence[str] | None) -> list[str]:
    if params is None:
        return names
    globs = [params] if isinstance(params, str) else list(params)
    if not globs or not all(isinstance(g, str) for g in globs):
        raise ValueError(
            f"Expected `params` to be a name glob or a non-empty list of globs, got {params!r}"
        )
    chosen = [n for n in names if any(fnmatch.fnmatchcase(n, g) for g in globs)]
    if not chosen:
        raise ValueError(
            f"Expected `params` to match some tensor of the checkpoints, got {params!r}; "
            f"their names start {names[:6]}"
        )
    return chosen


def _steps_of(ckpts: list[Checkpoint], steps: Sequence[int] | None) -> list[int]:
    if steps is not None:
        steps = list(steps)
        if len(steps) != len(ckpts) or not all(
            isinstance(s, int | np.integer) and not isinstance(s, bool) and s >= 0 for s in steps
        ):
            raise ValueError(
                f"Expected `steps` to be {len(ckpts)} non-negative ints (one per source), "
                f"got {steps!r}"
            )
        out = [int(s) for s in steps]
    else:
        unknown = [c.source for c in ckpts if c.step is None]
        if unknown:
            raise ValueError(
                f"Expected each checkpoint to carry its step (in its metadata or its name, e.g. "
                f"step_1000.pt), but {unknown[:3]} do not; pass `steps=[...]`, one per source"
            )
        out = [int(c.step) for c in ckpts]  # type: ignore[arg-type]
    for i in range(1, len(out)):
        if out[i] <= out[i - 1]:
            raise ValueError(
                f"Expected the checkpoints in increasing step order, got step {out[i]} "
                f"({ckpts[i].source!r}) after step {out[i - 1]} ({ckpts[i - 1].source!r}); "
                "sort the sources by step"
            )
    return out


def _stored(t: torch.Tensor) -> np.ndarray:
    """A tensor as stored: float32 for floating types other than float64 (as the Recorder)."""
    if t.dtype == torch.float64:
        return t.to(torch.float32).numpy()
    return host(t.contiguous())


def ingest(
    sources: Sequence[str | os.PathLike[str]],
    store: Any,
    *,
    steps: Sequence[int] | None = None,
    params: str | Sequence[str] | None = None,
    probe: Any = None,
    model: nn.Module | Callable[[], nn.Module] | None = None,
    overwrite: bool = False,
    codec: str | None = None,
    attrs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build a run store from an ordered series of checkpoints.

    Each checkpoint becomes one snapshot: floating tensors with ``ndim >= 2`` under
    ``weights/``, every other tensor under ``state/`` (docs/store-layout.md), at its step. The
    store is a normal run store (``status`` ``complete``, readable by ``open_run`` and
    ``dimlapse analyze``), with ``mode`` ``weights`` unless activations are replayed.

    Parameters
    ----------
    sources : sequence of str or os.PathLike
        Checkpoints in step order: ``torch.save``d state dicts, safetensors files, Hugging Face
        ``save_pretrained`` folders (sharded too) or ``torch.distributed.checkpoint``
        directories; all with the same tensor names and shapes.
    store : str, os.PathLike or zarr store
        The run store to create.
    steps : sequence of int, optional
        One step per source; default: the step each checkpoint's metadata or name carries.
        Steps must increase; a series out of order is refused.
    params : str or sequence of str, optional
        Name globs of the tensors to read (default: all); the others are never read.
    probe : torch.Tensor, dict or tuple, optional
        A probe batch to store (``probe/``); with ``model``, activations are replayed.
    model : torch.nn.Module or callable returning one, optional
        The checkpoints' architecture: recorded in the attrs, and with ``probe`` used to fill
        ``activations/`` through :func:`replay` (then every tensor the model needs must be read).
    overwrite : bool
        Replace an existing run at ``store``.
    codec : str, optional
        Codec of the float arrays (default: the Recorder's default).
    attrs : dict, optional
        Extra JSON root attrs.

    Returns
    -------
    dict
        ``snapshots``, ``steps``, ``duplicate_snapshots``, ``bytes_raw``, ``replayed``.

    Raises
    ------
    ValueError
        Steps out of order or unknown, checkpoints that disagree on names or shapes, bad
        arguments.
    """
    if isinstance(sources, str | os.PathLike) or not len(sources):
        raise ValueError(
            f"Expected `sources` to be a non-empty list of checkpoint paths, got {sources!r}"
        )
    codec = parse_codec(DEFAULT_CODEC if codec is None else codec)
    user_attrs = run_store.check_json(attrs)
    if model is not None and not isinstance(model, nn.Module):
        if not callable(model):
            raise ValueError(
                f"Expected `model` to be a torch.nn.Module or a callable returning one, got "
                f"{model!r}"
            )
        model = model()
        if not isinstance(model, nn.Module):
            raise ValueError(f"Expected the `model` factory to return a Module, got {model!r}")
    ckpts: list[Checkpoint] = []
    try:
        for s in sources:  # names, shapes, steps; maps reopened one checkpoint at a time
            ckpts.append(open_checkpoint(s))
            ckpts[-1].close()
        order = _steps_of(ckpts, steps)
        names = _selected(list(ckpts[0].specs), params)
        _check_same(ckpts, names)
        if model is not None and probe is not None:
            _check_model(model, ckpts[0], names)
        return _write(ckpts, order, names, store, probe=probe, model=model,
                      overwrite=overwrite, codec=codec, user_attrs=user_attrs)  # fmt: skip
    finally:
        for c in ckpts:
            c.close()


def _check_same(ckpts: list[Checkpoint], names: list[str]) -> None:
    first = ckpts[0]
    for c in ckpts[1:]:
        missing = [n for n in names if n not in c.specs]
        changed = [
            f"{n} {first.specs[n][0]} -> {c.specs[n][0]}"
            for n in names
            if n in c.specs and c.specs[n][0] != first.specs[n][0]
        ]
        if missing or changed:
            what = [f"lacks {missing[:5]}"] if missing else []
            what += [f"changes {changed[:5]}"] if changed else []
            raise ValueError(
                f"Expected every checkpoint to hold the tensors of {first.source!r} with the same "
                f"shapes; {c.source!r} {' and '.join(what)}"
            )


def _check_model(model: nn.Module, ckpt: Checkpoint, names: list[str]) -> None:
    needed = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    missing = sorted(set(needed) - set(names))
    wrong = [
        f"{n} (checkpoint {ckpt.specs[n][0]}, model {tuple(t.shape)})"
        for n, t in needed.items()
        if n in ckpt.specs and tuple(t.shape) != ckpt.specs[n][0]
    ]
    if missing or wrong:
        raise ValueError(
            "Expected `model` to match the checkpoints to replay activations: not read from the "
            f"checkpoints {missing[:5]} (widen `params`), shapes differ {wrong[:5]}"
        )


def _layout(ckpt: Checkpoint, names: list[str]) -> tuple[list[str], list[str]]:
    weights = [
        n for n in names if ckpt.specs[n][1].is_floating_point and len(ckpt.specs[n][0]) >= 2
    ]
    chosen = set(weights)
    return weights, [n for n in names if n not in chosen]


def _root_attrs(ckpts: list[Checkpoint], order: list[int], *, weights: list[str], chunk: int,
                nbytes: int, probe: Any, model: nn.Module | None, codec: str,
                user_attrs: dict[str, Any], created: str) -> dict[str, Any]:  # fmt: skip
    """The root attrs of a Recorder's run (``store.root_attrs``), plus ``ingested``."""
    projected = {"per_snapshot": nbytes, "per_run": nbytes * len(ckpts), "captures": len(ckpts)}
    attrs = run_store.root_attrs(
        model=model if model is not None else nn.Module(),
        schedule=_Steps(order),
        probe=probe,
        has_targets=False,
        codec=codec,
        flush_every=chunk,
        scalar_chunk=chunk,
        modules=[],
        params=weights,
        user_attrs=user_attrs,
        prior={},
        created=created,
        mode="weights",
        full_every=0,
        projected=projected,
    )
    if model is None:
        attrs["model"] = {"class": None, "n_parameters": None, "summary": None}
    attrs["ingested"] = {
        "sources": [str(c.source) for c in ckpts],
        "formats": sorted({c.kind for c in ckpts}),
        "content_hash": f"{HASH} of each row's bytes as written, in each weights/ and state/ "
        "array's `content_hash` attr (one hex digest per snapshot)",
    }
    return attrs


def _duplicates(order: list[int], hashes: dict[str, list[str]], weights: list[str]) -> list[int]:
    """Steps whose every ``weights/`` array hashes as the previous snapshot's."""
    return [
        order[i]
        for i in range(1, len(order))
        if weights and all(hashes[n][i] == hashes[n][i - 1] for n in weights)
    ]


def _write(ckpts: list[Checkpoint], order: list[int], names: list[str], store: Any, *,
           probe: Any, model: nn.Module | None, overwrite: bool, codec: str,
           user_attrs: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    first = ckpts[0]
    weights, state = _layout(first, names)
    shapes = {n: first.specs[n][0] for n in names}
    dtypes = {n: _stored(torch.empty(0, dtype=first.specs[n][1])).dtype for n in names}
    nbytes = sum(math.prod(shapes[n]) * dtypes[n].itemsize for n in names)
    chunk = max(1, min(64, len(ckpts), CHUNK_BYTES // max(1, nbytes)))
    root: Any = run_store.open_store(store, overwrite=overwrite, resume=False)
    created = run_store.utcnow()
    lease = run_store.acquire_lock(store, since=created)
    try:
        groups = {"weights": weights, "state": state}
        sink = SnapshotSink(
            root, chunk=chunk, scalar_chunk=chunk, codec=codec, probe_examples=0,
            groups=("scalars", *groups),
        )  # fmt: skip
        root.update_attributes(
            _root_attrs(ckpts, order, weights=weights, chunk=chunk, nbytes=nbytes, probe=probe,
                        model=model, codec=codec, user_attrs=user_attrs, created=created)
        )  # fmt: skip
        if probe is not None:
            run_store.write_probe(root, probe, None)
        for group, members in groups.items():
            kind = "weight" if group == "weights" else "state"
            for n in members:
                sink.groups[group].declare(
                    n, shapes[n], dtypes[n], buffered=chunk > 1,
                    attrs={"layer": n.rsplit(".", 1)[0] if "." in n else n, "kind": kind},
                    dims=("step", *(f"{n}.d{i}" for i in range(len(shapes[n])))),
                )  # fmt: skip
        hashes: dict[str, list[str]] = {n: [] for n in names}
        for ckpt, step in zip(ckpts, order, strict=True):
            for group, members in groups.items():
                rows = _rows(ckpt, members, hashes, sink, group, step, codec)
                if chunk == 1:
                    sink.groups[group].stream_row(step, rows)  # one tensor held at a time
                else:
                    sink.groups[group].append(step, dict(rows))
            sink.snapshots += 1
            ckpt.close()  # its memory maps and file handles go now
            log.info("dimlapse: ingested %s as step %d", ckpt.source, step)
        sink.flush()
        for group, members in groups.items():
            for n in members:
                sink.groups[group].arrays[n].update_attributes(
                    {"content_hash": hashes[n], "content_hash_algorithm": HASH}
                )
        dupes = _duplicates(order, hashes, weights)
        if dupes:
            log.warning(
                "dimlapse: %d snapshots repeat the previous snapshot's weights byte for byte "
                "(steps %s); listed in the store's `duplicate_snapshots` attr",
                len(dupes),
                dupes[:10],
            )
        stored = run_store.stored_bytes(root, list(groups))
        stats = {"snapshots": len(ckpts), "bytes_raw": sink.bytes_raw, "bytes_stored": stored}
        root.update_attributes(
            {"duplicate_snapshots": dupes, "nonfinite": sink.nonfinite, "stats": stats}
        )
        replayed = 0
        if model is not None and probe is not None:
            replayed = replay(store, model)
            root = run_store.open_root(store, mode="r+")  # replay rewrote the attrs: reread
        root.update_attributes({"status": "complete", "finished": run_store.utcnow()})
        run_store.consolidate(root)
    except BaseException as exc:
        try:
            root.update_attributes(
                {"status": "crashed", "errors": [f"{type(exc).__name__}: {exc}"]}
            )
        except Exception as exc2:  # the store may be what broke; the first error is raised
            log.warning("dimlapse: could not mark the ingested run crashed: %s", exc2)
        raise
    finally:
        run_store.release_lock(store, lease)
    return {
        "snapshots": len(ckpts),
        "steps": order,
        "duplicate_snapshots": dupes,
        "bytes_raw": sink.bytes_raw,
        "replayed": replayed,
    }


def _rows(ckpt, members, hashes, sink, group, step, codec) -> Iterator[tuple[str, np.ndarray]]:
    """Each tensor of ``members``, read, hashed and checked one at a time."""
    for n in members:
        value = _stored(ckpt.read(n))
        stored = (
            value.astype(np.float16) if codec == "float16" and value.dtype.kind == "f" else value
        )
        hashes[n].append(
            hashlib.blake2b(np.ascontiguousarray(stored).data, digest_size=16).hexdigest()
        )
        sink.check(group, step, {n: value})
        yield n, value
