"""Record a Hugging Face ``transformers.Trainer`` run with a callback.

::

    from dimlapse.capture.integrations.huggingface import DimlapseCallback

    cb = DimlapseCallback("data/runs/gpt2.zarr", every=5, probe={"input_ids": ids})
    Trainer(model, args, train_dataset=ds, callbacks=[cb]).train()

What is recorded, step by step: the weights (every capture step), the probe activations, and
the trainer's own logged ``loss``, ``grad_norm`` and ``learning_rate`` (as ``loss``,
``grad_norm``, ``lr``). The trainer logs every ``logging_steps`` steps, and its ``loss`` is the
mean over the steps since the previous log: set ``logging_steps=1`` for a per-step series; the
steps in between are recorded with NaN scalars. The run is closed when training ends, and a
``trainer.train(resume_from_checkpoint=...)`` continues the run from the checkpoint's step.
Only the main process records (``state.is_world_process_zero``).

``transformers`` is imported here only; ``dimlapse.capture`` never needs it.
"""

from __future__ import annotations

from typing import Any

import torch

try:
    from transformers import TrainerCallback
except ImportError as e:  # an optional dependency: say which extra brings it
    raise ImportError(
        "dimlapse.capture.integrations.huggingface needs transformers and accelerate: "
        "pip install 'dimlapse[integrations]'"
    ) from e

from .._options import CaptureOptions, check_options
from .._recorder import Recorder
from .._schedule import Schedule
from ._common import as_float, open_recorder

_LOGGED = (("loss", "loss"), ("grad_norm", "grad_norm"), ("lr", "learning_rate"))


class DimlapseCallback(TrainerCallback):
    """A ``transformers.TrainerCallback`` that records the run with a dimlapse Recorder.

    Parameters
    ----------
    store : str, os.PathLike or zarr store
        Where the run goes (a path or fsspec URL).
    every : int or callable
        Capture interval in optimizer steps, or a schedule ``step -> bool``.
    probe : tensor, dict of tensors or tuple of tensors, optional
        Fixed probe batch, passed to the model as ``model(probe)``, ``model(**probe)`` or
        ``model(*probe)`` (e.g. ``{"input_ids": ..., "attention_mask": ...}``).
    probe_targets : torch.Tensor, optional
        Targets of the probe (stored with it).
    overwrite : bool
        Replace an existing run at ``store`` when training starts from step 0.
    attrs : dict, optional
        JSON values merged into the run's root attrs (beside ``integration``).
    options : CaptureOptions, optional
        Modules, parameters, mode, codec and the other Recorder options
        (:class:`dimlapse.capture.CaptureOptions`); ``total_steps`` defaults to the trainer's
        planned number of optimizer steps.

    Attributes
    ----------
    recorder : Recorder or None
        The open Recorder while training runs.
    """

    def __init__(
        self,
        store: Any,
        *,
        every: int | Schedule = 5,
        probe: Any = None,
        probe_targets: torch.Tensor | None = None,
        overwrite: bool = False,
        attrs: dict[str, Any] | None = None,
        options: CaptureOptions | None = None,
    ) -> None:
        self.store, self.every, self.probe = store, every, probe
        self.probe_targets, self.overwrite, self.attrs = probe_targets, overwrite, attrs
        self.options = check_options(options)
        self.recorder: Recorder | None = None
        self._pending: int | None = None  # a step whose scalars arrive with the next log

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any):
        if not state.is_world_process_zero:
            return
        if model is None:
            raise ValueError("Expected the Trainer to pass `model` to on_train_begin, got None")
        self.recorder = open_recorder(
            model,
            self.store,
            step=int(state.global_step),
            every=self.every,
            probe=self.probe,
            probe_targets=self.probe_targets,
            overwrite=self.overwrite,
            options=self.options,
            attrs=self.attrs,
            integration="transformers.Trainer",
            total_steps=state.max_steps,
        )

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any):
        if self.recorder is None:
            return
        self._flush_pending()
        if control.should_log:  # set by the trainer's flow callback, which runs first
            self._pending = int(state.global_step)
        else:
            self._record({})

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any):
        if self.recorder is None or self._pending is None or "loss" not in (logs or {}):
            return
        self._pending = None
        self._record(logs)

    def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any):
        if self.recorder is None:
            return
        self._flush_pending()
        self.recorder.close()
        self.recorder = None

    def _flush_pending(self) -> None:
        if self._pending is not None:  # a log that never came: record the step without scalars
            self._pending = None
            self._record({})

    def _record(self, logs: dict[str, Any]) -> None:
        assert self.recorder is not None  # callers check
        values = {ours: as_float(logs.get(theirs)) for ours, theirs in _LOGGED}
        loss = values.pop("loss")
        self.recorder.step(loss, **values)  # NaN where the trainer did not log
