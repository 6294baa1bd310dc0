"""Datasets: offline generators (mnist1d, digits, modadd) and the downloading loaders' registry.

Every dataset comes back as a :class:`Dataset` of CPU tensors with a train and a held-out split
and a :class:`DataSpec` describing the inputs, so a model can be built from the spec alone (the
spec is saved in the run store's ``dataset`` attr, which is how ``replay`` rebuilds a model).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._recipes import DATASETS

DEFAULT_CACHE = Path("data/cache")
MNIST1D_SAMPLES = 10_000  # the package's default is 5,000; its `num_samples` sets the total
DIGITS_TEST = 600  # held-out examples of sklearn's 1,797 digits (>= the 512-example probe)
MODADD_P = 97
MODADD_TRAIN_FRACTION = 0.4


@dataclass(frozen=True)
class DataSpec:
    """What a model needs to know about its inputs.

    ``kind`` is 'sequence' (inputs (n, channels, length)), 'image' (n, channels, h, w) or
    'tokens' (n, length) int64 with ``vocab_size`` symbols.
    """

    name: str
    kind: str
    input_shape: tuple[int, ...]
    n_classes: int
    vocab_size: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict."""
        out = dataclasses.asdict(self)
        out["input_shape"] = list(self.input_shape)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataSpec:
        """Inverse of :meth:`to_dict`."""
        return cls(**{**d, "input_shape": tuple(d["input_shape"])})


@dataclass(frozen=True, eq=False)
class Dataset:
    """Train and held-out tensors plus their :class:`DataSpec`."""

    spec: DataSpec
    x_train: torch.Tensor  # (n_train, *input_shape)
    y_train: torch.Tensor  # (n_train,) int64
    x_test: torch.Tensor  # (n_test, *input_shape)
    y_test: torch.Tensor  # (n_test,) int64


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
