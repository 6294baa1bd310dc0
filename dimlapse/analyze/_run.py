"""Open a run store (docs/store-layout.md) as lazy xarray datasets: the reader side of capture."""

from __future__ import annotations

import os
import warnings
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
import zarr
from zarr.errors import GroupNotFoundError

from ._integrity import (
    CheckedArray,
    StoreIntegrityError,
    index_gaps,
    missing_rows,
    step_range,
)

LAYOUT_VERSION = 2
READABLE_LAYOUTS = (1, 2)  # 2: spectra/ groups (spectra mode), a checksum on every chunk
_TARGET_STEP_CHUNK = 64  # dask chunks along step: a multiple of the store's chunk, ~64 rows
# groups written at the same capture steps: a reader shows them up to their common last step
# (a flush writes one group after the other). spectra/* are written at every capture step,
# weights/state/activations only every `full_every` steps in spectra mode: two families.
FAMILIES = (("weights", "state", "activations"), ("spectra/weights", "spectra/activations"))


def _valid_prefix(steps: np.ndarray) -> int:
    bad = np.flatnonzero(steps < 0)
    return int(bad[0]) if bad.size else int(steps.size)


def _rank_prefixes(root: zarr.Group, name: str) -> list[int]:
    """Sharded runs: complete rows of the step index each other rank keeps of group ``name``
    (``shards/r<rank>/<name>/step``); a row is complete when every rank wrote its blocks."""
    if "shards" not in root:
        return []
    found = []
    for _, rank in root["shards"].groups():  # type: ignore[union-attr]
        if name in rank and "step" in rank[name]:  # type: ignore[operator]
            found.append(_valid_prefix(np.asarray(rank[name]["step"][:])))  # type: ignore[index]
    return found


def _damaged(where: str, exc: Exception) -> StoreIntegrityError:
    return StoreIntegrityError(
        f"{where}: its metadata (zarr.json) cannot be read ({type(exc).__name__}: {exc}); the "
        "store is damaged. Re-record the run, or restore the store from a copy"
    )


def _contents(root: zarr.Group) -> dict[str, Any]:
    """The root attrs' ``contents``: groups (and, once closed, arrays and rows) of the run."""
    value: Any = root.attrs.get("contents")
    return dict(value) if isinstance(value, dict) else {}


def _quiet_open(root: zarr.Group, key: str) -> Any:
    try:
        with warnings.catch_warnings():
            # bitround runs use a numcodecs codec, which zarr flags as outside the v3 spec
            warnings.filterwarnings("ignore", message="Numcodecs codecs are not in the Zarr")
            return root[key]
    except (ValueError, TypeError, KeyError) as exc:
        raise _damaged(f"group {key!r}", exc) from exc


