"""ChunkedGroup: whole-chunk buffered writes, fill values for missing rows, resume trimming."""

from typing import Any

import numpy as np
import zarr

from dimlapse.capture.store import valid_prefix
from dimlapse.capture.writer._chunks import ChunkedGroup


def test_rows_without_a_value_read_as_fill_across_chunk_reuse():
    group: Any = zarr.open_group("memory://chunks-fill.zarr", mode="w")
    writer = ChunkedGroup(group, chunk=3, codec="zstd")
    for step in range(8):  # "a" every row, "b" only on even steps (a module that sometimes skips)
        values = {"a": np.full(2, step, np.float32)}
        if step % 2 == 0:
            values["b"] = np.full(2, 10 * step, np.float32)
        writer.append(step, values)
    writer.flush(final=True)
    a, b = group["a"][:], group["b"][:]
    assert a.shape == (8, 2) and b.shape == (8, 2)
    np.testing.assert_array_equal(a[:, 0], np.arange(8))
    expected_b = np.array([10.0 * s if s % 2 == 0 else np.nan for s in range(8)])
    np.testing.assert_array_equal(b[:, 0], expected_b)
    np.testing.assert_array_equal(group["step"][:], np.arange(8))


def test_trim_keeps_prefix_and_rewrites_partial_chunk():
    group: Any = zarr.open_group("memory://chunks-trim.zarr", mode="w")
    writer = ChunkedGroup(group, chunk=4, codec="none")
    for step in range(10):
        writer.append(step, {"x": np.array(step, np.float32)})
    writer.flush(final=True)
    again = ChunkedGroup(group, chunk=4, codec="none")
    again.trim(6)
    assert again.rows == 6 and again.last_step() == 5
    for step in (60, 70):
        again.append(step, {"x": np.array(step, np.float32)})  # completes chunk 2 (rows 4-7)
    np.testing.assert_array_equal(group["step"][:8], [0, 1, 2, 3, 4, 5, 60, 70])
    np.testing.assert_array_equal(group["x"][:8], [0, 1, 2, 3, 4, 5, 60, 70])
    assert valid_prefix(np.array([0, 5, -1, 7])) == 2
    assert valid_prefix(np.array([], np.int64)) == 0
