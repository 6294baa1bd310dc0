"""Whole-chunk buffered writing of one store group (``weights``, ``activations``, ...).

Every array of a group shares the leading ``step`` axis and its chunk length. Rows are
buffered in memory and written one whole chunk at a time (docs/storage-notes.md, "Zarr 3.1
behaviours"): one writer per chunk, no read-modify-write, arrays grown by resizing in whole
chunks (at most 8 ahead) and trimmed to the rows written at close. Every chunk ends with a
CRC-32C checksum (zarr's ``crc32c`` codec) that readers verify, and chunks are written without
zarr's "is this chunk all fill value?" scan (``write_empty_chunks``): a capture chunk never is.
At each flush the data arrays are resized and written first and the group's ``step`` array last, so
after a crash the valid prefix of ``step`` marks the last complete row.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any, cast

import numpy as np
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec, ZstdCodec

from ._encode import ChunkEncoder, write_chunk

# Lossless: lz4 (blosc lz4 + bit-shuffle, the default: the cheapest compressor, 1.12-1.28x
# smaller float32 weights for 0.75-0.94 ms of CPU per MB on the development machine), none (raw
# float32 + CRC-32C: the writer's cheapest path, for capture at every step), zstd (zstd level
# 1), blosc-zstd. Lossy: float16, bitround-<bits> (keep <bits> mantissa bits) + blosc zstd.
_CODECS = ("lz4", "zstd", "blosc-zstd", "none", "float16")
DEFAULT_CODEC = "lz4"
WRITE_CONFIG: Any = {"write_empty_chunks": True}  # skip the per-chunk fill-value scan


def parse_codec(codec: str) -> str:
    """Validate a codec name: ``lz4`` | ``zstd`` | ``blosc-zstd`` | ``none`` | ``float16`` |
    ``bitround-<bits>``."""
    if isinstance(codec, str):
        if codec in _CODECS:
            return codec
        if codec.startswith("bitround-"):
            bits = codec.removeprefix("bitround-")
            if bits.isdigit() and 1 <= int(bits) <= 23:
                return codec
    raise ValueError(
        f"Expected `codec` to be one of {', '.join(map(repr, _CODECS))} or 'bitround-<bits>' "
        "with bits in "
        f"1..23 (e.g. 'bitround-10'), got {codec!r}"
    )


def compressors(codec: str) -> list[Any]:
    """The bytes-to-bytes codec chain of ``codec``, ending with the CRC-32C checksum.

    Blosc runs single-threaded (``numthreads`` is not a v3 codec setting; zarr's blosc wrapper
    turns blosc's own threads off on import), so it never competes with training for cores.
    """
    if codec == "none":
        return [Crc32cCodec()]
    if codec == "zstd":
        return [ZstdCodec(level=1), Crc32cCodec()]
    if codec == "lz4":
        return [BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle"), Crc32cCodec()]
    # blosc-zstd, float16 and bitround: the best ratio on what survives the rounding
    return [BloscCodec(cname="zstd", clevel=1, shuffle="bitshuffle"), Crc32cCodec()]


def fill_value(dtype: Any) -> float:
    """The fill of a data array (and of its chunk buffer's rows without a value): NaN for
    floats, -1 for integers."""
    return np.nan if np.issubdtype(dtype, np.floating) else -1


def value_kwargs(codec: str, value_dtype: Any) -> dict[str, Any]:
    """``create_array`` keyword arguments for values of ``value_dtype``: float values take the
    run's codec (:func:`codec_kwargs`), integer ones (a batch norm's count) stay as they are,
    zstd compressed; the fill is :func:`fill_value`."""
    if np.issubdtype(value_dtype, np.floating):
        kwargs = codec_kwargs(codec)
    else:
        kwargs = {"dtype": value_dtype, "compressors": compressors("zstd")}
    return {**kwargs, "fill_value": fill_value(value_dtype)}


def codec_kwargs(codec: str) -> dict[str, Any]:
    """``create_array`` keyword arguments (dtype, filters, compressors) for a data array."""
    if codec == "float16":
        return {"dtype": "float16", "compressors": compressors(codec)}
    if codec.startswith("bitround-"):
        with quiet_numcodecs():
            from zarr.codecs.numcodecs import BitRound

            filt = BitRound(keepbits=int(codec.removeprefix("bitround-")))
        return {"dtype": "float32", "filters": [filt], "compressors": compressors(codec)}
    return {"dtype": "float32", "compressors": compressors(codec)}


@contextlib.contextmanager
def quiet_numcodecs(enabled: bool = True) -> Iterator[None]:
    """Silence zarr's "numcodecs codecs are not in the v3 spec" warning (bitround runs).

    Zarr re-parses codec metadata on every resize and open, so the warning would fire at each
    flush; the codec is recorded in the run's root attrs instead.
    """
    if not enabled:
        yield
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Numcodecs codecs are not in the Zarr")
        yield


class ChunkedGroup:
    """Buffered, whole-chunk writer for one group whose arrays share a ``step`` axis.

    Parameters
    ----------
    group : zarr.Group
        The group (created by the caller).
    chunk : int
        Rows per chunk along ``step`` (= rows per flush).
    codec : str
        Codec name for float data arrays (see :func:`parse_codec`).
    """

    def __init__(self, group: zarr.Group, *, chunk: int, codec: str) -> None:
        self.group = group
        self.chunk = chunk
        self.codec = codec
        self.arrays: dict[str, Any] = {}  # zarr.Array (zarr's getitem types are loose)
        self.buffers: dict[str, np.ndarray] = {}
        self.step_array: Any
        if "step" in group:
            self.step_array = cast(Any, group["step"]).with_config(WRITE_CONFIG)
        else:
            self.step_array = group.create_array(
                "step",
                shape=(0,),
                chunks=(chunk,),
                dtype="int64",
                fill_value=-1,
                dimension_names=("step",),
                compressors=[Crc32cCodec()],
                config=WRITE_CONFIG,
            )
        self.step_buffer = np.full(chunk, -1, dtype=np.int64)
        self.base = 0  # first row held by the buffers (a multiple of chunk)
        self.count = 0  # rows held
        self.bytes_raw = 0
        self.encoders: dict[int, ChunkEncoder | None] = {}  # by id(array): see _encode.py

    @property
    def rows(self) -> int:
        """Rows appended so far (written or buffered)."""
        return self.base + self.count

    def trim(self, n: int) -> None:
        """Resume support: keep the first ``n`` rows and reload the partial last chunk."""
        with quiet_numcodecs(self.codec.startswith("bitround")):
            self._trim(n)

    def _trim(self, n: int) -> None:
        for name, arr in self.group.arrays():
            if name != "step":
                self.arrays[name] = arr.with_config(WRITE_CONFIG)
        self.base = (n // self.chunk) * self.chunk
        self.count = n - self.base
        for arr in [*self.arrays.values(), self.step_array]:
            if arr.shape[0] != n:
                arr.resize((n, *arr.shape[1:]))
        self.step_buffer[:] = -1
        self.step_buffer[: self.count] = self.step_array[self.base : n]
        for name, arr in self.arrays.items():
            buf = self._new_buffer(arr.shape[1:], arr.dtype)
            buf[: self.count] = arr[self.base : n]
            self.buffers[name] = buf

    def last_step(self) -> int | None:
        """Step number of the last appended row."""
        if self.count:
            return int(self.step_buffer[self.count - 1])
        if self.base:
            return int(self.step_array[self.base - 1])
        return None

    def steps(self) -> np.ndarray:
        """All appended step numbers (written and buffered)."""
        written = self.step_array[: self.base] if self.base else np.zeros(0, np.int64)
        return np.concatenate([written, self.step_buffer[: self.count]])

    def _new_buffer(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        return np.full((self.chunk, *shape), fill_value(dtype), dtype=dtype)

    def _ensure(
        self, name: str, value: np.ndarray, attrs: dict[str, Any], dims: Any, dtype: Any
    ) -> None:
        self.declare(name, value.shape, value.dtype, attrs=attrs, dims=dims, dtype=dtype)

    def declare(
        self,
        name: str,
        shape: tuple[int, ...],
        value_dtype: Any,
        *,
        attrs: dict[str, Any],
        dims: Any,
        dtype: Any = None,
        buffered: bool = True,
    ) -> None:
        """Create array ``name`` for rows of ``shape`` (values of ``value_dtype``; ``dtype``
        pins the stored dtype). ``buffered=False`` (one-row chunks only) allocates no chunk
        buffer: :meth:`stream_row` writes rows straight from the values, so a row is never
        held whole (``ingest``)."""
        kwargs = value_kwargs(self.codec, value_dtype)
        if dtype is not None:  # caller pins the dtype (e.g. float64 wall_time)
            kwargs["dtype"] = dtype
        with quiet_numcodecs():
            arr = self.group.create_array(
                name,
                shape=(self.rows, *shape),
                chunks=(self.chunk, *shape),
                dimension_names=dims,
                attributes=attrs,
                config=WRITE_CONFIG,
                **kwargs,
            )
        self.arrays[name] = arr
        if buffered or self.chunk > 1:
            self.buffers[name] = self._new_buffer(tuple(shape), arr.dtype)

    def stream_row(self, step: int, values: Iterator[tuple[str, np.ndarray]]) -> None:
        """Write one row of one-row chunks array by array as ``values`` yields them (each
        value may be freed once written), then its step, LAST. Every declared array must get
        its value."""
        if self.chunk != 1:
            raise ValueError(
                f"stream_row writes one-row chunks; this group's chunk is {self.chunk}"
            )
        stop = self.base + 1
        seen = set()
        with quiet_numcodecs(self.codec.startswith("bitround")):
            for name, value in values:
                arr = self.arrays[name]
                if arr.shape[0] < stop:
                    arr.resize((self._capacity(stop), *arr.shape[1:]))
                write_chunk(arr, self.encoders, self.base, value[None])
                self.bytes_raw += value.nbytes
                seen.add(name)
            missing = set(self.arrays) - seen
            if missing:
                raise ValueError(f"stream_row: no value for {sorted(missing)[:5]} at step {step}")
            if self.step_array.shape[0] < stop:
                self.step_array.resize((self._capacity(stop),))
            steps = np.array([step], dtype=np.int64)
            write_chunk(self.step_array, self.encoders, self.base, steps)  # written LAST
        self.base = stop

    def knows(self, values: dict[str, Any]) -> bool:
        """Whether every array of ``values`` exists already (no metadata needed to append)."""
        return all(name in self.arrays for name in values)

    def append(
        self,
        step: int,
        values: dict[str, np.ndarray],
        *,
        attrs: dict[str, dict[str, Any]] | None = None,
        dims: dict[str, tuple[str, ...]] | None = None,
        dtypes: dict[str, Any] | None = None,
    ) -> None:
        """Add one row; arrays are created on first sight with ``attrs``, ``dims``, ``dtypes``."""
        if self.chunk == 1 and self.count == 0 and set(values) == set(self.arrays):
            self._write_row(step, values)  # one-row chunks: no buffer copy
            return
        for name, value in values.items():
            if name not in self.arrays:
                self._ensure(
                    name,
                    value,
                    dict((attrs or {}).get(name, {})),
                    (dims or {}).get(name),
                    (dtypes or {}).get(name),
                )
            self.buffers[name][self.count] = value
            self.bytes_raw += value.nbytes
        if len(values) < len(self.buffers):  # rows without a value hold the fill value
            for name, buf in self.buffers.items():
                if name not in values:
                    buf[self.count] = fill_value(buf.dtype)
        self.step_buffer[self.count] = step
        self.count += 1
        if self.count == self.chunk:
            self.flush()

    def extend(self, steps: np.ndarray, columns: dict[str, np.ndarray]) -> None:
        """Add many rows of scalar arrays that exist already: ``columns[name]`` is ``(rows,)``
        for ``steps`` ``(rows,)``; arrays not in ``columns`` get fill values. Block copies,
        no Python per row (the scalar rows of a snapshot arrive together)."""
        done, total = 0, len(steps)
        while done < total:
            take = min(self.chunk - self.count, total - done)
            rows = slice(self.count, self.count + take)
            for name, buf in self.buffers.items():
                col = columns.get(name)
                if col is None:
                    buf[rows] = fill_value(buf.dtype)
                else:
                    buf[rows] = col[done : done + take]
                    self.bytes_raw += take * buf.itemsize
            self.step_buffer[rows] = steps[done : done + take]
            self.count += take
            done += take
            if self.count == self.chunk:
                self.flush()

    def _write_row(self, step: int, values: dict[str, np.ndarray]) -> None:
        """Write one row as a whole chunk, straight from ``values`` (chunk length 1)."""
        stop = self.base + 1
        with quiet_numcodecs(self.codec.startswith("bitround")):
            for name, value in values.items():
                arr = self.arrays[name]
                if arr.shape[0] < stop:
                    arr.resize((self._capacity(stop), *arr.shape[1:]))
                write_chunk(arr, self.encoders, self.base, value[None])  # a whole chunk
                self.bytes_raw += value.nbytes
            if self.step_array.shape[0] < stop:
                self.step_array.resize((self._capacity(stop),))
            steps = np.array([step], dtype=np.int64)
            write_chunk(self.step_array, self.encoders, self.base, steps)  # written LAST
        self.base = stop

    def _write(self, arr: Any, buffer: np.ndarray, stop: int) -> None:
        """Rows ``base:stop`` from ``buffer``: a whole chunk straight to the store
        (``_encode.py``), a partial one (the last, at close) through zarr."""
        if self.count == self.chunk:
            write_chunk(arr, self.encoders, self.base // self.chunk, buffer)
        else:
            arr[self.base : stop] = buffer[: self.count]

    def _capacity(self, stop: int) -> int:
        """Rows to resize to: whole chunks, 8 chunks ahead (one metadata write per array every
        8 flushes instead of every flush; trimmed to the rows written at close).

        Rows beyond the step index are fill values; readers trust the index only.
        """
        chunks = -(-stop // self.chunk)
        return (chunks + 7) * self.chunk

    def flush(self, *, final: bool = False) -> None:
        """Write the buffered rows (a whole chunk, or a partial one); ``final`` trims the arrays
        to the rows written."""
        with quiet_numcodecs(self.codec.startswith("bitround")):
            self._flush(final)

    def _flush(self, final: bool) -> None:
        stop = self.base + self.count
        if self.count:
            for name, arr in self.arrays.items():
                if arr.shape[0] < stop:
                    arr.resize((self._capacity(stop), *arr.shape[1:]))
                self._write(arr, self.buffers[name], stop)
            if self.step_array.shape[0] < stop:
                self.step_array.resize((self._capacity(stop),))
            self._write(self.step_array, self.step_buffer, stop)  # written LAST
        if final:
            for arr in [*self.arrays.values(), self.step_array]:
                if arr.shape[0] != stop:
                    arr.resize((stop, *arr.shape[1:]))
        if self.count == self.chunk:  # every row of the buffers is rewritten before reuse
            self.base, self.count = stop, 0
            self.step_buffer[:] = -1
