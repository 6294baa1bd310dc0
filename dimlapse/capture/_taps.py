"""Taps: forward hooks that turn selected modules' outputs on the probe into (row, feature).

Reductions (DESIGN.md, "Run store"):

- 2-D outputs ``(N, F)`` are kept as they are;
- convolution outputs ``(N, C, *spatial)`` keep channels as features over a fixed, seeded
  sample of ``positions`` spatial positions: rows ``(N * P, C)``;
- token outputs ``(N, T, E)`` keep hidden units over a fixed, seeded sample of ``tokens``
  token positions: rows ``(N * k, E)``. Sequence-first modules (``batch_first=False``) are
  transposed first. When the probe carries an ``attention_mask`` ``(N, T)``, each example's
  ``k = min(tokens, fewest real tokens of any example)`` positions are sampled among its own
  real tokens (padding is never recorded); the chosen positions are per example.

Rows are example-major: ``row = example * rows_per_example + position_index``. The sampled
indices depend only on the module name, the axis length (and the mask), so inline capture,
the shadow model and ``replay`` all pick the same positions.

Module outputs as models return them (:func:`output_tensor`): a tensor; a tuple or list
(``nn.MultiheadAttention``'s ``(output, weights)``, ``nn.LSTM``'s ``(output, (h, c))``,
Hugging Face attention's ``(output, weights)``) stands for its first tensor; a mapping or
Hugging Face ``ModelOutput`` for its ``last_hidden_state`` if it has one, else its first
tensor value (``logits`` of a language-model head). An output whose batch dimension is 1
while the probe has ``N > 1`` examples (a position embedding, broadcast over the batch) is
recorded once per example.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from ._probe import Probe, probe_batch_size, probe_call, probe_mask

try:  # torch builds without distributed have neither
    from torch.distributed._functional_collectives import AsyncCollectiveTensor
    from torch.distributed.tensor import DTensor
except ImportError:  # pragma: no cover
    AsyncCollectiveTensor = DTensor = None  # type: ignore[assignment,misc]

_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_HIDDEN_KEY = "last_hidden_state"


def sampled_indices(name: str, length: int, k: int) -> np.ndarray:
    """Fixed, seeded sample of ``k`` of ``length`` positions (all of them when k >= length).

    The seed is the CRC-32 of the module name, so the sample is reproducible across
    processes and independent of any global RNG.
    """
    if k >= length:
        return np.arange(length, dtype=np.int64)
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    return np.sort(rng.choice(length, size=k, replace=False)).astype(np.int64)


def _batch_first(model: nn.Module, name: str) -> bool:
    """Whether token outputs of ``name`` are (N, T, E); the nearest attention owner decides."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        m = model.get_submodule(".".join(parts[:i]))
        if isinstance(m, nn.MultiheadAttention):
            return bool(m.batch_first)
        attn = getattr(m, "self_attn", None)
        if isinstance(attn, nn.MultiheadAttention):
            return bool(attn.batch_first)
        flag = getattr(m, "batch_first", None)
        if isinstance(flag, bool):
            return flag
    return True


def output_tensor(output: Any) -> torch.Tensor | None:
    """The tensor that stands for a module's output (None when there is none).

    A tensor is itself; a tuple or list stands for its first tensor element; a mapping (a
    Hugging Face ``ModelOutput`` included) for ``last_hidden_state`` if present, else its
    first tensor value.
    """
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, tuple | list):
        return next((x for x in output if isinstance(x, torch.Tensor)), None)
    if isinstance(output, Mapping):
        hidden = output.get(_HIDDEN_KEY)
        if isinstance(hidden, torch.Tensor):
            return hidden
        return next((x for x in output.values() if isinstance(x, torch.Tensor)), None)
    return None


