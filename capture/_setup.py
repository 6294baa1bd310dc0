"""Helpers of the Recorder that run once: root attrs, resume trimming, shadow model, exit hook."""

from __future__ import annotations

import concurrent.futures.thread  # noqa: F401 - its exit hook must be registered before ours
import copy
import logging
import sys
import threading
import warnings
import weakref
from collections.abc import Callable
from typing import Any

import torch
import zarr
from torch import nn

from . import _store
from .writer._chunks import quiet_numcodecs, valid_prefix
from ._schedule import Schedule, describe_schedule
from ._select import Tap, probe_forward
from .writer._sink import SnapshotSink

log = logging.getLogger("dimlapse.capture")
_OPEN: weakref.WeakSet[Any] = weakref.WeakSet()


def _close_open_recorders() -> None:
    """Flush recorders the user never closed, while Zarr's worker threads still run."""
    status = "crashed" if hasattr(sys, "last_value") else "complete"
    for rec in list(_OPEN):
        try:
            rec.close(status=status)
        except Exception as exc:  # at exit nobody can handle it: log instead
            log.error("dimlapse: closing %r at exit failed: %s", rec, exc)


# threading's exit hooks run before concurrent.futures shuts its pools down (those pools do
# Zarr's encoding); plain atexit hooks would run too late to write anything.
_register: Callable[[Callable[[], None]], None] = getattr(
    threading, "_register_atexit", __import__("atexit").register
)
_register(_close_open_recorders)


def scalar_value(name: str, value: Any) -> Any:
    """A loss or user scalar as a float (CPU) or a device copy (CUDA, no host sync)."""
    if type(value) is float:
        return value
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(
                f"Expected scalar `{name}` to be a number or a one-element tensor, "
                f"got a tensor of shape {tuple(value.shape)}"
            )
        if value.is_cuda:  # no host sync: a device copy, read by the writer thread
            return value.detach().clone()
        return value.item()  # a CPU read is cheaper than a clone and never syncs
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"Expected scalar `{name}` to be a number or a one-element tensor, got {value!r}"
        ) from exc


def positive_int(name: str, value: Any, minimum: int = 1) -> int:
    """Validate an int option."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"Expected `{name}` to be an int >= {minimum}, got {value!r}")
    return value


def root_attrs(
    *,
    model: nn.Module,
    schedule: Schedule,
    probe: torch.Tensor | None,
    has_targets: bool,
    codec: str,
    flush_every: int,
    scalar_chunk: int,
    modules: list[str],
    params: list[str],
    user_attrs: dict[str, Any],
    prior: dict[str, Any],
    created: str,
) -> dict[str, Any]:
    """The root attrs of docs/store-layout.md, merged with the user's ``attrs``."""
    user_attrs = dict(user_attrs)
    probe_attrs = None
    if probe is not None:
        probe_attrs = {
            "n": int(probe.shape[0]),
            "shape": list(probe.shape),
            "dtype": str(probe.dtype).removeprefix("torch."),
            "description": user_attrs.pop("probe_description", "fixed probe batch"),
            "has_targets": has_targets,
        }
    base = {
        "layout_version": _store.LAYOUT_VERSION,
        "status": "running",
        "every": getattr(schedule, "n", repr(schedule)),
        "schedule": describe_schedule(schedule),
        "config": user_attrs.pop("config", prior.get("config")),
        "model": _store.model_summary(model),
        "git_commit": _store.git_commit(),
        "versions": _store.versions(),
        "probe": probe_attrs,
        "codec": codec,
        "flush_every": flush_every,
        "scalar_chunk": scalar_chunk,
        "modules": modules,
        "params": params,
        "activations": bool(modules),
        "created": created,
        "finished": None,
        "nonfinite": prior.get("nonfinite", {}),
        "dropped_snapshots": prior.get("dropped_snapshots", 0),
        "errors": prior.get("errors", []),
    }
    for key in ("seed", "dataset"):
        base.setdefault(key, prior.get(key))
    return {**base, **user_attrs}


