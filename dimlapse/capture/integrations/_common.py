"""What the training-framework callbacks share: capture options and opening the Recorder."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .._recorder import Recorder
from .._schedule import Schedule
from .._select import ModuleSelector, ParamSelector
from .._store import RunNotFoundError


@dataclass(frozen=True, eq=False)
class CaptureOptions:
    """What is recorded and how, for a callback's :class:`~dimlapse.capture.Recorder`.

    Every field left at ``None`` takes the Recorder's own default; see ``Recorder`` for the
    meaning of each. ``total_steps`` (for the Recorder's disk projection) defaults to the
    trainer's planned number of optimizer steps when the trainer knows it.

    Examples
    --------
    >>> CaptureOptions(modules="transformer.h.*", codec="float16").recorder_kwargs()
    {'modules': 'transformer.h.*', 'codec': 'float16'}
    """

    modules: ModuleSelector = None
    params: ParamSelector | None = None
    mode: str | None = None
    activations: bool | None = None
    full_every: int | None = None
    positions: int | None = None
    tokens: int | None = None
    codec: str | None = None
    flush_every: int | None = None
    max_buffer_bytes: int | None = None
    backpressure: str | None = None
    writer: str | None = None
    total_steps: int | None = None
    strict: bool | None = None
    attrs: dict[str, Any] | None = None

    def recorder_kwargs(self) -> dict[str, Any]:
        """The options that were set, as ``Recorder`` keyword arguments."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if getattr(self, f.name) is not None
        }


def check_options(options: Any) -> CaptureOptions:
    """``options`` itself, or a fresh :class:`CaptureOptions` for None; anything else refused."""
    if options is None:
        return CaptureOptions()
    if not isinstance(options, CaptureOptions):
        raise ValueError(
            f"Expected `options` to be a dimlapse.capture.integrations.CaptureOptions or None, "
            f"got {options!r:.80}"
        )
    return options


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
    integration: str,
    total_steps: int | None = None,
) -> Recorder:
    """A Recorder for a trainer that starts (``step == 0``) or resumes (``step > 0``).

    On resume, the run in ``store`` continues from the trainer's restored ``step`` (snapshots
    recorded after it are cut); when there is no such run yet, a new one starts at ``step``.
    """
    kwargs = options.recorder_kwargs()
    if total_steps is not None and total_steps > 0:
        kwargs.setdefault("total_steps", int(total_steps))
    attrs = {"integration": integration, **kwargs.pop("attrs", {})}
    common = dict(every=every, probe=probe, probe_targets=probe_targets, attrs=attrs, **kwargs)
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
