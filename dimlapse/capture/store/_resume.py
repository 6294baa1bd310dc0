"""The last complete snapshot of a run, defined once (the Recorder and the CLI both use it).

Each group's ``step`` index is written last at each flush, so its valid (>= 0) prefix marks
the rows that are complete. A snapshot is complete when every snapshot group holds it:
``weights``, ``state``, ``activations`` and, in spectra mode, ``spectra/*``. Groups may be one
chunk apart after a kill (flushes of different groups are not simultaneous); the shortest wins.
In a sharded run every rank but 0 keeps its own step index of a group under
``shards/r<rank>/<group>/step`` (rank 0's is the group's own): the shortest of all of them
wins, so a snapshot is complete when every rank wrote its blocks of it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

log = logging.getLogger("dimlapse.capture")


class _Trimmable(Protocol):
    """A group the writer appends to (``writer.ChunkedGroup``): its step index and a trim."""

    step_array: Any

    def trim(self, n: int) -> None: ...

    def steps(self) -> np.ndarray: ...


class _Groups(Protocol):
    """What a resume trims: the writer's sink (``writer.SnapshotSink``), by its groups."""

    root: Any

    @property
    def groups(self) -> Mapping[str, _Trimmable]: ...


def valid_prefix(steps: np.ndarray) -> int:
    """Length of the longest prefix of a step index holding written (>= 0) entries."""
    bad = np.flatnonzero(steps < 0)
    return int(bad[0]) if bad.size else int(steps.size)


def _dense_groups(root: Any) -> list[str]:
    """Groups written at every capture step (spectra mode writes full groups sparsely)."""
    if root.attrs.get("mode") == "spectra":
        return [g for g in ("spectra/weights", "spectra/activations") if _has_step(root, g)]
    return [g for g in ("weights", "state", "activations") if _has_step(root, g)]


def _has_step(root: Any, group: str) -> bool:
    try:
        return "step" in root[group]
    except KeyError:
        return False


def last_complete(root: Any) -> tuple[int, int | None]:
    """(rows, step) of the last complete snapshot of a run: ``(0, None)`` when none is.

    Parameters
    ----------
    root : zarr.Group
        The run's root group.
    """
    groups = _dense_groups(root)
    if not groups:
        return 0, None
    steps = [np.asarray(root[g]["step"][:]) for g in groups]
    n = min(valid_prefix(s) for s in [*steps, *rank_indexes(root, groups)])
    return n, (int(steps[0][n - 1]) if n else None)


def rank_indexes(root: Any, groups: list[str]) -> list[np.ndarray]:
    """The step indexes other ranks of a sharded run keep of ``groups`` (none otherwise)."""
    if "shards" not in root:
        return []
    found = []
    for _, rank in root["shards"].groups():
        for g in groups:
            if _has_step(rank, g):
                found.append(np.asarray(rank[g]["step"][:]))
    return found


def trim_for_resume(sink: _Groups, start_step: int | None) -> tuple[int, bool]:
    """Cut every group back to the last complete snapshot (or to ``start_step``).

    Returns the step training continues from, and whether its state must be captured
    (``start_step`` between two stored snapshots, or no complete snapshot at all).
    """
    root = sink.root
    n, last = last_complete(root)
    if n == 0 or last is None:  # killed before its first chunk landed: start over
        log.info("dimlapse: the run being resumed holds no complete snapshot; starting at 0")
        for g in sink.groups.values():
            g.trim(0)
        return start_step or 0, True
    if start_step is not None and start_step > last:
        raise ValueError(
            f"Expected `start_step` <= {last} (the last complete snapshot) when resuming, "
            f"got {start_step}"
        )
    cut = last if start_step is None else start_step
    for name, g in sink.groups.items():
        if name == "scalars":
            continue
        s = g.step_array[:]
        g.trim(int((s[: valid_prefix(s)] <= cut).sum()))
    scalars = sink.groups.get("scalars")
    if scalars is not None:
        s = scalars.step_array[:]
        scalars.trim(int((s[: valid_prefix(s)] <= cut).sum()))
    dense = [g for g in _dense_groups(root) if g in sink.groups]
    kept = sink.groups[dense[0]].steps() if dense else np.zeros(0, np.int64)
    return cut, kept.size == 0 or int(kept[-1]) != cut
