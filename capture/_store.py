"""Opening, creating and describing a run store (docs/store-layout.md, layout_version 1)."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
from typing import Any

import numcodecs
import numpy as np
import torch
import zarr
from zarr.codecs import ZstdCodec
from zarr.errors import GroupNotFoundError

LAYOUT_VERSION = 1
GROUPS = ("scalars", "weights", "activations", "state")


class RunExistsError(FileExistsError):
    """A run store already exists where a new run was asked for."""


class RunNotFoundError(FileNotFoundError):
    """``resume=True`` was asked for but there is no run store to resume."""


def utcnow() -> str:
    """Current UTC time, ISO-8601."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _local_path(store: Any) -> str | None:
    if isinstance(store, os.PathLike):
        return os.fspath(store)
    if isinstance(store, str) and "://" not in store:
        return store
    if isinstance(store, str) and store.startswith("file://"):
        return store.removeprefix("file://")
    return None


def _existing_group(store: Any) -> zarr.Group | None:
    try:
        return zarr.open_group(store, mode="r", use_consolidated=False)
    except (FileNotFoundError, GroupNotFoundError):
        return None


def open_store(store: Any, *, overwrite: bool, resume: bool) -> zarr.Group:
    """Open the root group for writing: a new run, a replaced run, or a resumed run.

    Raises :class:`RunExistsError` / :class:`RunNotFoundError` / ``ValueError`` for refusals;
    any other exception is a store error (unwritable path, full disk, ...).
    """
    existing = _existing_group(store)
    if resume:
        if existing is None:
            raise RunNotFoundError(
                f"Expected a run store to resume at {store!r}, found none; "
                "drop resume=True to start a new run"
            )
        check_layout(dict(existing.attrs), store)
        root = zarr.open_group(store, mode="r+", use_consolidated=False)
        root.update_attributes({"status": "running"})  # also drops stale consolidated metadata
        return root
    local = _local_path(store)
    occupied = existing is not None or (
        local is not None and os.path.isdir(local) and bool(os.listdir(local))
    )
    if occupied and not overwrite:
        raise RunExistsError(
            f"A run store already exists at {store!r}; pass overwrite=True to replace it "
            "or resume=True to continue it"
        )
    if occupied and existing is None:
        raise RunExistsError(
            f"{store!r} exists and is not a Zarr store; refusing to overwrite it, "
            "choose another path"
        )
    return zarr.open_group(store, mode="w" if overwrite else "w-")


def check_layout(attrs: dict[str, Any], store: Any) -> None:
    """Raise ``ValueError`` unless ``attrs`` are a dimlapse root with a known layout."""
    version = attrs.get("layout_version")
    if version is None:
        raise ValueError(f"{store!r} is a Zarr store but not a dimlapse run (no layout_version)")
    if version != LAYOUT_VERSION:
        raise ValueError(
            f"Expected layout_version {LAYOUT_VERSION} at {store!r}, got {version!r}; "
            "upgrade dimlapse to read it"
        )


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
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"Expected `attrs[{key!r}]` to be JSON-serialisable (str, number, list, dict), "
                f"got {value!r}"
            ) from exc
    return dict(attrs)


def _host(t: torch.Tensor) -> np.ndarray:
    t = t.detach().cpu()
    if t.is_floating_point():
        t = t.float()  # bfloat16 has no NumPy dtype
    return t.numpy()


def write_probe(root: zarr.Group, inputs: torch.Tensor, targets: torch.Tensor | None) -> None:
    """Store the probe batch itself (``probe/inputs``, ``probe/targets``), lossless."""
    group = root.require_group("probe")
    for name, tensor in (("inputs", inputs), ("targets", targets)):
        if tensor is None:
            continue
        value = _host(tensor)
        dims = ("probe", *(f"probe.d{i}" for i in range(1, value.ndim)))
        floating = np.issubdtype(value.dtype, np.floating)
        arr = group.create_array(
            name,
            shape=value.shape,
            chunks=value.shape if value.size else "auto",
            dtype=value.dtype,
            fill_value=np.nan if floating else 0,
            compressors=ZstdCodec(level=1),
            dimension_names=dims,
            overwrite=True,
        )
        arr[...] = value


def read_probe(root: zarr.Group) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The stored probe batch as tensors (inputs, targets or None)."""
    group: Any = root["probe"]
    inputs = torch.from_numpy(np.asarray(group["inputs"][...]))
    targets = torch.from_numpy(np.asarray(group["targets"][...])) if "targets" in group else None
    return inputs, targets
