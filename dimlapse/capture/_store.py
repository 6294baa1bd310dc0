"""Opening, creating and describing a run store (docs/store-layout.md, layout_version 2)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import platform
import subprocess
import warnings
from typing import Any

import numcodecs
import numpy as np
import torch
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec
from zarr.errors import GroupNotFoundError

from ._lock import check_unlocked

log = logging.getLogger("dimlapse.capture")
LAYOUT_VERSION = 2
READABLE_LAYOUTS = (1, 2)  # 2 adds spectra/ and the checksum on every chunk
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
        check_unlocked(store)
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
    if existing is not None:
        if "layout_version" not in existing.attrs:
            raise RunExistsError(
                f"{store!r} is a Zarr store but not a dimlapse run (no layout_version); "
                "refusing to overwrite it, choose another path"
            )
        check_unlocked(store)
        if local is not None:
            _only_zarr_inside(local, store)
    return zarr.open_group(store, mode="w" if overwrite else "w-")


def _only_zarr_inside(path: str, store: Any) -> None:
    """Overwrite deletes the whole directory: refuse when it holds files zarr did not write."""
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            if f == "zarr.json" or "/c/" in f"{dirpath}/":
                continue
            raise RunExistsError(
                f"{store!r} holds {os.path.join(dirpath, f)!r}, which is not part of a run; "
                "refusing to overwrite it, move that file or choose another path"
            )


def check_layout(attrs: dict[str, Any], store: Any) -> None:
    """Raise ``ValueError`` unless ``attrs`` are a dimlapse root with a known layout."""
    version = attrs.get("layout_version")
    if version is None:
        raise ValueError(f"{store!r} is a Zarr store but not a dimlapse run (no layout_version)")
    if version not in READABLE_LAYOUTS:
        raise ValueError(
            f"Expected layout_version in {READABLE_LAYOUTS} at {store!r}, got {version!r}; "
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


def write_probe(root: zarr.Group, inputs: Any, targets: torch.Tensor | None) -> None:
    """Store the probe batch itself, lossless: ``probe/inputs`` for a tensor, ``inputs.<key>``
    / ``inputs.<i>`` for a dict / tuple probe (see ``_probe``), and ``probe/targets``."""
    from ._probe import probe_arrays

    group = root.require_group("probe")
    arrays = probe_arrays(inputs)
    if targets is not None:
        arrays["targets"] = _host(targets)
    for name, value in arrays.items():
        dims = ("probe", *(f"{name}.d{i}" for i in range(1, value.ndim)))
        if name in ("inputs", "targets"):
            dims = ("probe", *(f"probe.d{i}" for i in range(1, value.ndim)))
        floating = np.issubdtype(value.dtype, np.floating)
        arr = group.create_array(
            name,
            shape=value.shape,
            chunks=value.shape if value.size else "auto",
            dtype=value.dtype,
            fill_value=np.nan if floating else 0,
            compressors=[ZstdCodec(level=1), Crc32cCodec()],
            dimension_names=dims,
            overwrite=True,
        )
        arr[...] = value


def read_probe(root: zarr.Group) -> tuple[Any, torch.Tensor | None]:
    """The stored probe batch (a tensor, dict or tuple of CPU tensors) and targets or None."""
    from ._probe import probe_from_arrays

    group: Any = root["probe"]
    arrays = {name: np.asarray(arr[...]) for name, arr in group.arrays()}
    targets = torch.from_numpy(arrays["targets"]) if "targets" in arrays else None
    return probe_from_arrays(arrays), targets


def consolidate(root: Any) -> None:
    """Consolidate metadata once, at close, so ``xr.open_zarr(store, group=...)`` opens the
    finished run quietly. Readers of live runs (``open_run``) never trust it, and the first
    attrs write of a resume drops it (docs/storage-notes.md: consolidated metadata of a v3
    store warns, and can disagree with the real metadata after a resize)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
        warnings.filterwarnings("ignore", message="Numcodecs codecs are not in the Zarr")
        zarr.consolidate_metadata(root.store, path=root.path or None)


def stored_bytes(root: zarr.Group, groups: list[str]) -> int | None:
    """Bytes the groups occupy in the store (None where the store cannot say)."""
    from zarr.core.sync import sync

    try:
        return sum(sync(root.store.getsize_prefix(f"{root.path}/{g}".lstrip("/"))) for g in groups)
    except (NotImplementedError, OSError) as exc:
        log.info("dimlapse: could not size the store: %s", exc)
        return None
