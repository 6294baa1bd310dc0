"""Datasets: offline generators (mnist1d, digits, modadd, stdlib) and the downloading loaders.

Every dataset comes back as a :class:`Dataset` of CPU tensors with a train and a held-out split
and a :class:`DataSpec` describing the inputs, so a model can be built from the spec alone (the
spec is saved in the run store's ``dataset`` attr, which is how ``replay`` rebuilds a model).
"""

from __future__ import annotations

import sysconfig
from pathlib import Path

import numpy as np
import torch

from ._dataset import DEFAULT_CACHE, Dataset, DataSpec
from ._recipes import DATASETS

MNIST1D_SAMPLES = 10_000  # the package's default is 5,000; its `num_samples` sets the total
DIGITS_TEST = 600  # held-out examples of sklearn's 1,797 digits (>= the 512-example probe)
MODADD_P = 97
MODADD_TRAIN_FRACTION = 0.4
STDLIB_CONTEXT = 64  # bytes of context per example
STDLIB_TRAIN, STDLIB_TEST = 16_384, 256  # windows kept (evenly spaced over the corpus)


def load_dataset(name: str, *, cache_dir: str | Path = DEFAULT_CACHE) -> Dataset:
    """Load a dataset by name.

    Parameters
    ----------
    name
        One of 'mnist1d', 'digits', 'modadd' (offline), 'mnist', 'cifar10' (download once,
        with SHA-256 checks, into ``cache_dir``).
    cache_dir
        Where generated or downloaded files are cached.

    Returns
    -------
    Dataset
    """
    if name not in DATASETS:
        raise ValueError(f"Unknown data {name!r}; expected one of: {', '.join(DATASETS)}")
    if name == "mnist1d":
        return mnist1d(cache_dir=cache_dir)
    if name == "digits":
        return digits()
    if name == "modadd":
        return modadd()
    if name == "stdlib":
        return stdlib()
    from . import _download  # network loaders, imported only when asked for

    return (
        _download.mnist(cache_dir=cache_dir)
        if name == "mnist"
        else _download.cifar10(cache_dir=cache_dir)
    )


def mnist1d(
    *, n_samples: int = MNIST1D_SAMPLES, cache_dir: str | Path | None = DEFAULT_CACHE
) -> Dataset:
    """MNIST-1D (Greydanus 2020), generated procedurally with the package's ``make_dataset``.

    Uses the package's default arguments (seed 42, 80/20 split, length-40 signals) except
    ``num_samples``, which sets the total count (10,000 here: 8,000 train, 2,000 held out).
    Never calls ``get_dataset``, which downloads. The result is cached as ``.npz``.
    Inputs are (n, 1, 40) float32, treated as one-channel sequences.
    """
    if not isinstance(n_samples, int) or n_samples < 10:
        raise ValueError(f"Expected `n_samples` to be an int >= 10, got {n_samples!r}")
    path = None if cache_dir is None else Path(cache_dir) / f"mnist1d-n{n_samples}-seed42.npz"
    if path is not None and path.exists():
        with np.load(path) as f:
            arrays = {k: f[k] for k in ("x", "y", "x_test", "y_test")}
    else:
        arrays = _generate_mnist1d(n_samples)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp.npz")
            np.savez(
                tmp, x=arrays["x"], y=arrays["y"], x_test=arrays["x_test"], y_test=arrays["y_test"]
            )
            tmp.replace(path)  # atomic: a concurrent reader never sees half a file
    spec = DataSpec("mnist1d", "sequence", (1, arrays["x"].shape[1]), 10)
    return Dataset(
        spec,
        torch.from_numpy(arrays["x"]).float().unsqueeze(1),
        torch.from_numpy(arrays["y"]).long(),
        torch.from_numpy(arrays["x_test"]).float().unsqueeze(1),
        torch.from_numpy(arrays["y_test"]).long(),
    )


def _generate_mnist1d(n_samples: int) -> dict[str, np.ndarray]:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = n_samples
    # make_dataset reseeds NumPy's and Python's global RNGs: restore them afterwards.
    import random

    np_state, py_state = np.random.get_state(), random.getstate()  # noqa: NPY002
    try:
        d = make_dataset(args)
    finally:
        np.random.set_state(np_state)  # noqa: NPY002
        random.setstate(py_state)
    return {
        "x": d["x"].astype(np.float32),
        "y": d["y"].astype(np.int64),
        "x_test": d["x_test"].astype(np.float32),
        "y_test": d["y_test"].astype(np.int64),
    }


