"""Record a Lightning ``Trainer`` run with a callback.

::

    from dimlapse.capture.integrations.lightning import DimlapseCallback

    cb = DimlapseCallback("data/runs/cnn.zarr", every=5, probe=x_probe)
    lightning.Trainer(max_steps=2000, callbacks=[cb]).fit(module, loader)

Per optimizer step it records the loss the module's ``training_step`` returned, the gradient
norm just before the optimizer step (after gradient accumulation and AMP unscaling, before
clipping; a tensor, so no host sync) and the learning rate of the first parameter group used
for that step. The recorded model is the ``LightningModule`` itself (its ``forward`` takes the
probe). The run is closed with ``complete`` when fitting ends and ``crashed`` on an exception;
``trainer.fit(..., ckpt_path=...)`` continues the run from the checkpoint's step. Only global
rank 0 records.

``lightning`` is imported here only; ``dimlapse.capture`` never needs it.
"""

from __future__ import annotations

import math
from typing import Any

import torch

try:
    import lightning.pytorch as pl
except ImportError as e:  # an optional dependency: say which extra brings it
    raise ImportError(
        "dimlapse.capture.integrations.lightning needs lightning: "
        "pip install 'dimlapse[integrations]'"
    ) from e

from .._options import CaptureOptions, check_options
from .._recorder import Recorder
from .._schedule import Schedule
from ._common import as_float, open_recorder


class DimlapseCallback(pl.Callback):
    """A ``lightning.pytorch.Callback`` that records the run with a dimlapse Recorder.

    Parameters
    ----------
    store : str, os.PathLike or zarr store
        Where the run goes (a path or fsspec URL).
    every : int or callable
        Capture interval in optimizer steps, or a schedule ``step -> bool``.
    probe : tensor, dict of tensors or tuple of tensors, optional
        Fixed probe batch for the module's ``forward``.
    probe_targets : torch.Tensor, optional
        Targets of the probe (stored with it).
    overwrite : bool
        Replace an existing run at ``store`` when fitting starts from step 0.
    attrs : dict, optional
        JSON values merged into the run's root attrs (beside ``integration``).
    options : CaptureOptions, optional
        Modules, parameters, mode, codec and the other Recorder options
        (:class:`dimlapse.capture.CaptureOptions`); ``total_steps`` defaults to the trainer's
        planned number of optimizer steps.
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
        self._last_step = 0
        self._grad_norm: Any = math.nan
        self._lr = math.nan

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_rank != 0:
            return
        self._last_step = int(trainer.global_step)  # restored from a checkpoint, or 0
        self.recorder = open_recorder(
            pl_module,
            self.store,
            step=self._last_step,
            every=self.every,
            probe=self.probe,
            probe_targets=self.probe_targets,
            overwrite=self.overwrite,
            options=self.options,
            attrs=self.attrs,
            integration="lightning.Trainer",
            total_steps=trainer.max_steps if trainer.max_steps > 0 else None,
        )

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any
    ) -> None:
        if self.recorder is None:
            return
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        self._grad_norm = torch.nn.utils.get_total_norm(grads) if grads else math.nan
        self._lr = float(optimizer.param_groups[0]["lr"])

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if self.recorder is None or trainer.global_step == self._last_step:
            return  # no optimizer step in this batch (gradient accumulation)
        self._last_step = int(trainer.global_step)
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        loss = loss.detach() if isinstance(loss, torch.Tensor) else as_float(loss)
        self.recorder.step(loss, grad_norm=self._grad_norm, lr=self._lr)
        self._grad_norm, self._lr = math.nan, math.nan

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close("complete")

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._close("crashed")

    def _close(self, status: str) -> None:
        if self.recorder is not None:
            recorder, self.recorder = self.recorder, None
            recorder.close(status=status)
