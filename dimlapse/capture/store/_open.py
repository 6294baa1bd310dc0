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


def check_location(store: Any) -> Any:
    """The store to write, refused before anything is touched when its path names no run.

    An empty path (an unset environment variable), or one that resolves to the filesystem
    root, the home folder, or the current folder or one of its parents, would make
    ``overwrite=True`` delete what is there. ``file://`` URLs become plain paths (fsspec's
    local filesystem does not create folders). Returns the store to use.
    """
    if isinstance(store, os.PathLike):
        store = os.fspath(store)
    if not isinstance(store, str):
        return store
    if store.startswith("file://"):
        store = store.removeprefix("file://")
    if "://" in store:
        if not store.split("://", 1)[1].strip("/ "):
            raise ValueError(f"Expected `store` to name a run, got the bare URL {store!r}")
        return store
    if not store.strip():
        raise ValueError(
            f"Expected `store` to be a path or URL naming a run (e.g. 'data/runs/my.zarr'), got "
            f"{store!r} (an unset environment variable?)"
        )
    path = os.path.realpath(store)
    cwd = os.path.realpath(os.getcwd())
    forbidden = {os.path.realpath(os.path.expanduser("~")), os.path.realpath(os.sep)}
    if path in forbidden or cwd == path or cwd.startswith(path.rstrip(os.sep) + os.sep):
        raise ValueError(
            f"Expected `store` to name a run's own folder (e.g. 'data/runs/my.zarr'), got "
            f"{store!r}, which resolves to {path!r}: the root, the home folder, or the current "
            "folder or one above it"
        )
    return store


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


def open_store(store: Any, *, overwrite: bool, resume: bool, locked: bool = False) -> zarr.Group:
    """Open the root group for writing: a new run, a replaced run, or a resumed run.

    ``locked``: the caller holds the store's writer lease (:func:`acquire_lock`), so two
    racing starts cannot both replace it. Raises :class:`RunExistsError` /
    :class:`RunNotFoundError` / ``ValueError`` for refusals; any other exception is a store
    error (unwritable path, full disk, ...).
    """
    store = check_location(store)
    local = _local_path(store)
    if local is not None and os.path.lexists(local) and not os.path.isdir(local):
        raise RunExistsError(
            f"{store!r} exists and is not a folder (a file?); refusing to overwrite it, "
            "choose another path"
        )
    existing = existing_root(store)
    if resume:
        if existing is None:
            raise RunNotFoundError(
                f"Expected a run store to resume at {store!r}, found none; "
                "drop resume=True to start a new run"
            )
        check_layout(dict(existing.attrs), store)
        root = open_root(store, mode="r+")
        if not locked:
            check_unlocked(store)
        return root
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
        if not locked:
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
