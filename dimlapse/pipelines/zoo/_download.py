"""MNIST and CIFAR-10: download once with SHA-256 checks, parse the standard file formats.

Never needed offline: the default datasets are generated locally. These loaders fetch from the
canonical URLs when a network exists and raise :class:`DatasetUnavailableError` otherwise.
"""

from __future__ import annotations

import gzip
import hashlib
import pickle
import shutil
import tarfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._dataset import DEFAULT_CACHE, Dataset, DataSpec

MNIST_URL = "https://storage.googleapis.com/cvdf-datasets/mnist/"  # the mirror TensorFlow uses
MNIST_FILES = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",  # noqa: E501
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",  # noqa: E501
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_SHA256 = "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"
_IDX_DTYPES: dict[int, Any] = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


class DatasetUnavailableError(RuntimeError):
    """A dataset file could not be downloaded (e.g. no network)."""


class ChecksumError(RuntimeError):
    """A downloaded or cached file does not match its expected SHA-256."""


def sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch(url: str, path: str | Path, *, sha256_hex: str, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``path`` (unless present) and verify its SHA-256.

    Raises
    ------
    DatasetUnavailableError
        When the download fails (offline, HTTP error).
    ChecksumError
        When the file's SHA-256 differs from ``sha256_hex`` (a bad download is deleted).
    """
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".part")
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r, open(tmp, "wb") as f:
                shutil.copyfileobj(r, f)
        except (urllib.error.URLError, OSError) as e:
            tmp.unlink(missing_ok=True)
            raise DatasetUnavailableError(
                f"Could not download {url} ({e}). This dataset needs a network once; "
                f"offline, use --data mnist1d, digits or modadd, or place the file at {path}."
            ) from e
        tmp.replace(path)
    got = sha256(path)
    if got != sha256_hex:
        raise ChecksumError(
            f"SHA-256 mismatch for {path}: expected {sha256_hex}, got {got}. "
            f"Delete the file and download it again."
        )
    return path


def parse_idx(data: bytes) -> np.ndarray:
    """Parse an IDX file (LeCun's MNIST format; gzip-compressed or not) into an array.

    Header: two zero bytes, a dtype code, the number of dims, then one big-endian uint32 per dim.
    """
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"Not an IDX file: header {data[:4]!r}")
    ndim = data[3]
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    offset = 4 + 4 * ndim
    expected = offset + int(np.prod(shape)) * dtype.itemsize
    if len(data) != expected:
        raise ValueError(f"IDX file has {len(data)} bytes, header says {expected}")
    return np.frombuffer(data, dtype, offset=offset).reshape(shape).astype(dtype.newbyteorder("="))


def parse_cifar_batch(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Parse one CIFAR-10 python batch (a pickled dict) into ((n, 3, 32, 32) uint8, (n,) int64).

    The archive is checksum-verified before any batch is unpickled.
    """
    d = pickle.loads(data, encoding="bytes")  # trusted only after the SHA-256 check
    x = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    y = np.asarray(d[b"labels"], dtype=np.int64)
    if len(x) != len(y):
        raise ValueError(f"CIFAR batch has {len(x)} images but {len(y)} labels")
    return x, y


def mnist(
    *,
    cache_dir: str | Path = DEFAULT_CACHE,
    base_url: str = MNIST_URL,
    files: dict[str, str] | None = None,
) -> Dataset:
    """MNIST (60,000 train / 10,000 test), (n, 1, 28, 28) float32 scaled to [0, 1] then
    standardised with the training mean and std. ``files`` maps file name to SHA-256
    (default: the canonical files)."""
    files = MNIST_FILES if files is None else files
    root = Path(cache_dir) / "mnist"
    arrays = [
        parse_idx(fetch(base_url + name, root / name, sha256_hex=digest).read_bytes())
        for name, digest in files.items()
    ]
    x_train, y_train, x_test, y_test = arrays
    return _images("mnist", x_train[:, None], y_train, x_test[:, None], y_test)


def cifar10(
    *,
    cache_dir: str | Path = DEFAULT_CACHE,
    url: str = CIFAR10_URL,
    sha256_hex: str = CIFAR10_SHA256,
) -> Dataset:
    """CIFAR-10 (50,000 train / 10,000 test), (n, 3, 32, 32) float32, standardised per
    channel with training statistics. Reads the batches straight from the verified archive."""
    archive = fetch(url, Path(cache_dir) / "cifar-10-python.tar.gz", sha256_hex=sha256_hex)
    batches: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar.getmembers():
            name = member.name.rsplit("/", 1)[-1]
            if name.startswith("data_batch_") or name == "test_batch":
                fobj = tar.extractfile(member)
                if fobj is None:
                    raise ValueError(f"{archive}: {member.name} is not a regular file")
                batches[name] = parse_cifar_batch(fobj.read())
    train_names = sorted(n for n in batches if n.startswith("data_batch_"))
    if not train_names or "test_batch" not in batches:
        raise ValueError(f"{archive} holds no data_batch_* / test_batch files")
    x_train = np.concatenate([batches[n][0] for n in train_names])
    y_train = np.concatenate([batches[n][1] for n in train_names])
    x_test, y_test = batches["test_batch"]
    return _images("cifar10", x_train, y_train, x_test, y_test, per_channel=True)


def _images(name, x_train, y_train, x_test, y_test, *, per_channel=False) -> Dataset:
    xt = torch.from_numpy(np.ascontiguousarray(x_train)).float() / 255.0  # (n, c, h, w)
    xs = torch.from_numpy(np.ascontiguousarray(x_test)).float() / 255.0
    dims = (0, 2, 3) if per_channel else (0, 1, 2, 3)
    mean = xt.mean(dim=dims, keepdim=True)
    std = xt.std(dim=dims, keepdim=True).clamp_min(1e-6)
    spec = DataSpec(name, "image", tuple(xt.shape[1:]), 10)
    return Dataset(
        spec,
        (xt - mean) / std,
        torch.from_numpy(np.asarray(y_train, dtype=np.int64)),
        (xs - mean) / std,
        torch.from_numpy(np.asarray(y_test, dtype=np.int64)),
    )


__all__ = [
    "ChecksumError",
    "DatasetUnavailableError",
    "cifar10",
    "fetch",
    "mnist",
    "parse_cifar_batch",
    "parse_idx",
]
