"""Sharded runs: every rank writes its own blocks of the same logical arrays.

A parameter sharded along one dimension ``k`` (``Shard(k)``: FSDP2's and a column-wise
layer's ``Shard(0)``, a row-wise layer's ``Shard(1)``) is stored as one array ``(step, d0, ...)``
whose chunk grid along ``dk`` is the shard size ``ceil(dk / n)`` for ``n`` shards (and whole
along every other dimension), so the rank holding shard ``i`` owns exactly block ``i`` (indices
``i * size`` to ``min((i + 1) * size, dk)``; a trailing block may be short or empty, as DTensor's
own shards are). Probe activations ``(step, sample, feature)`` are split the same way along
``sample`` (the probe split by example) or ``feature`` (a tensor-parallel layer's local output
features). No two ranks ever write one chunk: every rank writes whole chunks of its own blocks
straight from its chunk buffer (the entries past a short block, or past the last step of a
partial chunk, hold the fill value).

Rank 0 creates the arrays before any rank writes (:func:`declare_sharded`), owns their metadata
(it alone resizes them) and writes the group's ``step`` index, as in a single-process run.
Every other rank keeps its own step index under ``shards/r<rank>/<group>/step``, written last
at each of its flushes; a reader takes the shortest valid prefix of all of them
(``store.last_complete``, the analysis's ``open_run``), so a rank that died leaves every
rank's common prefix readable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zarr

from ._chunks import WRITE_CONFIG, ChunkedGroup, fill_value, quiet_numcodecs, value_kwargs
from ._encode import ChunkEncoder, write_chunk

SHARDS_GROUP = "shards"


@dataclass(frozen=True)
class Block:
    """One rank's slice of an array along one dimension after ``step`` (``axis`` 0: the
    first after ``step``)."""

    length: int  # the whole dimension (dk of a parameter, sample rows or features)
    size: int  # chunk length along it: ceil(length / shards)
    index: int  # this rank's chunk index along it
    axis: int = 0  # which dimension of a row (the array without ``step``) is split

    def chunks(self, row: tuple[int, ...]) -> tuple[int, ...]:
        """The chunk shape of a row (the whole row but ``size`` along ``axis``)."""
        return tuple(self.size if i == self.axis else d for i, d in enumerate(row))

    def coords(self, ndim: int) -> tuple[int, ...]:
        """This block's chunk coordinates in a row of ``ndim`` dimensions."""
        return tuple(self.index if i == self.axis else 0 for i in range(ndim))

    def within(self, ndim: int) -> tuple[slice, ...]:
        """Index of the first ``local`` entries along ``axis`` of a row of ``ndim`` dims."""
        rest = (slice(None),) * (ndim - self.axis - 1)
        return (slice(None),) * self.axis + (slice(0, self.local),) + rest

    @property
    def start(self) -> int:
        return min(self.index * self.size, self.length)

    @property
    def local(self) -> int:
        """Rows this rank holds (0 for a trailing rank past the end)."""
        return max(0, min(self.start + self.size, self.length) - self.start)


@dataclass(frozen=True)
class ShardSpec:
    """What one rank writes: per group, per array, its :class:`Block` (None: the whole array,
    written by rank 0 alone: buffers, replicated parameters)."""

    rank: int
    world: int
    blocks: dict[str, dict[str, Block | None]] = field(default_factory=dict)

    def index_path(self, group: str) -> str:
        """Where this rank's step index of ``group`` lives."""
        return group if self.rank == 0 else f"{SHARDS_GROUP}/r{self.rank}/{group}"

    @property
    def attrs_path(self) -> str:
        """The group whose attrs hold this rank's writer record (status, rows, stats)."""
        return f"{SHARDS_GROUP}/r{self.rank}"


def block_of(length: int, *, rank: int, world: int, axis: int = 0) -> Block:
    """DTensor's (and FSDP2's) split of ``length`` entries over ``world`` shards
    (``torch.chunk``: ceil-sized shards, trailing ones short or empty); ``rank`` is the
    shard's index."""
    return Block(length=length, size=max(1, math.ceil(length / world)), index=rank, axis=axis)


def declare_sharded(
    group: zarr.Group,
    arrays: dict[str, tuple[tuple[int, ...], Block | None]],
    *,
    chunk: int,
    codec: str,
    attrs: dict[str, dict[str, Any]],
    dims: dict[str, tuple[str, ...]],
    dtypes: dict[str, Any] | None = None,
) -> None:
    """Create (rank 0, before any rank writes) the data arrays of one group: ``arrays[name]``
    is the logical row shape and its block split (None: unsplit). ``dtypes[name]`` (a numpy
    dtype; default float) stores a non-float array (an integer buffer) as
    :meth:`ChunkedGroup.declare` does in a single-process run (:func:`value_kwargs`)."""
    for name, (shape, block) in arrays.items():
        if name in group:
            continue  # a resumed run keeps its arrays
        chunks = (chunk, *(shape if block is None else block.chunks(shape)))
        dtype = np.dtype((dtypes or {}).get(name, np.float32))
        with quiet_numcodecs():
            group.create_array(
                name,
                shape=(0, *shape),
                chunks=chunks,
                dimension_names=dims[name],
                attributes=attrs.get(name, {}),
                config=WRITE_CONFIG,
                **value_kwargs(codec, dtype),
            )


