"""Checks of the user's arguments, run by ``CaptureOptions``, in the Recorder's constructor and
on the hot path's first sight of a scalar name: mistakes are refused at once, naming the
argument and value, never reported later as store errors."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ._probe import probe_batch_size
from ._select import ModuleSelector, Tap, make_taps, probe_forward, select_modules

# root attrs the Recorder owns: a user value would break reading the run, or lie about it
RESERVED_ATTRS = frozenset(
    {
        "layout_version", "status", "every", "schedule", "model", "git_commit", "versions",
        "probe", "codec", "flush_every", "scalar_chunk", "modules", "params", "activations",
        "created", "finished", "nonfinite", "dropped_snapshots", "errors", "stats", "resumed",
        "replayed", "mode", "full_every", "projected_bytes", "sharded",
    }
)  # fmt: skip
MAX_SCALAR_NAME = 200  # an array folder's name: file systems allow 255 bytes
_SCALAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")


class ProbeError(ValueError):
    """The probe batch cannot go through the model (refused at construction)."""


def positive_int(name: str, value: Any, minimum: int = 1) -> int:
    """Validate an int option."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"Expected `{name}` to be an int >= {minimum}, got {value!r}")
    return value


def check_user_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """Refuse user ``attrs`` that would overwrite what the Recorder owns."""
    clash = sorted(set(attrs) & RESERVED_ATTRS)
    if clash:
        raise ValueError(
            f"Expected `attrs` not to set keys the Recorder owns, got {clash}; rename them "
            "(for example under a 'user' key). Reserved: " + ", ".join(sorted(RESERVED_ATTRS))
        )
    return attrs


def check_scalar_name(name: str) -> str:
    """A scalar name becomes an array name under ``scalars/``: letters, digits, ``_.-``."""
    if isinstance(name, str) and len(name) > MAX_SCALAR_NAME:
        raise ValueError(
            f"Expected scalar names of at most {MAX_SCALAR_NAME} characters (each becomes a "
            f"file name in the store), got one of {len(name)}: {name[:40]!r}..."
        )
    if not isinstance(name, str) or not _SCALAR_NAME.match(name) or name == "step":
        raise ValueError(
            f"Expected scalar names to start with a letter or '_' and hold only letters, digits, "
            f"'_', '.', '-' (and not be 'step'), got {name!r}"
        )
    return name


def scalar_value(name: str, value: Any) -> Any:
    """A loss or user scalar as a float (CPU) or a device copy (CUDA, no host sync)."""
    if type(value) is float:
        return value
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(
                f"Expected scalar `{name}` to be a number or a one-element tensor, "
                f"got a tensor of shape {tuple(value.shape)}"
            )
        if value.is_cuda:  # no host sync: a device copy, read by the writer
            return value.detach().clone()
        return value.item()  # a CPU read is cheaper than a clone and never syncs
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"Expected scalar `{name}` to be a number or a one-element tensor, got {value!r}"
        ) from exc


def describe(probe: Any) -> str:
    if isinstance(probe, torch.Tensor):
        return f"a {str(probe.dtype).removeprefix('torch.')} tensor of shape {tuple(probe.shape)}"
    if isinstance(probe, dict):
        return "a dict {" + ", ".join(f"{k!r}: {describe(v)}" for k, v in probe.items()) + "}"
    if isinstance(probe, tuple | list):
        return "a tuple (" + ", ".join(describe(v) for v in probe) + ")"
    return repr(probe)[:80]


@contextmanager
def _blame(model: nn.Module) -> Iterator[list[str]]:
    """Track which module a forward is inside (for an error message naming it)."""
    stack: list[str] = []
    handles = []
    for name, module in model.named_modules():
        if not name:
            continue

        def pre(m: nn.Module, args: Any, name: str = name) -> None:
            stack.append(name)

        def post(m: nn.Module, args: Any, out: Any, name: str = name) -> None:
            if stack and stack[-1] == name:
                stack.pop()

        handles.append(module.register_forward_pre_hook(pre))
        handles.append(module.register_forward_hook(post))
    try:
        yield stack
    finally:
        for h in handles:
            h.remove()


def check_probe(shadow: nn.Module, probe: Any, taps: dict[str, Tap], n: int) -> None:
    """Run the probe once through the shadow model (eval, no_grad); refuse what fails.

    The shadow is a copy, so the model being trained, its modes and RNG are untouched.
    """
    if n < 2:
        raise ProbeError(
            f"Expected `probe` to hold at least 2 examples (sample-centred spectra need 2), "
            f"got {describe(probe)}"
        )
    params = [p for p in shadow.parameters() if p.is_floating_point()]
    if isinstance(probe, torch.Tensor) and probe.is_floating_point() and params:
        if probe.dtype != params[0].dtype:
            raise ProbeError(
                f"Expected `probe` to have the model's dtype {params[0].dtype}, got "
                f"{describe(probe)}; pass probe.to({params[0].dtype})"
            )
    rng = torch.get_rng_state()
    try:
        with _blame(shadow) as stack, torch.no_grad():
            try:
                probe_forward(shadow, probe, taps)
            except Exception as exc:
                where = (
                    f" in module {stack[-1]!r} ({type(shadow.get_submodule(stack[-1])).__name__})"
                    if stack
                    else ""
                )
                raise ProbeError(
                    f"Expected `probe` to be an input the model accepts, got {describe(probe)}: "
                    f"the probe forward failed{where}: {type(exc).__name__}: {exc}. Pass a batch "
                    "shaped like a training batch (a tuple for several positional inputs, a dict "
                    "for keyword inputs)"
                ) from exc
    finally:
        torch.set_rng_state(rng)
    missing = [name for name, tap in taps.items() if tap.value is None]
    if missing:
        raise ProbeError(
            f"Expected every module in `modules` to produce a tensor on the probe, but "
            f"{missing} returned none (not called in forward, or non-tensor output); "
            "leave them out of `modules`"
        )


def probe_taps(
    model: nn.Module,
    probe: Any,
    targets: Any,
    *,
    modules: ModuleSelector,
    positions: int,
    tokens: int,
    mode: str,
) -> tuple[int, dict[str, Tap]]:
    """Validate the probe by running it once (on the model, eval + no_grad, modes and RNG
    restored); select the recorded modules. Returns the number of probe examples and the taps
    of the recorded modules (none without a probe or in ``weights`` mode)."""
    if probe is None:
        if targets is not None:
            raise ValueError("Expected `probe_targets` only with a `probe`, got no probe")
        return 0, {}
    n = probe_batch_size(probe)
    if targets is not None and (not isinstance(targets, torch.Tensor) or targets.shape[:1] != (n,)):
        raise ValueError(
            "Expected `probe_targets` to be a tensor with one entry per probe example "
            f"({n}), got {targets!r:.80}"
        )
    chosen = select_modules(model, modules) if mode != "weights" else []
    taps = make_taps(model, chosen, positions=positions, tokens=tokens)
    modes = [(m, m.training) for m in model.modules()]
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    try:
        model.eval()
        check_probe(model, probe, taps, n)
    finally:
        for m, was in modes:
            m.training = was
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
    return n, taps


def materialised(model: torch.nn.Module) -> None:
    """Refuse a model whose parameters or buffers live on the meta device (no data: the
    store would stay empty)."""
    meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if meta:
        raise ValueError(
            f"Expected `model`'s parameters and buffers to hold data, got {len(meta)} on the "
            f"meta device ({', '.join(meta[:3])}{', ...' if len(meta) > 3 else ''}); "
            "materialise the model (e.g. model.to_empty(device='cpu') and initialise it) "
            "before constructing the Recorder"
        )
