"""Integrity checks on the read side: corrupt, truncated or missing chunks are never analysed.

Every chunk the recorder writes carries a CRC32C checksum (docs/storage-notes.md, "Integrity").
Reading goes through :class:`CheckedArray`, so a chunk that fails its checksum or does not
decode raises :class:`StoreIntegrityError` naming the array and the steps it holds, instead
of a bare codec error or silently wrong values. :func:`missing_rows` finds chunks that the
step index says were written but that are absent from the store (zarr would read them as the
NaN fill value).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["CheckedArray", "StoreIntegrityError", "index_gaps", "missing_rows", "step_range"]


class StoreIntegrityError(ValueError):
    """Stored data failed an integrity check (checksum, truncated, missing or unparsable)."""


def step_range(steps: np.ndarray, start: int, stop: int) -> str:
    """``"steps a-b"`` for rows ``[start, stop)`` of an array indexed by `steps`."""
    n = int(steps.size)
    if start >= n or stop <= start:
        return f"rows {start}-{stop - 1}"
    last = min(stop, n) - 1
    return f"steps {int(steps[start])}-{int(steps[last])} (rows {start}-{last})"


def _rows(key: Any, length: int) -> tuple[int, int]:
    first = key[0] if isinstance(key, tuple) else key
    if isinstance(first, slice):
        start, stop, _ = first.indices(length)
        return start, stop
    if isinstance(first, int | np.integer):
        return int(first), int(first) + 1
    return 0, length


class CheckedArray:
    """A zarr array whose reads name the array and the steps of any chunk that fails.

    Parameters
    ----------
    array : zarr.Array
        Array with ``step`` as its first dimension.
    label : str
        ``<group>/<name>`` as shown in errors.
    steps : numpy.ndarray, shape (n,)
        The valid step index of the group (rows beyond it are named by row).
    """

    def __init__(self, array: Any, label: str, steps: np.ndarray) -> None:
        self.array, self.label, self.steps = array, label, steps
        self.shape, self.dtype, self.ndim = array.shape, array.dtype, array.ndim

    def __getitem__(self, key: Any) -> np.ndarray:
        try:
            return self.array[key]
        except Exception as exc:  # any codec failure: checksum, zstd frame, short buffer
            start, stop = _rows(key, self.shape[0])
            bad = self._failing_chunks(start, stop) or [(start, stop)]
            where = ", ".join(step_range(self.steps, a, b) for a, b in bad)
            raise StoreIntegrityError(
                f"{self.label}: the chunk holding {where} is corrupt or truncated "
                f"({type(exc).__name__}: {exc}); this data cannot be analysed. Re-record the "
                "run, or restore the store from a copy"
            ) from exc

    def _failing_chunks(self, start: int, stop: int) -> list[tuple[int, int]]:
        """Row ranges of the store chunks in ``[start, stop)`` that fail to read on their own."""
        c0 = self.array.chunks[0]
        out = []
        for a in range(start - start % c0, stop, c0):
            b = min(a + c0, self.shape[0])
            try:
                self.array[a:b]
            except Exception:
                out.append((max(a, start), min(b, stop)))
        return out


def missing_rows(array: Any, n: int) -> list[tuple[int, int]]:
    """Row ranges ``[start, stop)`` below `n` whose chunks are absent from the store.

    Cheap when nothing is missing (one listing of the array's keys); the exact chunk list is
    taken only when the count of stored chunks is short.
    """
    if n <= 0 or array.nchunks_initialized >= array.nchunks:
        return []
    from zarr.core.array import _shards_initialized
    from zarr.core.sync import sync

    present = set(sync(_shards_initialized(array._async_array)))
    c0 = array.chunks[0]
    out: list[tuple[int, int]] = []
    for key in array._iter_shard_keys():
        if key in present:
            continue
        i = int(key.split("/")[1]) if key.startswith("c/") else int(key.split(".")[0])
        start, stop = i * c0, min((i + 1) * c0, n)
        if start < n and (start, stop) not in out:
            out.append((start, stop))
    return sorted(out)


def _present_chunks(array: Any) -> set[int]:
    from zarr.core.array import _shards_initialized
    from zarr.core.sync import sync

    keys = sync(_shards_initialized(array._async_array))
    return {int(k.split("/")[1]) if k.startswith("c/") else int(k.split(".")[0]) for k in keys}


def index_gaps(step: Any) -> list[tuple[int, int]]:
    """Row ranges ``[start, stop)`` of a step index's chunks that are absent from the store
    while a later chunk is present (a live store's index runs ahead of its last chunk with
    absent chunks; a hole before a written chunk is damage: the run would read as shorter).

    One listing of the array's keys, only when some chunk is absent.
    """
    if step.shape[0] == 0 or step.nchunks_initialized >= step.nchunks:
        return []
    present = _present_chunks(step)
    if not present:
        return []
    c0 = step.chunks[0]
    return [(i * c0, (i + 1) * c0) for i in range(max(present)) if i not in present]
