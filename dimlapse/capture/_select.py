"""Which modules and parameters are recorded.

The reductions of the selected modules' outputs live in ``_taps`` (re-exported here).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence

from torch import nn

from ._taps import Tap, make_taps, output_tensor, probe_forward, sampled_indices

DEFAULT_MODULE_TYPES: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.MultiheadAttention,
    nn.TransformerEncoderLayer,
    nn.TransformerDecoderLayer,
    nn.Embedding,
)


ModuleSelector = None | str | Sequence[str] | Sequence[type] | Callable[[str, nn.Module], bool]
ParamSelector = None | str | Sequence[str] | Callable[[str, nn.Parameter], bool]


def _inside_mha(name: str, mha_names: list[str]) -> bool:
    return any(name.startswith(m + ".") for m in mha_names)


def _is_hf_linear(module: nn.Module) -> bool:
    # Hugging Face's Conv1D (GPT-2's projections) is a Linear with a transposed weight; matched
    # by name so that capture never imports transformers.
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf")


def _is_attention(module: nn.Module) -> bool:
    return isinstance(module, nn.MultiheadAttention) or type(module).__name__.endswith("Attention")


def _default_modules(model: nn.Module) -> set[str]:
    """Names chosen by default: :data:`DEFAULT_MODULE_TYPES`, Hugging Face ``Conv1D``, the
    outermost attention modules (class name ending in ``Attention``) and transformer blocks
    (items of an ``nn.ModuleList`` that hold an attention module)."""
    named = [(n, m) for n, m in model.named_modules() if n]
    attention = [n for n, m in named if _is_attention(m)]
    outermost = {n for n in attention if not _inside_mha(n, attention)}
    chosen = {n for n, m in named if isinstance(m, DEFAULT_MODULE_TYPES) or _is_hf_linear(m)}
    for parent_name, parent in named:
        if isinstance(parent, nn.ModuleList):
            for i, block in enumerate(parent):
                if any(_is_attention(m) for m in block.modules()):
                    chosen.add(f"{parent_name}.{i}")
    return chosen | outermost


def select_modules(model: nn.Module, modules: ModuleSelector) -> list[tuple[str, nn.Module]]:
    """Named submodules whose outputs are recorded.

    ``None`` selects :data:`DEFAULT_MODULE_TYPES`, Hugging Face ``Conv1D`` layers, attention
    modules and transformer blocks (see :func:`_default_modules`); a list of module types
    selects by type; a glob string or list of globs selects by qualified name; a callable
    ``(name, module) -> bool`` decides itself. Children of ``nn.MultiheadAttention`` (its
    ``out_proj``) are never selected: their forward is never called, so a hook on them would
    never fire.
    """
    named = [(n, m) for n, m in model.named_modules() if n]
    mha = [n for n, m in named if isinstance(m, nn.MultiheadAttention)]
    if modules is None:
        default = _default_modules(model)
        return [(n, m) for n, m in named if n in default and not _inside_mha(n, mha)]
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


__all__ = [
    "DEFAULT_MODULE_TYPES",
    "ModuleSelector",
    "ParamSelector",
    "Tap",
    "make_taps",
    "output_tensor",
    "probe_forward",
    "sampled_indices",
    "select_modules",
    "select_params",
]