class ShardGroup(ChunkedGroup):
    """A :class:`ChunkedGroup` writing one rank's blocks of arrays that exist already.

    Parameters
    ----------
    group : zarr.Group
        The data group (``weights``, ``activations``).
    index_group : zarr.Group
        Where this rank's ``step`` index lives (``group`` itself on rank 0).
    blocks : dict
        Array name -> this rank's :class:`Block` (None: the whole array).
    owner : bool
        Rank 0: resizes the data arrays (their metadata is one file, written by one rank).
    """

    def __init__(
        self,
        group: zarr.Group,
        *,
        index_group: zarr.Group,
        blocks: dict[str, Block | None],
        owner: bool,
        chunk: int,
        codec: str,
    ) -> None:
        super().__init__(index_group, chunk=chunk, codec=codec)
        self.data_group, self.blocks, self.owner = group, blocks, owner
        self.coords: dict[str, tuple[int, ...]] = {}  # chunk coords after the step axis
        self.block_encoders: dict[str, Any] = {}
        for name, block in blocks.items():
            arr: Any = group[name]
            arr = arr.with_config(WRITE_CONFIG)
            if block is not None and block.local == 0:
                continue  # past the end: this rank holds none of it
            row = tuple(arr.shape[1:])
            if block is not None:
                row = block.chunks(row)
            self.arrays[name] = arr
            self.buffers[name] = self._new_buffer(row, arr.dtype)
            self.coords[name] = block.coords(len(row)) if block is not None else (0,) * len(row)
            if ChunkEncoder.of(arr) is None:
                raise ValueError(
                    f"Expected a codec without filters for a sharded run, got {codec!r} "
                    f"(array {name!r}); use 'lz4', 'zstd', 'blosc-zstd', 'none' or 'float16'"
                )

    def knows(self, values: dict[str, Any]) -> bool:
        return True  # every array was declared by rank 0 before any rank writes

    def append(self, step: int, values: dict[str, np.ndarray], **_: Any) -> None:
        """Add this rank's rows of one step: ``values[name]`` is its local block."""
        for name, value in values.items():
            buf = self.buffers.get(name)
            if buf is None:
                continue  # an empty block
            block = self.blocks[name]
            if block is None:
                buf[self.count] = value
            else:  # a short block fills the start of the chunk along its axis
                index: tuple[int | slice, ...] = (self.count, *block.within(value.ndim))
                buf[index] = value
            self.bytes_raw += value.nbytes
        self.step_buffer[self.count] = step
        self.count += 1
        if self.count == self.chunk:
            self.flush()

    def _flush(self, final: bool) -> None:
        stop = self.base + self.count
        if self.count:
            index = self.base // self.chunk
            for name, arr in self.arrays.items():
                if self.owner and arr.shape[0] < stop:
                    arr.resize((self._capacity(stop), *arr.shape[1:]))
                if name not in self.block_encoders:
                    self.block_encoders[name] = ChunkEncoder.of(arr)
                # a whole chunk of this rank's column, also when partial along step (rows past
                # `count` hold the fill value; readers stop at the step index)
                self.block_encoders[name].write((index, *self.coords[name]), self.buffers[name])
            if self.step_array.shape[0] < stop:
                self.step_array.resize((self._capacity(stop),))
            if self.count == self.chunk:
                write_chunk(self.step_array, self.encoders, index, self.step_buffer)
            else:
                self.step_array[self.base : stop] = self.step_buffer[: self.count]  # LAST
        if final:
            arrays = [*self.arrays.values()] if self.owner else []
            for arr in [*arrays, self.step_array]:
                if arr.shape[0] != stop:
                    arr.resize((stop, *arr.shape[1:]))
        if self.count == self.chunk:
            self.base, self.count = stop, 0
            self.step_buffer[:] = -1

    def _trim(self, n: int) -> None:
        """Resume: keep ``n`` rows; only rank 0 resizes the data arrays (before the others
        start: the Recorder's barrier)."""
        self.base = (n // self.chunk) * self.chunk
        self.count = n - self.base
        if self.step_array.shape[0] != n:
            self.step_array.resize((n,))
        for name, arr in list(self.arrays.items()):
            if self.owner and arr.shape[0] != n:
                arr.resize((n, *arr.shape[1:]))
            if not self.owner:  # re-read the metadata rank 0 trimmed
                self.arrays[name] = arr = zarr.open_array(
                    arr.store_path.store, path=arr.path, mode="r+"
                ).with_config(WRITE_CONFIG)
            buf = self.buffers[name]
            buf[:] = fill_value(buf.dtype)
            block = self.blocks[name]
            if self.count:
                if block is None:
                    buf[: self.count] = arr[self.base : n]
                else:
                    mine = block.within(arr.ndim - 1)
                    taken = list(mine)
                    taken[block.axis] = slice(block.start, block.start + block.local)
                    buf[(slice(0, self.count), *mine)] = arr[(slice(self.base, n), *taken)]
        self.step_buffer[:] = -1
        self.step_buffer[: self.count] = self.step_array[self.base : n]
