"""Overhead of the trainer callbacks: the same trainer with and without ``DimlapseCallback``.

``dimlapse bench integrations [--steps 60 --blocks 4]`` trains, in
interleaved blocks (plain, recorded, plain, recorded, ...), the 2-layer GPT-2 byte-level LM
under ``transformers.Trainer`` and the zoo's CNN on MNIST-1D under ``lightning.Trainer``,
capturing every 5 steps with a fixed probe. Each block's step time is the mean wall time
between consecutive optimizer steps (after 5 warm-up steps), so trainer start-up, the
Recorder's construction (step 0) and its final flush are left out; they are printed apart.
Ratio = median over blocks of recorded / plain step time within a pair of blocks; the CPU
time of the training thread per step is printed too (what the callback itself costs that
thread, less sensitive to other load on the machine than wall time).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from dimlapse.capture.integrations import huggingface as hf_cb
from dimlapse.capture.integrations import lightning as pl_cb

from ..zoo import CNN, mnist1d, stdlib

WARMUP = 5


def _stamp() -> tuple[float, float]:
    return time.perf_counter(), time.thread_time()  # wall, and CPU of the training thread


def _step_time(stamps: list[tuple[float, float]]) -> tuple[float, float]:
    """Mean (wall, training-thread CPU) seconds per optimizer step after the warm-up."""
    (w0, c0), (w1, c1) = stamps[WARMUP], stamps[-1]
    n = len(stamps) - 1 - WARMUP  # the mean: capture steps (1 in 5) count in full
    return (w1 - w0) / n, (c1 - c0) / n


def _hf_block(steps: int, store: Path | None) -> tuple[tuple[float, float], float]:
    import transformers

    data = stdlib(context=64, n_train=2048, n_test=64)
    stamps: list[tuple[float, float]] = []

    class Stamp(transformers.TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            stamps.append(_stamp())

    class Windows(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(data.x_train)

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            return {"input_ids": data.x_train[i], "labels": data.x_train[i]}

    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=256, n_positions=64, n_embd=64, n_layer=2, n_head=4, bos_token_id=None,
        eos_token_id=None, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )  # fmt: skip
    callbacks: list[Any] = [Stamp()]
    if store is not None:
        callbacks.append(hf_cb.DimlapseCallback(store, every=5, probe=data.x_test))
    args = transformers.TrainingArguments(
        output_dir=tempfile.mkdtemp(), max_steps=steps, per_device_train_batch_size=32,
        logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True,
        seed=0, dataloader_num_workers=0,
    )  # fmt: skip
    trainer = transformers.Trainer(
        model=transformers.GPT2LMHeadModel(config),
        args=args,
        train_dataset=Windows(),
        callbacks=callbacks,
    )
    t0 = time.perf_counter()
    trainer.train()
    return _step_time(stamps), time.perf_counter() - t0


def _pl_block(steps: int, store: Path | None) -> tuple[tuple[float, float], float]:
    import lightning.pytorch as pl

    d = mnist1d(n_samples=2000, cache_dir=None)
    stamps: list[tuple[float, float]] = []

    class Stamp(pl.Callback):
        def on_train_batch_end(self, *a: Any, **kw: Any) -> None:
            stamps.append(_stamp())

    class Lit(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = CNN(1, 10, dim=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            return torch.nn.functional.cross_entropy(self(x), y)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.Adam(self.parameters(), lr=1e-3)

    callbacks: list[Any] = [Stamp()]
    if store is not None:
        callbacks.append(pl_cb.DimlapseCallback(store, every=5, probe=d.x_test[:256]))
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(d.x_train, d.y_train), batch_size=64, shuffle=True
    )
    torch.manual_seed(0)
    trainer = pl.Trainer(
        max_steps=steps, accelerator="cpu", devices=1, logger=False, callbacks=callbacks,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    t0 = time.perf_counter()
    trainer.fit(Lit(), loader)
    return _step_time(stamps), time.perf_counter() - t0


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``dimlapse bench integrations``."""
    p.add_argument("--steps", type=int, default=60, help="training steps per block")
    p.add_argument("--blocks", type=int, default=4, help="interleaved plain/callback blocks")
    p.add_argument("--threads", type=int, default=1, help="torch threads")


def main(args: argparse.Namespace) -> int:
    """Run both trainers with and without the callback; print one line each."""
    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp())
    for name, block in (
        ("transformers.Trainer, GPT-2 2x64", _hf_block),
        ("lightning, CNN", _pl_block),
    ):
        ratios, cpu_ratios, plain_ms, rec_ms, wall = [], [], [], [], []
        for i in range(args.blocks):
            (p_step, p_cpu), p_wall = block(args.steps, None)
            (r_step, r_cpu), r_wall = block(args.steps, tmp / f"{block.__name__}-{i}.zarr")
            ratios.append(r_step / p_step)
            cpu_ratios.append(r_cpu / p_cpu)
            plain_ms.append(1e3 * p_step)
            rec_ms.append(1e3 * r_step)
            wall.append(r_wall / p_wall)
        print(
            f"{name}: step {statistics.median(plain_ms):.1f} ms plain, "
            f"{statistics.median(rec_ms):.1f} ms with the callback; wall ratio per block "
            f"{', '.join(f'{r:.2f}' for r in ratios)} (median {statistics.median(ratios):.2f}x); "
            f"training-thread CPU ratio {statistics.median(cpu_ratios):.2f}x; whole train() "
            f"incl. start-up and final flush {statistics.median(wall):.2f}x"
        )
    return 0
