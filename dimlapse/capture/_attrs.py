"""The run's root attrs (docs/store-layout.md, "Root attrs") and the checks before a resume."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from . import _store
from ._schedule import Schedule, describe_schedule


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
    mode: str,
    full_every: int,
    projected: dict[str, Any],
) -> dict[str, Any]:
    """The root attrs of docs/store-layout.md, merged with the user's ``attrs``."""
    user_attrs = dict(user_attrs)
    probe_attrs = None
    if probe is not None and not isinstance(probe, torch.Tensor):
        from ._probe import probe_summary

        probe_attrs = {
            **probe_summary(probe),
            "description": user_attrs.pop("probe_description", "fixed probe batch"),
            "has_targets": has_targets,
        }
    if isinstance(probe, torch.Tensor):
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
        "mode": mode,
        "full_every": full_every,
        "projected_bytes": projected,
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
    if probe is not None and "probe" in root and any(True for _ in root["probe"].arrays()):
        from ._probe import probe_equal

        stored, _ = _store.read_probe(root)
        if not probe_equal(stored, probe):
            raise ValueError(
                "Expected `probe` to equal the probe stored in the run being resumed; "
                "pass probe=None to reuse the stored one"
            )
