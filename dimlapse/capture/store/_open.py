"""Opening a run store: for writing (new, replaced or resumed), for reading, and its checks.

The only code that opens a run's root group (docs/store-layout.md, layout_version 2). Readers
and writers of a live run never trust consolidated metadata (it is written once, at close, and
can disagree with the real metadata after a resize); only :func:`update_attrs` keeps it, for
attrs added to a finished run.
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import Any, Literal

import zarr
from zarr.errors import GroupNotFoundError

from ._lock import check_unlocked

log = logging.getLogger("dimlapse.capture")
LAYOUT_VERSION = 2
READABLE_LAYOUTS = (1, 2)  # 2 adds spectra/ and the checksum on every chunk
GROUPS = ("scalars", "weights", "activations", "state")
NOT_FOUND = (FileNotFoundError, GroupNotFoundError)  # what opening a missing group raises


class RunExistsError(FileExistsError):
    """A run store already exists where a new run was asked for."""


class RunNotFoundError(FileNotFoundError):
    """``resume=True`` was asked for but there is no run store to resume."""


def _local_path(store: Any) -> str | None:
    if isinstance(store, os.PathLike):
        return os.fspath(store)
    if isinstance(store, str) and "://" not in store:
        return store
    if isinstance(store, str) and store.startswith("file://"):
        return store.removeprefix("file://")
    return None


def open_root(store: Any, *, path: str | None = None, mode: Literal["r", "r+"] = "r") -> zarr.Group:
    """A run's root group as stored (``mode`` ``"r"`` or ``"r+"``), consolidated metadata
    ignored; raises one of :data:`NOT_FOUND` when there is none."""
    return zarr.open_group(store, path=path, mode=mode, use_consolidated=False)


def existing_root(store: Any) -> zarr.Group | None:
    """A run's root group, read-only, or None when ``store`` holds none."""
    try:
        return open_root(store)
    except NOT_FOUND:
        return None


def open_store(store: Any, *, overwrite: bool, resume: bool) -> zarr.Group:
    """Open the root group for writing: a new run, a replaced run, or a resumed run.

    Raises :class:`RunExistsError` / :class:`RunNotFoundError` / ``ValueError`` for refusals;
    any other exception is a store error (unwritable path, full disk, ...).
    """
    existing = existing_root(store)
    if resume:
        if existing is None:
            raise RunNotFoundError(
                f"Expected a run store to resume at {store!r}, found none; "
                "drop resume=True to start a new run"
            )
        check_layout(dict(existing.attrs), store)
        root = open_root(store, mode="r+")
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


def stored_attr(store: Any, key: str, default: Any) -> Any:
    """One root attr of the run at ``store``, or ``default`` (no run, or no such attr)."""
    root = existing_root(store)
    return default if root is None else root.attrs.get(key, default)


def update_attrs(store: Any, attrs: dict[str, Any]) -> None:
    """Merge ``attrs`` into the root attrs of a finished run, keeping its consolidated
    metadata (so ``xr.open_zarr`` still opens it quietly)."""
    zarr.open_group(store, mode="r+").update_attributes(attrs)


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