def digits(*, n_test: int = DIGITS_TEST, size: int = 28) -> Dataset:
    """scikit-learn's handwritten digits (8x8, 1,797 images), upsampled to ``size`` x ``size``.

    Bilinear upsampling to 28x28 lets the study's 784-input MLP run unchanged. Pixels are
    scaled to [0, 1] and standardised with the training split's mean and std. The split is a
    fixed permutation (seed 0) with ``n_test`` held-out images.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)  # (n, 1, 8, 8)
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    if not isinstance(n_test, int) or not 0 < n_test < len(y):
        raise ValueError(f"Expected `n_test` to be an int in (0, {len(y)}), got {n_test!r}")
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    test, train = perm[:n_test], perm[n_test:]
    mean, std = x[train].mean(), x[train].std()
    x = (x - mean) / std
    spec = DataSpec("digits", "image", (1, size, size), 10)
    return Dataset(spec, x[train], y[train], x[test], y[test])


def modadd(*, p: int = MODADD_P, train_fraction: float = MODADD_TRAIN_FRACTION) -> Dataset:
    """Modular addition ``(a + b) mod p`` over all p^2 pairs, as sequences ``[a, b, =]``.

    The task of Power et al. (2022), "Grokking": with a train fraction of 0.3-0.5 and weight
    decay a transformer first memorises, then generalises thousands of steps later. Tokens
    0..p-1 are numbers, token p is '='. The split is a fixed permutation (seed 0).
    """
    if not isinstance(p, int) or p < 2:
        raise ValueError(f"Expected `p` to be an int >= 2, got {p!r}")
    if not 0 < train_fraction < 1:
        raise ValueError(f"Expected `train_fraction` in (0, 1), got {train_fraction!r}")
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    a, b = a.reshape(-1), b.reshape(-1)
    x = torch.stack([a, b, torch.full_like(a, p)], dim=1)  # (p*p, 3)
    y = (a + b) % p
    perm = torch.randperm(p * p, generator=torch.Generator().manual_seed(0))
    n_train = round(train_fraction * p * p)
    train, test = perm[:n_train], perm[n_train:]
    spec = DataSpec("modadd", "tokens", (3,), p, vocab_size=p + 1)
    return Dataset(spec, x[train], y[train], x[test], y[test])


def stdlib(
    *, context: int = STDLIB_CONTEXT, n_train: int = STDLIB_TRAIN, n_test: int = STDLIB_TEST
) -> Dataset:
    """Byte-level language modelling on the Python standard library's own source files.

    A real text corpus on every machine: the top-level ``*.py`` files of
    ``sysconfig.get_paths()["stdlib"]`` in sorted name order (so the corpus is that of the
    running Python version). Every 10th file is held out, so no held-out text is seen in
    training. Each split's files are joined and cut into non-overlapping windows of
    ``context + 1`` bytes, of which ``n_train`` / ``n_test`` evenly spaced ones are kept:
    inputs are the first ``context`` bytes, targets the next byte at each position
    (``kind='text'``, vocabulary 256).
    """
    for name, value in (("context", context), ("n_train", n_train), ("n_test", n_test)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"Expected `{name}` to be a positive int, got {value!r}")
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
    if len(files) < 10:
        raise ValueError(f"Expected the standard library's sources in {files[:1]}, found none")
    held_out = [f for i, f in enumerate(files) if i % 10 == 9]
    train = [f for i, f in enumerate(files) if i % 10 != 9]
    x_train, y_train = _byte_windows(train, context, n_train)
    x_test, y_test = _byte_windows(held_out, context, n_test)
    spec = DataSpec("stdlib", "text", (context,), 256, vocab_size=256)
    return Dataset(spec, x_train, y_train, x_test, y_test)


def _byte_windows(files: list[Path], context: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, context) inputs and next-byte targets from evenly spaced windows of the files."""
    data = np.frombuffer(b"\n".join(f.read_bytes() for f in files), dtype=np.uint8)
    windows = data[: len(data) // (context + 1) * (context + 1)].reshape(-1, context + 1)
    if len(windows) < n:
        raise ValueError(
            f"Expected at least {n} windows of {context + 1} bytes, got {len(windows)}"
        )
    keep = np.linspace(0, len(windows) - 1, n).round().astype(np.int64)
    w = torch.from_numpy(windows[keep].astype(np.int64))  # (n, context + 1)
    return w[:, :-1].contiguous(), w[:, 1:].contiguous()
