"""Whole chunks written straight to the store: the codec chain applied here, one file write.

Zarr's own write path costs 1.6-1.9 ms of CPU per MB of float32 weights on the development
machine, against 0.5 ms/MB for what a chunk needs (a copy into the chunk buffer, CRC-32C, a
page-cache write): it builds the chunk in fresh buffers at every codec (the bytes codec's view,
blosc's output copied into a zarr buffer, the checksum appended by ``np.append``, each a new
51 MB allocation whose pages fault in) and hops through its event loop thread (measured
with ``dimlapse bench capture``'s per-MB table and its ``zarr_writes()`` control). A
capture chunk is always a whole, aligned chunk of a known codec chain, so :func:`write_chunk`
encodes it with the same codecs (numcodecs' Blosc and Zstd, google-crc32c, what zarr itself
calls) and writes the bytes under
the array's own chunk key; zarr reads them back and verifies the checksum as usual. Any other
chain (filters such as bit-rounding, big-endian data, a sharded array) goes through zarr.
"""

from __future__ import annotations

import contextlib
import os
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import google_crc32c
import numpy as np
from numcodecs import Blosc, Zstd
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, ZstdCodec
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import LocalStore

_DIRECT = [True]  # False: every chunk through zarr (the benchmark's control arm)


@contextlib.contextmanager
def zarr_writes() -> Iterator[None]:
    """Within the block, write every chunk through zarr's own pipeline (a control: a writer
    process forked inside the block inherits the setting)."""
    _DIRECT[0] = False
    try:
        yield
    finally:
        _DIRECT[0] = True


_SHUFFLE = {"noshuffle": Blosc.NOSHUFFLE, "shuffle": Blosc.SHUFFLE, "bitshuffle": Blosc.BITSHUFFLE}


def _compressor(codec: Any) -> Any:
    """The numcodecs object doing what a zarr bytes-to-bytes codec does, or None."""
    if isinstance(codec, BloscCodec):
        return Blosc(
            cname=codec.cname.value,
            clevel=codec.clevel,
            shuffle=_SHUFFLE[codec.shuffle.value],
            blocksize=codec.blocksize,
            typesize=codec.typesize,
        )
    if isinstance(codec, ZstdCodec):
        return Zstd(level=codec.level, checksum=codec.checksum)
    return None


class ChunkEncoder:
    """The codec chain of one array, applied to whole chunks without zarr's pipeline.

    ``ChunkEncoder.of(arr)`` is None when the chain is not one this module knows; callers then
    write through zarr.
    """

    def __init__(self, arr: Any, compressors: list[Any], checksum: bool) -> None:
        self.arr = arr
        self.compressors = compressors
        self.checksum = checksum
        store = arr.store_path.store
        self.local_root = str(store.root) if isinstance(store, LocalStore) else None
        self.prefix = arr.store_path.path

    @classmethod
    def of(cls, arr: Any) -> ChunkEncoder | None:
        meta = arr.metadata
        if getattr(meta, "zarr_format", None) != 3:
            return None
        codecs = list(meta.codecs)
        if not codecs or not isinstance(codecs[0], BytesCodec):
            return None  # an array-to-array filter (bit-rounding) or sharding first
        endian = codecs[0].endian
        if endian is not None and endian.value != sys.byteorder:
            return None
        checksum = bool(codecs) and isinstance(codecs[-1], Crc32cCodec)
        middle = codecs[1:-1] if checksum else codecs[1:]
        compressors = [_compressor(c) for c in middle]
        if any(c is None for c in compressors):
            return None
        return cls(arr, compressors, checksum)

    def encode(self, data: np.ndarray) -> list[Any]:
        """The chunk's bytes as a list of buffers (payload, then the 4-byte checksum)."""
        payload: Any = np.ascontiguousarray(data).view(np.uint8).reshape(-1)
        for c in self.compressors:
            payload = np.frombuffer(c.encode(payload), dtype=np.uint8)
        parts = [payload]
        if self.checksum:  # zarr's crc32c codec: little-endian uint32 after the payload
            parts.append(np.array([google_crc32c.value(payload)], dtype="<u4").view(np.uint8))
        return parts

    def write(self, coords: tuple[int, ...], data: np.ndarray) -> int:
        """Write ``data`` (exactly one chunk's shape and the array's dtype) as chunk ``coords``;
        returns the bytes written."""
        parts = self.encode(data)
        key = self.arr.metadata.encode_chunk_key(coords)
        if self.local_root is not None:
            return _write_file(os.path.join(self.local_root, self.prefix, key), parts)
        blob = np.concatenate(parts) if len(parts) > 1 else parts[0]
        buf = default_buffer_prototype().buffer.from_array_like(blob)
        sync(self.arr.store_path.store.set(f"{self.prefix}/{key}".lstrip("/"), buf))
        return int(blob.nbytes)


def _write_file(path: str, parts: list[np.ndarray]) -> int:
    """Write-then-rename, as zarr's LocalStore does (a reader never sees half a chunk); one
    ``writev`` of the parts, no concatenated copy."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{uuid.uuid4().hex}.partial"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        total = sum(p.nbytes for p in parts)
        done = os.writev(fd, [p.data for p in parts])
        if done != total:  # short write (rare): finish with plain writes
            blob = np.concatenate(parts).data[done:]
            while blob:
                blob = blob[os.write(fd, blob) :]
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, path)
    return total


def write_chunk(arr: Any, encoders: dict[int, ChunkEncoder | None], index: int, data: Any) -> None:
    """Write ``data`` as the ``index``-th chunk along ``step`` of ``arr`` (whole extent along
    the other dims), directly when the codec chain is known, else through zarr.

    ``encoders`` caches each array's :class:`ChunkEncoder` (or None) by ``id(arr)``.
    """
    key = id(arr)
    if key not in encoders:
        encoders[key] = ChunkEncoder.of(arr)
    enc = encoders[key]
    chunk = arr.chunks[0]
    if enc is None or not _DIRECT[0] or data.shape != arr.chunks or data.dtype != arr.dtype:
        arr[index * chunk : index * chunk + data.shape[0]] = data
        return
    enc.write((index, *([0] * (data.ndim - 1))), data)
