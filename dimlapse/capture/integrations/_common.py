"""What the training-framework callbacks share: opening the Recorder (new run or resume)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import nn

from .._options import CaptureOptions
from .._recorder import Recorder
from .._schedule import Schedule
from ..store import RunNotFoundError


def open_recorder(
    model: nn.Module,
    store: Any,
    *,
    step: int,
    every: int | Schedule,
    probe: Any,
    probe_targets: torch.Tensor | None,
    overwrite: bool,
    options: CaptureOptions,
    attrs: dict[str, Any] | None,
    integration: str,
    total_steps: int | None = None,
) -> Recorder:
    """A Recorder for a trainer that starts (``step == 0``) or resumes (``step > 0``).

    On resume, the run in ``store`` continues from the trainer's restored ``step`` (snapshots
    recorded after it are cut); when there is no such run yet, a new one starts at ``step``.
    ``total_steps`` (the trainer's planned optimizer steps) fills ``options.total_steps`` when
    that is unset, for the Recorder's disk projection.
    """
    if options.total_steps is None and total_steps is not None and total_steps > 0:
        options = dataclasses.replace(options, total_steps=int(total_steps))
    attrs = {"integration": integration, **(attrs or {})}
    common: dict[str, Any] = dict(
        every=every, probe=probe, probe_targets=probe_targets, options=options, attrs=attrs
    )
    if step > 0:
        try:
            return Recorder(model, store, resume=True, start_step=step, **common)
        except RunNotFoundError:
            pass  # the callback joins a run in progress: a new store starting at `step`
        return Recorder(model, store, start_step=step, overwrite=overwrite, **common)
    return Recorder(model, store, overwrite=overwrite, **common)


def as_float(value: Any) -> float:
    """A logged number as a float (NaN when missing)."""
    if value is None:
        return math.nan
    if isinstance(value, torch.Tensor):
        return float(value.detach())  # host sync: the trainer has synced to log it already
    return float(value)