class Tap:
    """Forward hook that reduces one module's output on the probe batch to (row, feature).

    After a forward, ``value`` holds the reduced float32 tensor (first call only: a module
    applied twice in one forward is recorded at its first call). ``examples`` (the probe's N)
    and ``mask`` (bool ``(N, T)``, True at real tokens) are set by :func:`probe_forward`.
    """

    def __init__(
        self, name: str, module: nn.Module, *, batch_first: bool, positions: int, tokens: int
    ) -> None:
        self.name = name
        self.module_type = type(module).__name__
        self.is_conv = isinstance(module, _CONV_TYPES)
        self.batch_first = batch_first
        self.positions = positions
        self.tokens = tokens
        self.value: torch.Tensor | None = None
        self.meta: dict[str, Any] | None = None
        self.examples: int | None = None
        self.mask: torch.Tensor | None = None
        self._index: torch.Tensor | None = None
        self.placed: tuple[tuple[Any, ...], int] | None = None

    def reset(self) -> None:
        self.value = None

    def __call__(self, module: nn.Module, inputs: Any, output: Any) -> None:
        if self.value is not None:
            return
        tensor = output_tensor(output)
        if tensor is None:
            return
        if DTensor is not None and isinstance(tensor, DTensor):  # tensor parallelism's output
            self.placed = (tuple(tensor.placements), tensor.ndim)  # (placements, ndim)
            tensor = tensor.to_local()  # this rank's part: never gathered
        if AsyncCollectiveTensor is not None and isinstance(tensor, AsyncCollectiveTensor):
            # a tensor-parallel layer's output still being reduced: a rank that does not
            # record it would leave the collective unwaited (views of it stay asynchronous)
            tensor = tensor.wait()
        self.value = self.reduce(tensor.detach())

    def reduce(self, x: torch.Tensor) -> torch.Tensor:
        """(N, ...) module output -> (rows, feature) float32."""
        examples = self.examples
        if examples and examples > 1 and x.ndim >= 2 and x.shape[0] == 1 and self.batch_first:
            x = x.expand(examples, *x.shape[1:])  # broadcast over the batch: rows per example
        if x.ndim <= 1:
            x = x.reshape(-1, 1)
            reduction, idx, per = "none", None, 1
        elif x.ndim == 2:
            reduction, idx, per = "none", None, 1
        elif self.is_conv or x.ndim >= 4:
            n, c = x.shape[:2]
            x = x.reshape(n, c, -1)  # (N, C, S)
            idx = self._indices(x.shape[2], self.positions, x.device)
            x = x.index_select(2, idx).transpose(1, 2)  # (N, P, C)
            reduction, per = "positions", x.shape[1]
        else:
            if not self.batch_first:
                x = x.transpose(0, 1)  # (T, N, E) -> (N, T, E)
            mask = self.mask
            if mask is not None and tuple(mask.shape) == tuple(x.shape[:2]):
                idx = self._masked_indices(mask, x.device)  # (N, k)
                rows = torch.arange(x.shape[0], device=x.device).unsqueeze(1)  # (N, 1)
                x = x[rows, idx]  # (N, k, E)
            else:
                idx = self._indices(x.shape[1], self.tokens, x.device)
                x = x.index_select(1, idx)  # (N, k, E)
            reduction, per = "tokens", x.shape[1]
        if self.meta is None:
            self.meta = {
                "module_type": self.module_type,
                "reduction": reduction,
                "rows_per_example": int(per),
            }
            if idx is not None:
                self.meta[reduction] = idx.tolist()  # (k,) or, under a mask, (N, k)
            if reduction == "tokens" and idx is not None and idx.ndim == 2:
                self.meta["token_mask"] = True
        return x.reshape(-1, x.shape[-1]).float()  # (N * per, feature)

    def _indices(self, length: int, k: int, device: torch.device) -> torch.Tensor:
        if self._index is None or self._index.ndim != 1 or self._index.device != device:
            self._index = torch.from_numpy(sampled_indices(self.name, length, k)).to(device)
        return self._index

    def _masked_indices(self, mask: torch.Tensor, device: torch.device) -> torch.Tensor:
        """(N, k) token positions, each row sampled among that example's real tokens."""
        if self._index is not None and self._index.ndim == 2 and self._index.device == device:
            return self._index
        real = mask.detach().cpu().numpy()  # (N, T) bool
        k = min(self.tokens, int(real.sum(axis=1).min()))
        idx = np.stack(
            [np.flatnonzero(row)[sampled_indices(self.name, int(row.sum()), k)] for row in real]
        )  # (N, k), sorted within each row
        self._index = torch.from_numpy(idx.astype(np.int64)).to(device)
        return self._index


def make_taps(
    model: nn.Module, selected: list[tuple[str, nn.Module]], *, positions: int, tokens: int
) -> dict[str, Tap]:
    """One :class:`Tap` per selected module name (hooks are registered by the caller)."""
    return {
        name: Tap(
            name,
            module,
            batch_first=_batch_first(model, name),
            positions=positions,
            tokens=tokens,
        )
        for name, module in selected
    }


def probe_forward(model: nn.Module, probe: Probe, taps: dict[str, Tap]) -> dict[str, torch.Tensor]:
    """Run the model on the probe with the taps hooked in; return {module name: (rows, feature)}.

    ``probe`` is a tensor (``model(probe)``), a mapping (``model(**probe)``; its
    ``attention_mask``, if any, restricts token samples to real tokens) or a tuple
    (``model(*probe)``). The caller sets eval mode and ``no_grad``; hooks are removed again
    afterwards.
    """
    examples, mask = probe_batch_size(probe), probe_mask(probe)
    handles = []
    for name, tap in taps.items():
        tap.reset()
        tap.examples, tap.mask = examples, mask
        handles.append(model.get_submodule(name).register_forward_hook(tap))
    try:
        probe_call(model, probe)
    finally:
        for h in handles:
            h.remove()
    return {name: tap.value for name, tap in taps.items() if tap.value is not None}
