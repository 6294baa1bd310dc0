"""Which modules and parameters are recorded, and how module outputs become (row, feature).

Reductions (DESIGN.md, "Run store"):

- 2-D outputs ``(N, F)`` are kept as they are;
- convolution outputs ``(N, C, *spatial)`` keep channels as features over a fixed, seeded
  sample of ``positions`` spatial positions: rows ``(N * P, C)``;
- token outputs ``(N, T, E)`` keep hidden units over a fixed, seeded sample of ``tokens``
  token positions: rows ``(N * k, E)``. Sequence-first modules (``batch_first=False``) are
  transposed first.

Rows are example-major: ``row = example * rows_per_example + position_index``. The sampled
indices depend only on the module name and the axis length, so inline capture, the shadow
model and ``replay`` all pick the same positions.
"""

from __future__ import annotations

import fnmatch
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

DEFAULT_MODULE_TYPES: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.MultiheadAttention,
    nn.TransformerEncoderLayer,
    nn.TransformerDecoderLayer,
    nn.Embedding,
)
_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)

ModuleSelector = None | str | Sequence[str] | Sequence[type] | Callable[[str, nn.Module], bool]
ParamSelector = None | str | Sequence[str] | Callable[[str, nn.Parameter], bool]


def _inside_mha(name: str, mha_names: list[str]) -> bool:
    return any(name.startswith(m + ".") for m in mha_names)


def select_modules(model: nn.Module, modules: ModuleSelector) -> list[tuple[str, nn.Module]]:
    """Named submodules whose outputs are recorded.

    ``None`` selects :data:`DEFAULT_MODULE_TYPES`; a list of module types selects by type; a
    glob string or list of globs selects by qualified name; a callable ``(name, module) ->
    bool`` decides itself. Children of ``nn.MultiheadAttention`` (its ``out_proj``) are never
    selected: their forward is never called, so a hook on them would never fire.
    """
    named = [(n, m) for n, m in model.named_modules() if n]
    mha = [n for n, m in named if isinstance(m, nn.MultiheadAttention)]
    if modules is None:
        return [
            (n, m)
            for n, m in named
            if isinstance(m, DEFAULT_MODULE_TYPES) and not _inside_mha(n, mha)
        ]
    if isinstance(modules, str):
        modules = [modules]
    by_glob = False
    if callable(modules) and not isinstance(modules, type):
        chosen = [(n, m) for n, m in named if modules(n, m)]
    elif isinstance(modules, Sequence) and modules and all(isinstance(x, type) for x in modules):
        types = tuple(x for x in modules if isinstance(x, type))
        bad = [x for x in types if not issubclass(x, nn.Module)]
        if bad:
            raise ValueError(f"Expected `modules` types to be nn.Module subclasses, got {bad!r}")
        chosen = [(n, m) for n, m in named if isinstance(m, types)]
    elif isinstance(modules, Sequence) and modules and all(isinstance(x, str) for x in modules):
        globs = [g for g in modules if isinstance(g, str)]
        chosen = [(n, m) for n, m in named if any(fnmatch.fnmatchcase(n, g) for g in globs)]
        by_glob = True
        if not chosen:
            some = ", ".join(n for n, _ in named[:12])
            raise ValueError(
                f"Expected `modules` globs {list(modules)!r} to match at least one module "
                f"name; available names include: {some}"
            )
    else:
        raise ValueError(
            "Expected `modules` to be None, a list of module types, a name glob or list of "
            f"globs, or a callable(name, module) -> bool, got {modules!r}"
        )
    never_called = [n for n, _ in chosen if _inside_mha(n, mha)]
    if never_called and by_glob and len(never_called) == len(chosen):
        owner = next(m for m in mha if never_called[0].startswith(m + "."))
        raise ValueError(
            f"Expected `modules` not to select {never_called!r}: MultiheadAttention never calls "
            f"its `out_proj` forward, so no output would be seen; select {owner!r} instead"
        )
    return [(n, m) for n, m in chosen if not _inside_mha(n, mha)]


def select_params(model: nn.Module, params: ParamSelector) -> list[str]:
    """Names of the parameters stored under ``weights/``.

    Globs (a string or list of strings) match qualified parameter names among parameters with
    ``ndim >= 2``; a callable ``(name, param) -> bool`` sees every parameter; ``None`` or an
    empty list stores none.
    """
    named = list(model.named_parameters())
    if params is None:
        return []
    if isinstance(params, str):
        params = [params]
    if callable(params):
        return [n for n, p in named if params(n, p)]
    if isinstance(params, Sequence) and all(isinstance(g, str) for g in params):
        return [
            n for n, p in named if p.ndim >= 2 and any(fnmatch.fnmatchcase(n, g) for g in params)
        ]
    raise ValueError(
        "Expected `params` to be a name glob, a list of globs, None, or a callable(name, param) "
        f"-> bool, got {params!r}"
    )


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


class Tap:
    """Forward hook that reduces one module's output on the probe batch to (row, feature).

    After a forward, ``value`` holds the reduced float32 tensor (first call only: a module
    applied twice in one forward is recorded at its first call).
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
        self._index: torch.Tensor | None = None

    def reset(self) -> None:
        self.value = None

    def __call__(self, module: nn.Module, inputs: Any, output: Any) -> None:
        if self.value is not None:
            return
        if isinstance(output, tuple | list):  # MultiheadAttention: (attn_output, weights)
            output = output[0]
        if not isinstance(output, torch.Tensor):
            return
        self.value = self.reduce(output.detach())

    def reduce(self, x: torch.Tensor) -> torch.Tensor:
        """(N, ...) module output -> (rows, feature) float32."""
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
                self.meta[reduction] = [int(i) for i in idx.tolist()]
        return x.reshape(-1, x.shape[-1]).float()  # (N * per, feature)

    def _indices(self, length: int, k: int, device: torch.device) -> torch.Tensor:
        if self._index is None or self._index.device != device:
            self._index = torch.from_numpy(sampled_indices(self.name, length, k)).to(device)
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


def probe_forward(
    model: nn.Module, probe: torch.Tensor, taps: dict[str, Tap]
) -> dict[str, torch.Tensor]:
    """Run ``model(probe)`` with the taps hooked in; return {module name: (rows, feature)}.

    The caller sets eval mode and ``no_grad``; hooks are removed again afterwards.
    """
    handles = []
    for name, tap in taps.items():
        tap.reset()
        handles.append(model.get_submodule(name).register_forward_hook(tap))
    try:
        model(probe)
    finally:
        for h in handles:
            h.remove()
    return {name: tap.value for name, tap in taps.items() if tap.value is not None}
