"""The writer's direct chunk path (``writer/_encode.py``): what it writes is what zarr would.

The independent answer is zarr itself: chunks written directly must read back through zarr's
own decoding (checksum verified) equal to the data, byte for byte equal to zarr's encoding
where the codec is deterministic, and corrupting one byte must fail the read. Speed is not
asserted here: ``dimlapse bench capture`` prints it beside its controls.
"""

import math
import os

import numpy as np
import pytest
import zarr

from dimlapse.capture.writer import SnapshotSink, parse_codec, zarr_writes
from dimlapse.capture.writer._chunks import codec_kwargs
from dimlapse.capture.writer._encode import ChunkEncoder, write_chunk

LOSSLESS = ["none", "lz4", "zstd", "blosc-zstd"]


def _array(path, codec, shape=(4, 5, 3)):
    kwargs = codec_kwargs(parse_codec(codec))
    return zarr.create_array(
        path, shape=(3 * shape[0], *shape[1:]), chunks=shape, fill_value=np.nan,
        config={"write_empty_chunks": True}, **kwargs,
    )  # fmt: skip


@pytest.mark.parametrize("codec", LOSSLESS)
def test_direct_chunks_read_back_through_zarr(codec, tmp_path):
    rng = np.random.default_rng(0)
    arr = _array(str(tmp_path / "a.zarr"), codec)
    assert ChunkEncoder.of(arr) is not None
    data = rng.standard_normal((3, 4, 5, 3)).astype(np.float32)
    encoders = {}
    for i in range(3):
        write_chunk(arr, encoders, i, data[i])
    back = zarr.open_array(str(tmp_path / "a.zarr"), mode="r")[:]
    np.testing.assert_array_equal(back, data.reshape(12, 5, 3))


@pytest.mark.parametrize("codec", ["none", "zstd"])  # deterministic encoders: same bytes
def test_direct_bytes_equal_zarrs_own(codec, tmp_path):
    data = np.arange(60, dtype=np.float32).reshape(4, 5, 3)
    direct, via = _array(str(tmp_path / "d.zarr"), codec), _array(str(tmp_path / "z.zarr"), codec)
    write_chunk(direct, {}, 1, data)
    via[4:8] = data
    a = (tmp_path / "d.zarr" / "c" / "1" / "0" / "0").read_bytes()
    b = (tmp_path / "z.zarr" / "c" / "1" / "0" / "0").read_bytes()
    assert a == b


def test_corrupt_direct_chunk_fails_the_checksum(tmp_path):
    arr = _array(str(tmp_path / "a.zarr"), "none")
    write_chunk(arr, {}, 0, np.ones((4, 5, 3), np.float32))
    chunk = tmp_path / "a.zarr" / "c" / "0" / "0" / "0"
    raw = bytearray(chunk.read_bytes())
    raw[7] ^= 0x01
    chunk.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="checksum"):
        zarr.open_array(str(tmp_path / "a.zarr"), mode="r")[0:4]


def test_filters_and_partial_chunks_go_through_zarr(tmp_path):
    arr = _array(str(tmp_path / "b.zarr"), "bitround-10")
    assert ChunkEncoder.of(arr) is None  # an array-to-array filter first: zarr's pipeline
    part = _array(str(tmp_path / "p.zarr"), "none")
    rows = np.full((2, 5, 3), 7.0, np.float32)
    write_chunk(part, {}, 0, rows)  # not a whole chunk: written by zarr, rest is fill
    back = zarr.open_array(str(tmp_path / "p.zarr"), mode="r")[0:4]
    np.testing.assert_array_equal(back[:2], rows)
    assert np.isnan(back[2:]).all()


def test_memory_store_writes_through_store_set():
    arr = zarr.create_array(
        zarr.storage.MemoryStore(), name="w", shape=(8, 3), chunks=(4, 3), dtype="float32",
        fill_value=np.nan, **{k: v for k, v in codec_kwargs("lz4").items() if k != "dtype"},
    )  # fmt: skip
    data = np.arange(12, dtype=np.float32).reshape(4, 3)
    write_chunk(arr, {}, 1, data)
    np.testing.assert_array_equal(arr[4:8], data)


@pytest.mark.parametrize("direct", [True, False])
def test_sink_stores_the_same_either_way(direct, tmp_path):
    """A whole sink (weights and state, several chunks and a partial one) through the direct
    path and through zarr (``zarr_writes``) stores the same values and step index."""
    rng = np.random.default_rng(1)
    rows = [
        ({"fc.weight": rng.standard_normal((6, 4)).astype(np.float32)},
         {"fc.bias": rng.standard_normal(6).astype(np.float32)})
        for _ in range(11)
    ]  # fmt: skip
    root = zarr.open_group(str(tmp_path / "r.zarr"), mode="w")
    sink = SnapshotSink(root, chunk=4, scalar_chunk=4, codec="none", probe_examples=0,
                        groups=("weights", "state"))  # fmt: skip
    ctx = zarr_writes() if not direct else _Null()
    with ctx:
        for i, (w, s) in enumerate(rows):
            sink.snapshot(5 * i, weights=w, state=s, activations=None)
        sink.flush()
    back = zarr.open_group(str(tmp_path / "r.zarr"), mode="r")
    np.testing.assert_array_equal(back["weights/step"][:], 5 * np.arange(11))
    np.testing.assert_array_equal(
        back["weights/fc.weight"][:], np.stack([w["fc.weight"] for w, _ in rows])
    )
    np.testing.assert_array_equal(
        back["state/fc.bias"][:], np.stack([s["fc.bias"] for _, s in rows])
    )
    leftovers = [f for _, _, fs in os.walk(tmp_path) for f in fs if f.endswith(".partial")]
    assert leftovers == []


class _Null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return None


@pytest.mark.slow
def test_per_mb_table_runs_every_arm(tmp_path):
    torch = pytest.importorskip("torch")
    from dimlapse.pipelines.bench._capture_mb import format_per_mb, per_mb_table

    x = torch.randn(16, 784)
    table = per_mb_table(x, codecs=("none", "lz4"), short=64, long=192, root=tmp_path)
    assert list(table) == ["none", "lz4", "none via zarr", "floor"]
    assert table["floor"]["x_floor"] == 1.0
    # a marginal CPU cost (long run minus short run) can come out at or below 0 on a busy
    # machine: the test checks that every arm ran and measured, not the machine's speed
    assert all(math.isfinite(r["ms_per_mb"]) and r["mb_per_snapshot"] > 0.9 for r in table.values())
    assert table["lz4"]["compression_ratio"] > table["none"]["compression_ratio"]
    text = "\n".join(format_per_mb(table))
    assert f"{'none via zarr':<18} {table['none via zarr']['ms_per_mb']:>7.3f}" in text
