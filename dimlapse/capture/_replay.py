"""Materialise probe activations afterwards from a run's stored weights and probe."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from torch import nn

from . import store as _store
from ._select import ModuleSelector, make_taps, probe_forward, select_modules
from .store import valid_prefix
from .writer import SnapshotSink, host, quiet_numcodecs

log = logging.getLogger("dimlapse.capture")


def _model_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    return {**dict(model.named_parameters()), **dict(model.named_buffers())}


def replay(
    store: Any,
    model: nn.Module,
    *,
    modules: ModuleSelector = None,
    positions: int = 16,
    tokens: int = 4,
    overwrite: bool = False,
) -> int:
    """Fill ``activations/`` of a run from its stored weights, state and probe.

    For each complete snapshot the stored ``weights/`` and ``state/`` rows are loaded into
    ``model`` (same architecture as the recorded one), the stored probe is run through it in
    eval mode under ``no_grad`` with the same module selection and reductions as inline
    capture, and the outputs are written as ``activations/`` (whole chunks, step index last).
    With a lossless codec the result equals inline capture to float tolerance. The model's
    own parameters, buffers and train/eval modes are restored afterwards.

    Parameters
    ----------
    store : str, os.PathLike or zarr store
        The run store (typically captured with ``mode="weights"``).
    model : torch.nn.Module
        A model of the recorded architecture (its current values are not used).
    modules, positions, tokens
        As for :class:`CaptureOptions` (the Recorder's options).
    overwrite : bool
        Replace activations that are already stored.

    Returns
    -------
    int
        Number of snapshots replayed.
    """
    with quiet_numcodecs():  # bitround runs: zarr warns on every open of their arrays
        return _replay(
            store, model, modules=modules, positions=positions, tokens=tokens, overwrite=overwrite
        )


def _replay(
    store: Any,
    model: nn.Module,
    *,
    modules: ModuleSelector,
    positions: int,
    tokens: int,
    overwrite: bool,
) -> int:
    try:
        root: Any = _store.open_root(store, mode="r+")
    except _store.NOT_FOUND as exc:
        raise _store.RunNotFoundError(f"Expected a run store at {store!r}, found none") from exc
    attrs: dict[str, Any] = dict(root.attrs)
    _store.check_layout(attrs, store)
    if "probe" not in root or "inputs" not in root["probe"]:
        raise ValueError(
            f"Expected a stored probe (probe/inputs) in {store!r} to replay, found none"
        )
    if "activations" in root and any(n != "step" for n in root["activations"].array_keys()):
        if not overwrite:
            raise _store.RunExistsError(
                f"{store!r} already holds activations; pass overwrite=True to replace them"
            )
        del root["activations"]
    groups: dict[str, Any] = {g: root[g] for g in ("weights", "state") if g in root}
    tensors = _model_tensors(model)
    stored = {(g, n): arr for g, grp in groups.items() for n, arr in grp.arrays() if n != "step"}
    shapes = {n: tuple(t.shape) for n, t in tensors.items()}
    problems = [
        f"{n} (stored {tuple(a.shape[1:])}, model {shapes.get(n)})"
        for (_, n), a in stored.items()
        if shapes.get(n) != tuple(a.shape[1:])
    ]
    missing = sorted(set(tensors) - {n for _, n in stored})
    if problems or missing:
        raise ValueError(
            "Expected `model` to match the recorded architecture; mismatched: "
            f"{problems[:5]}, not stored (run captured without state/?): {missing[:5]}"
        )
    n = min(valid_prefix(grp["step"][:]) for grp in groups.values())
    steps = groups["weights"]["step"][:n]
    inputs, _ = _store.read_probe(root)
    device = next(iter(tensors.values())).device
    probe = inputs.to(device)
    selected = select_modules(model, modules)
    taps = make_taps(model, selected, positions=positions, tokens=tokens)
    chunk = int(attrs.get("flush_every", 16))
    sink = SnapshotSink(
        root,
        chunk=chunk,
        scalar_chunk=chunk,
        codec=attrs.get("codec", "zstd"),
        probe_examples=int(probe.shape[0]),
        groups=("activations",),
    )
    saved = {k: v.detach().clone() for k, v in tensors.items()}
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            for start in range(0, n, chunk):  # read whole stored chunks
                stop = min(start + chunk, n)
                block = {name: np.asarray(arr[start:stop]) for (_, name), arr in stored.items()}
                for i in range(stop - start):
                    for name, rows in block.items():
                        tensors[name].copy_(torch.from_numpy(np.asarray(rows[i])))
                    acts = probe_forward(model, probe, taps)
                    sink.snapshot(
                        int(steps[start + i]),
                        weights={},
                        state={},
                        activations={k: host(v) for k, v in acts.items()},
                        taps=taps,
                    )
        sink.flush()
    finally:
        with torch.no_grad():
            for name, value in saved.items():
                tensors[name].copy_(value)
        for m, mode in modes:
            m.training = mode
    root.update_attributes(
        {
            "activations": True,
            **({"mode": "full"} if attrs.get("mode") == "weights" else {}),
            "modules": [name for name, _ in selected],
            "replayed": {"time": _store.utcnow(), "snapshots": n},
            "nonfinite": {**attrs.get("nonfinite", {}), **sink.nonfinite},
        }
    )
    log.info("dimlapse: replayed %d snapshots into %r", n, store)
    return n
