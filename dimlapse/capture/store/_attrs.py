"""The run's root attrs (docs/store-layout.md, "Root attrs"), what describes the run in them
(model, versions, git commit, times) and the checks before a resume."""

from __future__ import annotations

import datetime as dt
import json
import platform
import subprocess
from typing import Any

import numcodecs
import numpy as np
import torch
import zarr
from torch import nn

from .._schedule import Schedule, describe_schedule
from ._open import LAYOUT_VERSION
from ._probe import read_probe


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
    groups: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The root attrs of docs/store-layout.md, merged with the user's ``attrs``.

    ``contents`` lists the groups the run writes (``groups``, plus ``probe``); the writer adds
    each group's arrays and rows when it closes, so a reader can tell a damaged store (a
    deleted ``zarr.json``, a missing chunk of a step index) from a shorter run."""
    user_attrs = dict(user_attrs)
    probe_attrs = None
    if probe is not None and not isinstance(probe, torch.Tensor):
        from .._probe import probe_summary

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
        "layout_version": LAYOUT_VERSION,
        "status": "running",
        "every": getattr(schedule, "n", repr(schedule)),
        "schedule": describe_schedule(schedule),
        "config": user_attrs.pop("config", prior.get("config")),
        "model": model_summary(model),
        "git_commit": git_commit(),
        "versions": versions(),
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
        "contents": {"groups": [*groups, *(["probe"] if probe is not None else [])]},
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
        from .._probe import probe_equal

        stored, _ = read_probe(root)
        if not probe_equal(stored, probe):
            raise ValueError(
                "Expected `probe` to equal the probe stored in the run being resumed; "
                "pass probe=None to reuse the stored one"
            )


def utcnow() -> str:
    """Current UTC time, ISO-8601."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def git_commit() -> str | None:
    """HEAD of the git repository around the working directory, or None (best effort)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def versions() -> dict[str, str]:
    """Library versions recorded with every run."""
    from dimlapse import __version__

    return {
        "dimlapse": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "zarr": zarr.__version__,
        "numcodecs": numcodecs.__version__,
        "python": platform.python_version(),
    }


def model_summary(model: torch.nn.Module) -> dict[str, Any]:
    """Class, parameter count and printed structure (truncated) of a model."""
    return {
        "class": type(model).__name__,
        "n_parameters": int(sum(p.numel() for p in model.parameters())),
        "summary": str(model)[:20_000],
    }


def check_json(attrs: Any) -> dict[str, Any]:
    """Validate user ``attrs``: a dict of JSON-serialisable values."""
    if attrs is None:
        return {}
    if not isinstance(attrs, dict):
        raise ValueError(f"Expected `attrs` to be a dict of JSON values, got {attrs!r}")
    for key, value in attrs.items():
        try:
            json.dumps(value)
        except RecursionError as exc:
            raise ValueError(
                f"Expected `attrs[{key!r}]` to be JSON nested at most a few hundred levels "
                f"deep, got a value nested deeper than Python's recursion limit"
            ) from exc
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"Expected `attrs[{key!r}]` to be JSON-serialisable (str, number, list, dict), "
                f"got {value!r}"
            ) from exc
    return dict(attrs)
