"""The dataset types every loader returns: :class:`DataSpec` (what a model needs to know about
its inputs) and :class:`Dataset` (train and held-out tensors), and the default cache folder."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

DEFAULT_CACHE = Path("data/cache")


@dataclass(frozen=True)
class DataSpec:
    """What a model needs to know about its inputs.

    ``kind`` is 'sequence' (inputs (n, channels, length)), 'image' (n, channels, h, w),
    'tokens' (n, length) int64 with ``vocab_size`` symbols, or 'text' (n, length) int64 tokens
    whose targets are the next token at every position, (n, length).
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