def _quiet_arrays(group: zarr.Group, *, live: bool = True) -> dict[str, Any]:
    """The group's arrays. A folder without metadata is an array being created in a live
    store (skipped), and damage in a finished one (its zarr.json deleted)."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            warnings.filterwarnings("ignore", message="Numcodecs codecs are not in the Zarr")
            found = dict(group.arrays())
    except (ValueError, TypeError, KeyError) as exc:
        raise _damaged(f"an array of group {group.path!r}", exc) from exc
    for w in caught:
        text = str(w.message)
        if "not recognized as a component" not in text:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        elif not live:
            raise StoreIntegrityError(
                f"group {group.path!r}: {text} (an array whose zarr.json was deleted?); "
                "restore the store from a copy or re-record the run"
            )
    return found


def _checked(arr: Any, label: str, steps: np.ndarray, n: int) -> CheckedArray:
    """`arr` wrapped for reading; raises when chunks the step index counts are missing."""
    gaps = missing_rows(arr, n)
    if gaps:
        where = ", ".join(step_range(steps, a, b) for a, b in gaps)
        raise StoreIntegrityError(
            f"{label}: chunks holding {where} are missing from the store although its step "
            "index says they were written; zarr would read them as NaN, so the run is not "
            "analysed. Restore the store from a copy or re-record the run"
        )
    return CheckedArray(arr, label, steps)


class Run:
    """A captured run: lazy ``weights``, ``activations``, ``scalars``, ``state``, ``probe``.

    Every access re-opens the store's arrays (Zarr caches metadata), so a run that is still
    being written shows its newest complete snapshot. Each group is trimmed to the valid
    prefix of its ``step`` index, the crash rule of the layout.
    """

    def __init__(self, path: Any, root: zarr.Group) -> None:
        self.path = path
        self._store = root.store

    def _root(self) -> zarr.Group:
        return zarr.open_group(self._store, mode="r", use_consolidated=False)

    @property
    def attrs(self) -> dict[str, Any]:
        """Root attributes (status, config, provenance, schedule, ...)."""
        return dict(self._root().attrs)

    @property
    def status(self) -> str:
        """``running``, ``complete``, ``crashed`` or ``degraded``."""
        return str(self.attrs.get("status"))

    def _read(self, root: zarr.Group, name: str) -> tuple[Any, dict[str, Any], np.ndarray, int]:
        """One group as stored: (group, data arrays, step index, complete rows); checks it
        against the root attrs' ``contents`` (groups, arrays, rows the writer wrote)."""
        contents = _contents(root)
        if name not in root:
            if name in contents.get("groups", []):
                raise StoreIntegrityError(
                    f"group {name!r} is missing from the store although its root attrs list it "
                    "(its zarr.json deleted?); restore the store from a copy or re-record the run"
                )
            return None, {}, np.zeros(0, np.int64), 0
        group = _quiet_open(root, name)
        found = _quiet_arrays(group, live=root.attrs.get("status") == "running")
        lost = [k for k in (contents.get("arrays") or {}).get(name, []) if k not in found]
        if lost:
            raise StoreIntegrityError(
                f"group {name!r}: arrays {lost} are missing from the store although the writer "
                "wrote them (their zarr.json deleted?); restore the store from a copy or "
                "re-record the run"
            )
        arrays = {k: found[k] for k in sorted(found) if k != "step"}
        n = 0
        steps = np.zeros(0, np.int64)
        if "step" in found:
            gaps = index_gaps(found["step"])
            if gaps:
                where = ", ".join(f"rows {a}-{b - 1}" for a, b in gaps)
                raise StoreIntegrityError(
                    f"{name}/step: chunks holding {where} of the step index are missing while "
                    "later ones exist; the run would read as shorter than it is. Restore the "
                    "store from a copy or re-record the run"
                )
            steps = np.asarray(CheckedArray(found["step"], f"{name}/step", steps)[:])
            n = min([_valid_prefix(steps), *_rank_prefixes(root, name)])
        rows = (contents.get("rows") or {}).get(name)
        if rows is not None and n < rows:
            raise StoreIntegrityError(
                f"{name}/step holds {n} complete rows, but the writer wrote {rows}; the store "
                "lost data. Restore the store from a copy or re-record the run"
            )
        n = min([n, *(a.shape[0] for a in arrays.values())])  # data written before the index
        return group, arrays, steps, n

    def _lengths(self, root: zarr.Group, names: tuple[str, ...]) -> dict[str, int]:
        """Rows to show of each group in the families of ``names``: every group of a family
        ends at the family's common last step (each step index is read once here). Groups
        without data arrays do not count."""
        out: dict[str, int] = {}
        for family in FAMILIES:
            if not any(n in family for n in names):
                continue
            read = {}
            for g in family:
                group, arrays, steps, n = self._read(root, g)
                if group is not None and arrays:
                    read[g] = (steps, n)
            if not read:
                continue
            if any(n == 0 for _, n in read.values()):
                last = -1  # one group has no complete row yet: nothing is common
            else:
                last = min(int(steps[n - 1]) for steps, n in read.values())
            for g, (steps, n) in read.items():
                out[g] = int(np.searchsorted(steps[:n], last, side="right"))
        return out

    def _group(self, name: str, lengths: dict[str, int] | None = None) -> xr.Dataset:
        root = self._root()
        group, arrays, steps, n = self._read(root, name)
        if group is None:
            return xr.Dataset(coords={"step": np.zeros(0, np.int64)})
        if lengths is None:
            lengths = self._lengths(root, (name,))
        n = min(n, lengths.get(name, n))
        data_vars = {}
        for key, arr in arrays.items():
            store_chunk = arr.chunks[0]
            step_chunk = store_chunk * max(1, _TARGET_STEP_CHUNK // store_chunk)
            # dim 1 keeps the store's blocks: one per rank in a sharded run, whose spectra are
            # summed over them (analyze/_row_blocks.py); one block in any other run
            chunks = (step_chunk, *arr.chunks[1:2], *arr.shape[2:])
            lazy = da.from_array(
                _checked(arr, f"{name}/{key}", steps, n),
                chunks=chunks,
                name=f"dimlapse-{name}-{key}-{arr.shape}",
                asarray=True,
                lock=False,
                fancy=False,
                meta=np.empty((0,) * arr.ndim, dtype=arr.dtype),
            )
            dims = arr.metadata.dimension_names or (
                "step",
                *(f"{key}.d{i}" for i in range(arr.ndim - 1)),
            )
            data_vars[key] = xr.Variable(dims, lazy[:n], attrs=dict(arr.attrs))
        coords = {"step": steps[:n] if n else np.zeros(0, np.int64)}
        return xr.Dataset(data_vars, coords=coords, attrs=dict(group.attrs))

    @property
    def weights(self) -> xr.Dataset:
        """``(step, ...)`` parameter snapshots; step 0 is the initial state."""
        return self._group("weights")

    @property
    def activations(self) -> xr.Dataset:
        """``(step, <module>.sample, <module>.feature)`` probe activations."""
        return self._group("activations")

    @property
    def scalars(self) -> xr.Dataset:
        """Per-optimizer-step scalars (loss, wall_time, lr, user scalars)."""
        return self._group("scalars")

    @property
    def state(self) -> xr.Dataset:
        """Parameters not under ``weights`` and all buffers, per capture step (for replay)."""
        return self._group("state")

    @property
    def spectra(self) -> dict[str, xr.Dataset]:
        """Spectra-mode runs: ``{"weight": ds, "activation": ds}`` of stored singular values
        ``(step, <name>.component)`` at every capture step (empty for other runs)."""
        root = self._root()
        out = {}
        for kind, name in (("weight", "spectra/weights"), ("activation", "spectra/activations")):
            group: Any = root["spectra"] if "spectra" in root else {}
            if name.split("/")[1] in group:
                out[kind] = self._group(name)
        return out

    @property
    def probe(self) -> xr.Dataset:
        """The fixed probe batch (``inputs``, and ``targets`` when stored)."""
        root = self._root()
        if "probe" not in root:
            return xr.Dataset()
        group: Any = root["probe"]
        data_vars = {}
        for key, arr in _quiet_arrays(group).items():
            dims = arr.metadata.dimension_names or tuple(f"probe.d{i}" for i in range(arr.ndim))
            rows = np.arange(arr.shape[0]) if arr.ndim else np.zeros(0, np.int64)
            checked = _checked(arr, f"probe/{key}", rows, arr.shape[0] if arr.ndim else 0)
            data_vars[key] = xr.Variable(
                dims, da.from_array(checked, chunks=arr.shape, asarray=True, lock=False)
            )
        return xr.Dataset(data_vars)

    def to_datatree(self) -> xr.DataTree:
        """The run as one lazy DataTree: root attrs, one node per group that holds arrays.

        Save it with ``tree.to_zarr(path, consolidated=False)`` (a copy, e.g. of a trimmed crashed
        run) or pass its nodes to the jobs.

        Examples
        --------
        >>> tree = open_run("data/runs/mlp-mnist1d-s0.zarr").to_datatree()  # doctest: +SKIP
        >>> tree["weights"].dims["step"]  # doctest: +SKIP
        1601
        """
        nodes = {"/": xr.Dataset(attrs=self.attrs)}
        lengths = self._lengths(self._root(), FAMILIES[0])  # one view of every group
        for name in ("weights", "activations", "scalars", "state", "probe"):
            ds = self.probe if name == "probe" else self._group(name, lengths)
            if ds.data_vars:
                nodes[name] = ds
        return xr.DataTree.from_dict(nodes)

    def validate(self) -> Run:
        """Check every group's metadata and that no chunk the step index counts is missing.

        Chunk contents are checked (checksum, decoding) when they are read.

        Raises
        ------
        StoreIntegrityError
            Naming the array and the steps of the damage.
        """
        root = self._root()
        lengths = self._lengths(root, tuple(g for f in FAMILIES for g in f))
        for name in ("weights", "activations", "scalars", "state"):
            self._group(name, lengths)
        for name in FAMILIES[1]:
            self._read(root, name)
        if "probe" in _contents(root).get("groups", []) and "probe" not in root:
            raise StoreIntegrityError(
                "group 'probe' is missing from the store although its root attrs list it "
                "(its zarr.json deleted?); restore the store from a copy or re-record the run"
            )
        self.probe  # noqa: B018 (opens and checks the probe arrays)
        return self

    def __repr__(self) -> str:
        return f"Run({self.path!r}, status={self.status!r})"


def open_run(path: Any) -> Run:
    """Open a dimlapse run store for analysis.

    Works on complete, running, crashed and degraded runs: every group is trimmed to its
    last complete snapshot (the valid prefix of its ``step`` index). The store is validated
    on opening (:meth:`Run.validate`); chunk checksums are verified whenever data is read.

    Parameters
    ----------
    path : str, os.PathLike or zarr store
        Local path, fsspec URL (``memory://run.zarr``, ``s3://...``) or a Zarr store.

    Returns
    -------
    Run
        With lazy (dask-backed) ``weights``, ``activations``, ``scalars`` datasets, each with
        a ``step`` coordinate, plus ``probe``, ``attrs`` and ``path``.

    Raises
    ------
    FileNotFoundError
        No store at `path`.
    StoreIntegrityError
        Unreadable metadata (e.g. a truncated ``zarr.json``) or chunks missing below the step
        index; reading a chunk that fails its checksum or does not decode raises it too,
        naming the array and its steps.

    Examples
    --------
    >>> run = open_run("data/runs/mlp-mnist1d-s0.zarr")  # doctest: +SKIP
    >>> run.activations["fc1"].isel(step=-1).shape  # doctest: +SKIP
    (512, 256)
    """
    if isinstance(path, str | os.PathLike) and "://" not in os.fspath(path):
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"No run store at {os.fspath(path)!r}; expected a directory written by "
                "dimlapse.capture.Recorder (see data/runs/)"
            )
    try:
        root = zarr.open_group(path, mode="r", use_consolidated=False)
    except (FileNotFoundError, GroupNotFoundError) as exc:
        raise FileNotFoundError(
            f"No run store at {path!r}; expected a Zarr group written by dimlapse.capture.Recorder"
        ) from exc
    except (ValueError, TypeError, KeyError) as exc:  # e.g. a truncated root zarr.json
        raise _damaged(f"Run store {path!r}", exc) from exc
    version = root.attrs.get("layout_version")
    if version is None:
        raise ValueError(
            f"Expected a dimlapse run store at {path!r}, got a Zarr group without a "
            "`layout_version` attr"
        )
    if version not in READABLE_LAYOUTS:
        raise ValueError(
            f"Expected a run store with layout_version in {READABLE_LAYOUTS} at {path!r}, got "
            f"{version!r}; upgrade dimlapse to read it"
        )
    return Run(path, root).validate()
