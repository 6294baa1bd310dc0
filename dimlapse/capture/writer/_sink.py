"""Store rows from host arrays: snapshots, spectra and scalar rows into chunked groups.

:class:`SnapshotSink` is the only code that appends to a run's groups; the writer (process or
thread) and ``replay`` both use it. It also tracks non-finite values (recorded as they are and
listed in the root ``nonfinite`` attr).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np
import zarr

from ._chunks import ChunkedGroup
from ._shards import ShardGroup, ShardSpec

log = logging.getLogger("dimlapse.capture")

_FLOAT64_SCALARS = frozenset({"wall_time", "lr"})
SNAPSHOT_GROUPS = ("weights", "state", "activations")


class Tap(Protocol):
    """A module's probe hook as the sink sees it (``capture._taps.Tap``): its reduction's
    description (``module_type``, ``reduction``, ``rows_per_example``, sampled positions)."""

    meta: dict[str, Any] | None


def _nonfinite(name: str, values: np.ndarray) -> np.ndarray:
    """Non-finite scalar values worth reporting: NaN or Inf in the loss and gradient norm,
    Inf elsewhere (other scalars may use NaN for "not measured at this step", like the
    held-out accuracy recorded at capture steps only)."""
    if name in ("loss", "grad_norm"):
        return np.asarray(~np.isfinite(values))
    return np.asarray(np.isinf(values))


def owner(name: str) -> str:
    """The module owning a parameter (``fc1.weight`` -> ``fc1``); the name itself at the root."""
    return name.rsplit(".", 1)[0] if "." in name else name


class SnapshotSink:
    """Appends snapshots, spectra and scalar rows to the store groups; tracks non-finite values.

    Parameters
    ----------
    root : zarr.Group
        The run's root group (open for writing).
    chunk : int
        Rows per chunk of the snapshot and spectra groups (= snapshots per flush).
    scalar_chunk : int
        Rows per chunk of ``scalars``.
    codec : str
        Codec of float data arrays (``scalars`` and ``state`` are always lossless).
    probe_examples : int
        Examples in the probe batch (an attr of every activation array).
    groups : tuple of str
        Groups to write (``scalars``, ``weights``, ``state``, ``activations``,
        ``spectra/weights``, ``spectra/activations``).
    sparse_chunk : int, optional
        Rows per chunk of the snapshot groups when they are written on a sparse schedule
        (spectra mode); default ``chunk``.
    shard : ShardSpec, optional
        A sharded run (``_shards.py``): the groups in ``shard.blocks`` get this rank's blocks of
        arrays rank 0 declared; the writer's attrs go to this rank's ``shards/r<rank>`` group.
    """

    def __init__(
        self,
        root: zarr.Group,
        *,
        chunk: int,
        scalar_chunk: int,
        codec: str,
        probe_examples: int,
        groups: tuple[str, ...] = ("scalars", "weights", "activations", "state"),
        sparse_chunk: int | None = None,
        shard: ShardSpec | None = None,
    ) -> None:
        self.root = root
        self.shard = shard
        # where the writer's own attrs (status, stats, nonfinite) go
        self.attrs_group: zarr.Group = (
            root if shard is None else root.require_group(shard.attrs_path)
        )
        self.probe_examples = probe_examples
        self.groups: dict[str, ChunkedGroup] = {}
        for name in groups:
            if name == "scalars":
                size = scalar_chunk
            elif name in SNAPSHOT_GROUPS and sparse_chunk is not None:
                size = sparse_chunk
            else:
                size = chunk
            lossless = name in ("scalars", "state") or name.startswith("spectra")
            group_codec = "zstd" if lossless else codec
            if shard is not None and name in shard.blocks:
                self.groups[name] = ShardGroup(
                    root.require_group(name),
                    index_group=root.require_group(shard.index_path(name)),
                    blocks=shard.blocks[name],
                    owner=shard.rank == 0,
                    chunk=size,
                    codec=group_codec,
                )
                continue
            self.groups[name] = ChunkedGroup(
                root.require_group(name), chunk=size, codec=group_codec
            )
        self.nonfinite: dict[str, list[int]] = {}
        self.nonfinite_dirty = False
        self.snapshots = 0

    def reload(self) -> None:
        """Continue groups already in the store: reload each one's partial last chunk."""
        for group in self.groups.values():
            steps = group.step_array[:]
            bad = np.flatnonzero(steps < 0)
            group.trim(int(bad[0]) if bad.size else int(steps.size))

    def check(self, group: str, step: int, values: dict[str, np.ndarray]) -> None:
        """Record (and warn once per array about) NaN/Inf values."""
        for name, value in values.items():
            # a float sum is finite whenever every value is (NaN and Inf propagate); only when
            # it is not (NaN/Inf, or a rare overflow) is the exact check paid for
            if (
                value.dtype.kind == "f"
                and not np.isfinite(value.sum())
                and not np.isfinite(value).all()
            ):
                key = f"{group}/{name}"
                if key not in self.nonfinite:
                    log.warning(
                        "dimlapse: non-finite values (NaN/Inf) in %s at step %d; recorded as is "
                        "and listed in the store's `nonfinite` attr",
                        key,
                        step,
                    )
                self.nonfinite.setdefault(key, []).append(step)
                self.nonfinite_dirty = True

    def _nonfinite_steps(self, key: str, steps: list[int]) -> None:
        if key not in self.nonfinite:
            log.warning(
                "dimlapse: non-finite values (NaN/Inf) in %s at step %d; recorded as is and "
                "listed in the store's `nonfinite` attr",
                key,
                steps[0],
            )
            self.nonfinite_dirty = True
        self.nonfinite.setdefault(key, []).extend(int(s) for s in steps)

    def _commit_scalars_before(self, group: str) -> None:
        """A snapshot that completes a chunk commits the scalar rows up to it first (a partial,
        tiny chunk), so a store holding snapshot S always holds the scalars up to S."""
        g = self.groups.get(group)
        if "scalars" in self.groups and g is not None and g.count + 1 == g.chunk:
            self.groups["scalars"].flush()

    def snapshot(
        self,
        step: int,
        *,
        weights: dict[str, np.ndarray] | None,
        state: dict[str, np.ndarray] | None,
        activations: dict[str, np.ndarray] | None,
        taps: Mapping[str, Tap] | None = None,
    ) -> None:
        """Append one capture step to ``weights``, ``state`` and ``activations`` (those given)."""
        first = next((g for g in SNAPSHOT_GROUPS if g in self.groups), None)
        if first is not None:
            self._commit_scalars_before(first)
        for group, values in (("weights", weights), ("state", state)):
            if group not in self.groups or values is None:
                continue
            g = self.groups[group]
            if g.knows(values):  # the per-snapshot path: no metadata to build
                g.append(step, values)
                continue
            kind = "weight" if group == "weights" else "state"
            g.append(
                step,
                values,
                attrs={n: {"layer": owner(n), "kind": kind} for n in values},
                dims={
                    n: ("step", *(f"{n}.d{i}" for i in range(v.ndim))) for n, v in values.items()
                },
            )
        if activations is not None and "activations" in self.groups:
            g = self.groups["activations"]
            if g.knows(activations):
                g.append(step, activations)
            else:
                g.append(
                    step,
                    activations,
                    attrs={n: self._activation_attrs(n, taps) for n in activations},
                    dims={n: ("step", f"{n}.sample", f"{n}.feature") for n in activations},
                )
        self.snapshots += 1

    def _activation_attrs(self, name: str, taps: Mapping[str, Tap] | None) -> dict[str, Any]:
        meta = dict((taps[name].meta or {}) if taps and name in taps else {})
        return {"layer": name, "kind": "activation", "probe_examples": self.probe_examples, **meta}

    def spectra(
        self,
        step: int,
        *,
        weights: dict[str, np.ndarray],
        activations: dict[str, np.ndarray],
        shapes: dict[str, tuple[int, int]],
        taps: Mapping[str, Tap] | None = None,
    ) -> None:
        """Append one capture step's singular values (float64, descending) to ``spectra/*``.

        ``shapes`` gives the (rows, columns) of the matrix each spectrum was taken of.
        """
        self._commit_scalars_before("spectra/weights")
        for group, values, kind in (
            ("spectra/weights", weights, "weight"),
            ("spectra/activations", activations, "activation"),
        ):
            if group not in self.groups or not values:
                continue
            attrs = {}
            for n in values:
                base = (
                    {"layer": owner(n), "kind": kind}
                    if kind == "weight"
                    else self._activation_attrs(n, taps)
                )
                rows, cols = shapes[f"{kind}:{n}"]
                attrs[n] = {
                    **base,
                    "matrix_shape": [int(rows), int(cols)],
                    "centered": kind == "activation",
                    "long_name": "singular value",
                }
            self.groups[group].append(
                step,
                values,
                attrs=attrs,
                dims={n: ("step", f"{n}.component") for n in values},
                dtypes={n: np.float64 for n in values},
            )

    def scalars(self, rows: list[tuple[int, dict[str, float]]]) -> None:
        """Append one row per optimizer step (values are plain floats by now)."""
        if not rows or "scalars" not in self.groups:
            return
        group = self.groups["scalars"]
        keys = set(rows[0][1])
        if group.knows(rows[0][1]) and all(set(r) == keys for _, r in rows):
            # the steady state: same scalars every step, arrays exist -> one block copy
            steps = np.fromiter((s for s, _ in rows), dtype=np.int64, count=len(rows))
            columns = {
                k: np.fromiter(
                    (r[k] for _, r in rows),
                    dtype=np.float64 if k in _FLOAT64_SCALARS else np.float32,
                    count=len(rows),
                )
                for k in keys
            }
            for k, col in columns.items():
                bad = _nonfinite(k, col)
                if bad.any():
                    self._nonfinite_steps(f"scalars/{k}", steps[bad].tolist())
            group.extend(steps, columns)
            return
        for step, row in rows:
            values = {
                k: np.asarray(v, dtype=np.float64 if k in _FLOAT64_SCALARS else np.float32)
                for k, v in row.items()
            }
            for k, v in values.items():
                if _nonfinite(k, v).any():
                    self._nonfinite_steps(f"scalars/{k}", [step])
            if group.knows(values):
                group.append(step, values)
                continue
            group.append(
                step,
                values,
                attrs={k: {"kind": "scalar"} for k in values},
                dims={k: ("step",) for k in values},
                dtypes={k: v.dtype for k, v in values.items()},
            )

    def flush(self) -> None:
        """Write every partial chunk and trim the arrays to the rows written (at close)."""
        for group in self.groups.values():
            group.flush(final=True)

    def flush_what_is_good(self) -> None:
        """After an error: write each group's complete rows, one group failing not the others."""
        for name, group in self.groups.items():
            try:
                group.flush(final=True)
            except Exception as exc:  # the store may be what broke; keep trying the others
                log.warning("dimlapse: could not flush %s after an error: %s", name, exc)

    @property
    def bytes_raw(self) -> int:
        return sum(g.bytes_raw for g in self.groups.values())
