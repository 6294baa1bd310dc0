"""MNIST / CIFAR-10 loaders on fixture files written here: parsers, checksums, offline errors.

Never touches the network: downloads use file:// URLs or files already in place.
"""

import gzip
import hashlib
import pickle
import struct
import tarfile

import numpy as np
import pytest
import torch

from dimlapse.pipelines.zoo._download import (
    MNIST_FILES,
    ChecksumError,
    DatasetUnavailableError,
    cifar10,
    fetch,
    mnist,
    parse_cifar_batch,
    parse_idx,
)


def _idx(arr: np.ndarray) -> bytes:
    """An IDX file written independently of the parser (uint8 payload)."""
    header = struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return gzip.compress(header + arr.astype(np.uint8).tobytes())


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_parse_idx_images_labels_and_big_endian_ints():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    np.testing.assert_array_equal(parse_idx(_idx(imgs)), imgs)
    np.testing.assert_array_equal(parse_idx(gzip.decompress(_idx(imgs))), imgs)  # not gzipped
    ints = np.array([1, -2, 70000], dtype=">i4")
    raw = struct.pack(">BBBBI", 0, 0, 0x0C, 1, 3) + ints.tobytes()
    np.testing.assert_array_equal(parse_idx(raw), [1, -2, 70000])


def test_parse_idx_rejects_bad_files():
    with pytest.raises(ValueError, match="Not an IDX file"):
        parse_idx(b"PK\x03\x04junk")
    with pytest.raises(ValueError, match="IDX file has 10 bytes, header says 12"):
        parse_idx(struct.pack(">BBBBI", 0, 0, 0x08, 1, 4) + b"\x01\x02")


def _write_mnist_fixture(root, n_train=6, n_test=4):
    rng = np.random.default_rng(1)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte.gz": rng.integers(0, 10, n_train),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, n_test),
    }
    (root / "mnist").mkdir(parents=True)
    sums = {}
    for name, arr in arrays.items():
        data = _idx(arr)
        (root / "mnist" / name).write_bytes(data)
        sums[name] = _sha(data)
    return arrays, sums


def test_mnist_loader_on_fixture_files(tmp_path):
    arrays, sums = _write_mnist_fixture(tmp_path)
    d = mnist(cache_dir=tmp_path, base_url="file:///nonexistent/", files=sums)
    assert d.x_train.shape == (6, 1, 28, 28) and d.x_test.shape == (4, 1, 28, 28)
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    np.testing.assert_array_equal(d.y_test.numpy(), arrays["t10k-labels-idx1-ubyte.gz"])
    # standardisation with training statistics, computed independently
    raw = arrays["train-images-idx3-ubyte.gz"].astype(np.float64) / 255
    want = (raw - raw.mean()) / raw.std(ddof=1)
    np.testing.assert_allclose(d.x_train[:, 0].numpy(), want, rtol=1e-4, atol=1e-5)


def test_mnist_checksum_mismatch_is_a_clear_error(tmp_path):
    _write_mnist_fixture(tmp_path)  # fixture bytes are not the real files
    with pytest.raises(ChecksumError, match=r"SHA-256 mismatch for .*train-images.*expected 440f"):
        mnist(cache_dir=tmp_path, files=MNIST_FILES)


def test_fetch_downloads_verifies_and_reports_offline(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"hello dimlapse")
    dest = tmp_path / "cache" / "dest.bin"
    fetch(src.as_uri(), dest, sha256_hex=_sha(b"hello dimlapse"))
    assert dest.read_bytes() == b"hello dimlapse"
    with pytest.raises(ChecksumError, match="SHA-256 mismatch"):
        fetch(src.as_uri(), tmp_path / "other.bin", sha256_hex="0" * 64)
    with pytest.raises(DatasetUnavailableError, match=r"Could not download .*needs a network"):
        fetch((tmp_path / "missing.bin").as_uri(), tmp_path / "x.bin", sha256_hex="0" * 64)
    assert not (tmp_path / "x.bin.part").exists()


def _cifar_batch(rng, n):
    x = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    y = rng.integers(0, 10, n).tolist()
    return x, y, pickle.dumps({b"data": x, b"labels": y, b"batch_label": b"fixture"})


def test_parse_cifar_batch_layout():
    rng = np.random.default_rng(2)
    x, y, blob = _cifar_batch(rng, 5)
    images, labels = parse_cifar_batch(blob)
    assert images.shape == (5, 3, 32, 32) and images.dtype == np.uint8
    # row layout: 1024 red, then 1024 green, then 1024 blue values, each row-major 32x32
    np.testing.assert_array_equal(images[2, 1, 3, 4], x[2, 1024 + 3 * 32 + 4])
    np.testing.assert_array_equal(labels, y)


def test_cifar10_loader_on_a_fixture_archive(tmp_path):
    rng = np.random.default_rng(3)
    archive = tmp_path / "cifar-10-python.tar.gz"
    labels = {}
    with tarfile.open(archive, "w:gz") as tar:
        for name, n in [("data_batch_1", 4), ("data_batch_2", 3), ("test_batch", 2)]:
            _, y, blob = _cifar_batch(rng, n)
            labels[name] = y
            f = tmp_path / name
            f.write_bytes(blob)
            tar.add(f, arcname=f"cifar-10-batches-py/{name}")
    d = cifar10(cache_dir=tmp_path, sha256_hex=_sha(archive.read_bytes()))
    assert d.x_train.shape == (7, 3, 32, 32) and d.x_test.shape == (2, 3, 32, 32)
    assert d.y_train.tolist() == labels["data_batch_1"] + labels["data_batch_2"]
    # per-channel standardisation: each training channel has mean 0
    np.testing.assert_allclose(d.x_train.mean(dim=(0, 2, 3)).numpy(), 0, atol=1e-5)
    with pytest.raises(ChecksumError, match="SHA-256 mismatch"):
        cifar10(cache_dir=tmp_path)  # the canonical checksum does not match the fixture