def check_resumable(root: Any, *, codec: str, flush_every: int, probe: Any) -> None:
    """Refuse to resume with settings that would change the store's chunking or codec."""
    prior = dict(root.attrs)
    for key, value in (("codec", codec), ("flush_every", flush_every)):
        if prior.get(key) != value:
            raise ValueError(
                f"Expected `{key}` to match the run being resumed ({prior.get(key)!r}), "
                f"got {value!r}"
            )
    if probe is not None and "probe" in root and "inputs" in root["probe"]:
        stored, _ = _store.read_probe(root)
        if tuple(stored.shape) != tuple(probe.shape) or not torch.equal(
            stored, probe.detach().cpu().to(stored.dtype)
        ):
            raise ValueError(
                "Expected `probe` to equal the probe stored in the run being resumed; "
                "pass probe=None to reuse the stored one"
            )


def trim_for_resume(sink: SnapshotSink, start_step: int | None) -> tuple[int, bool]:
    """Cut every group back to the last complete snapshot (or to ``start_step``).

    Returns the step training continues from, and whether its state must be captured
    (``start_step`` between two stored snapshots, or no complete snapshot at all).
    """
    snap_groups = [g for name, g in sink.groups.items() if name != "scalars"]
    steps = [g.step_array[:] for g in snap_groups]
    n = min(valid_prefix(s) for s in steps)
    if n == 0:  # killed before its first chunk landed: start over from the initial state
        log.info("dimlapse: the run being resumed holds no complete snapshot; starting at 0")
        for g in sink.groups.values():
            g.trim(0)
        return start_step or 0, True
    last = int(steps[0][n - 1])
    if start_step is not None:
        if start_step > last:
            raise ValueError(
                f"Expected `start_step` <= {last} (the last complete snapshot) when resuming, "
                f"got {start_step}"
            )
        n = int((steps[0][:n] <= start_step).sum())
        last = start_step
    for g in snap_groups:
        g.trim(n)
    scalars = sink.groups["scalars"]
    s = scalars.step_array[:]
    scalars.trim(int((s[: valid_prefix(s)] <= last).sum()))
    return last, n == 0 or int(steps[0][n - 1]) != last


def make_shadow(model: nn.Module) -> nn.Module | None:
    """Deep copy of the model for probe forwards off the training thread (None if impossible)."""
    try:
        return copy.deepcopy(model).eval().requires_grad_(False)
    except Exception as exc:  # models holding locks, generators, file handles, ...
        log.info("dimlapse: model cannot be deep-copied (%s); probe forward runs inline", exc)
        return None


def inline_forward(
    model: nn.Module, probe: torch.Tensor, taps: dict[str, Tap], *, cuda: bool
) -> dict[str, torch.Tensor]:
    """Fallback probe forward on the training thread: eval, no_grad, RNG and modes restored."""
    modes = [(m, m.training) for m in model.modules()]
    cpu_rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if cuda else None
    try:
        model.eval()
        with torch.no_grad():
            acts = probe_forward(model, probe, taps)
    finally:
        for m, mode in modes:
            m.training = mode
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
    return {k: v.clone() for k, v in acts.items()}


def consolidate(root: Any) -> None:
    """Consolidate metadata once, at close, so ``xr.open_zarr(store, group=...)`` opens the
    finished run quietly. Readers of live runs (``open_run``) never trust it, and the first
    attrs write of a resume drops it (STORAGE_NOTES trap 8)."""
    with warnings.catch_warnings(), quiet_numcodecs():
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
        zarr.consolidate_metadata(root.store, path=root.path or None)


def stored_bytes(root: zarr.Group, groups: list[str]) -> int | None:
    """Bytes the groups occupy in the store (None where the store cannot say)."""
    from zarr.core.sync import sync

    try:
        return sum(sync(root.store.getsize_prefix(f"{root.path}/{g}".lstrip("/"))) for g in groups)
    except (NotImplementedError, OSError) as exc:
        log.info("dimlapse: could not size the store: %s", exc)
        return None
