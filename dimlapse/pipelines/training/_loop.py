"""The train-and-capture loop behind ``make capture``.

Protocol per optimizer step (the study's, for the mlp default): a seeded mini-batch, cross-
entropy loss, backward, gradient norm (a tensor, no host sync), optimizer step, then
``rec.step(loss, grad_norm=..., lr=..., test_accuracy=...)``. ``test_accuracy`` is the
held-out accuracy, computed at capture steps only and NaN on every other step (one scalar key,
so ``scalars/test_accuracy`` is NaN except at capture steps).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..zoo import DEFAULT_CACHE, Dataset, Recipe, build_model, load_dataset

EVAL_CHUNK = 2048  # held-out evaluation batch size (bounds memory on large test splits)


class DataSizeError(ValueError):
    """A recipe asks for more examples (probe, batch) than its dataset holds."""


@dataclass
class RunResult:
    """What one capture run did: sizes, timings and final quality."""

    path: str
    steps: int
    snapshots: int
    bytes_raw: int
    bytes_stored: int
    compression_ratio: float
    seconds: float
    capture_seconds: float
    final_loss: float
    test_accuracy: float
    threads: int = 1
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def overhead(self) -> float:
        """Time in ``rec.step`` (and the final close) over the rest of the loop's time."""
        rest = self.seconds - self.capture_seconds
        return self.capture_seconds / rest if rest > 0 else math.nan

    def summary(self) -> str:
        """The one-line summary printed at the end of ``make capture``."""
        return (
            f"{self.path}: {self.steps} steps, {self.snapshots} snapshots, "
            f"{self.bytes_stored / 1e6:.1f} MB written ({self.bytes_raw / 1e6:.1f} MB raw, "
            f"compression {self.compression_ratio:.2f}x), capture overhead "
            f"{100 * self.overhead:.1f}% ({self.capture_seconds:.2f} s in the Recorder of "
            f"{self.seconds:.1f} s, its start-up and waits for the writer included; "
            "`dimlapse bench capture` isolates the per-step cost), "
            f"final loss {self.final_loss:.4f}, "
            f"held-out accuracy {self.test_accuracy:.3f}, {self.threads} torch thread(s) "
            f"(one core left for the capture writer)"
        )


def default_threads() -> int:
    """Torch intra-op threads by default: one fewer than the usable cores, so the Recorder's
    writer thread gets its own core (docs/storage-notes.md: sharing it made steps 4-5x slower)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores - 1)


def resolve_device(device: str) -> torch.device:
    """'auto' picks CUDA when available, else CPU; anything else must be a valid device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ValueError(
            f"Expected `device` to be 'auto', 'cpu' or 'cuda[:n]', got {device!r}"
        ) from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"`device` is {device!r} but CUDA is not available; use --device cpu")
    return dev


def make_optimizer(recipe: Recipe, params) -> torch.optim.Optimizer:
    """The recipe's optimiser over ``params``."""
    if recipe.optimizer == "adam":
        return torch.optim.Adam(
            params, lr=recipe.lr, betas=recipe.betas, weight_decay=recipe.weight_decay
        )
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(
            params, lr=recipe.lr, betas=recipe.betas, weight_decay=recipe.weight_decay
        )
    return torch.optim.SGD(params, lr=recipe.lr, momentum=0.9, weight_decay=recipe.weight_decay)


def batch_indices(step: int, *, n: int, batch_size: int, seed: int) -> torch.Tensor:
    """Indices of the mini-batch for optimizer step ``step`` (1-based).

    Epoch ``e`` is a permutation seeded by ``(seed, e)``; a partial last batch is dropped. A
    pure function of its arguments, so a resumed run sees the same batches.
    """
    per_epoch = n // batch_size
    epoch, i = divmod(step - 1, per_epoch)
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=g)
    return perm[i * batch_size : (i + 1) * batch_size]


def probe_indices(data: Dataset, *, size: int, seed: int) -> torch.Tensor:
    """A fixed, seeded choice of ``size`` held-out examples for the probe batch."""
    n = len(data.y_test)
    if size > n:
        raise DataSizeError(
            f"Expected `probe_size` <= the {n} held-out examples of {data.spec.name!r}, "
            f"got {size}; pass a smaller --probe-size"
        )
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:size].sort().values


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Accuracy of ``model`` on (x, y) in eval mode, as a 0-d tensor (no host sync)."""
    was_training = model.training
    model.eval()
    try:
        correct = torch.zeros((), device=y.device)
        for i in range(0, len(y), EVAL_CHUNK):
            pred = model(x[i : i + EVAL_CHUNK]).argmax(-1)
            correct += (pred == y[i : i + EVAL_CHUNK]).sum()
        return correct / y.numel()  # per token for language models
    finally:
        model.train(was_training)


#: ``train(capture_log=...)``: which of the Recorder's two log lines (start, close) are shown.
CAPTURE_LOGS = {"all": (True, True), "start": (True, False), "none": (False, False)}


@contextlib.contextmanager
def _capture_log(show: bool) -> Iterator[None]:
    """The ``dimlapse.capture`` logger at WARNING while not `show` (errors still show), then
    its own level again; a level the user set higher is never lowered."""
    logger = logging.getLogger("dimlapse.capture")
    before = logger.level
    if not show and logger.getEffectiveLevel() < logging.WARNING:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(before)


def train(
    recipe: Recipe,
    store: str | Path,
    *,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
    device: str = "cpu",
    threads: int | None = None,
    cache_dir: str | Path = DEFAULT_CACHE,
    intervention: Callable[..., tuple[torch.Tensor, torch.Tensor]] | None = None,
    capture_log: str = "all",
) -> RunResult:
    """Train ``recipe`` and capture it into ``store`` with a :class:`dimlapse.capture.Recorder`.

    Parameters
    ----------
    recipe
        What to train; saved in the store's ``config`` attr, the data spec in ``dataset``.
    store
        Run store path or fsspec URL.
    overwrite, resume
        Replace an existing store, or continue a crashed one from its last complete snapshot
        (the weights are restored from it; the optimizer state restarts).
    progress
        Show a tqdm bar (steps, loss, snapshots/s).
    device
        'cpu', 'cuda', or 'auto'.
    threads
        Torch intra-op threads; default :func:`default_threads` (cores - 1).
    cache_dir
        Dataset cache.
    intervention
        Optional ``f(step, model, optimizer, x, y) -> (x, y)`` called before each step's forward
        with its mini-batch; it may change the batch or the model/optimizer settings (the
        disrupted runs of ``make intervene``).
    capture_log
        Which of the Recorder's log lines to show: ``all`` (start and close), ``start`` (a
        caller that prints its own summary, like ``dimlapse capture``), ``none`` (workflows
        that train many runs and report them their way). Warnings and errors always show.

    Returns
    -------
    RunResult
    """
    from tqdm.auto import tqdm

    from dimlapse.capture import Recorder

    from ._resume import last_snapshot

    if capture_log not in CAPTURE_LOGS:
        raise ValueError(
            f"Expected `capture_log` to be one of {', '.join(CAPTURE_LOGS)}, got {capture_log!r}"
        )
    show_start, show_close = CAPTURE_LOGS[capture_log]
    threads = threads if threads is not None else default_threads()
    torch.set_num_threads(threads)
    dev = resolve_device(device)
    data = load_dataset(recipe.data, cache_dir=cache_dir)
    if recipe.batch_size > len(data.y_train):
        raise DataSizeError(
            f"Expected `batch_size` <= the {len(data.y_train)} training examples, "
            f"got {recipe.batch_size}; pass a smaller --batch-size"
        )
    torch.manual_seed(recipe.seed)
    model = build_model(recipe.model, data.spec).to(dev)
    start = 0
    if resume:
        start = last_snapshot(store, model)
    opt = make_optimizer(recipe, model.parameters())
    x_train, y_train = data.x_train.to(dev), data.y_train.to(dev)
    x_test, y_test = data.x_test.to(dev), data.y_test.to(dev)
    idx = probe_indices(data, size=recipe.probe_size, seed=recipe.seed)
    attrs = {"config": recipe.to_dict(), "dataset": data.spec.to_dict(), "seed": recipe.seed}
    loss_fn = nn.CrossEntropyLoss()
    nan = torch.full((), math.nan, device=dev)

    t_start = time.perf_counter()
    capture_s, snapshots, loss = 0.0, 0, torch.zeros(())
    t0 = time.perf_counter()
    with _capture_log(show_start):
        rec = Recorder(
            model,
            str(store),
            every=recipe.every,
            probe=x_test[idx],
            probe_targets=y_test[idx],
            options=recipe.capture_options(),
            overwrite=overwrite,
            resume=resume,
            start_step=start if resume else None,
            attrs=attrs,
        )
    capture_s += time.perf_counter() - t0
    bar = tqdm(total=recipe.steps, initial=start, disable=not progress, unit="step", leave=False)
    try:
        with _capture_log(show_close), rec:  # entered first, left last: covers the close
            model.train()
            for step in range(start + 1, recipe.steps + 1):
                b = batch_indices(
                    step, n=len(y_train), batch_size=recipe.batch_size, seed=recipe.seed
                ).to(dev)
                xb, yb = x_train[b], y_train[b]
                if intervention is not None:
                    xb, yb = intervention(step, model, opt, xb, yb)
                logits = model(xb)  # (batch, classes); language models: (batch, T, vocab)
                loss = loss_fn(logits.flatten(0, -2), yb.flatten())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                grads = [p.grad for p in model.parameters() if p.grad is not None]
                grad_norm = torch.nn.utils.get_total_norm(grads)  # tensor: no host sync
                opt.step()
                capture_step = step % recipe.every == 0
                acc = accuracy(model, x_test, y_test) if capture_step else nan
                t0 = time.perf_counter()
                captured = rec.step(
                    loss.detach(),
                    grad_norm=grad_norm,
                    lr=opt.param_groups[0]["lr"],
                    test_accuracy=acc,
                )
                capture_s += time.perf_counter() - t0
                snapshots += bool(captured)
                bar.update(1)
                if progress and (step % 50 == 0 or step == recipe.steps):
                    elapsed = time.perf_counter() - t_start
                    bar.set_postfix(
                        loss=f"{loss.item():.4f}",  # host sync, only every 50 steps
                        snaps_per_s=f"{snapshots / elapsed:.1f}",
                        refresh=False,
                    )
            t0 = time.perf_counter()
        capture_s += time.perf_counter() - t0  # the final flush in close()
    finally:
        bar.close()
    seconds = time.perf_counter() - t_start
    stats = dict(rec.stats)
    return RunResult(
        path=str(store),
        steps=recipe.steps - start,
        snapshots=int(stats.get("snapshots") or snapshots),
        bytes_raw=int(stats.get("bytes_raw") or 0),
        bytes_stored=int(stats.get("bytes_stored") or 0),
        compression_ratio=float(stats.get("compression_ratio") or math.nan),
        seconds=seconds,
        capture_seconds=capture_s,
        final_loss=float(loss.detach()),
        test_accuracy=float(accuracy(model, x_test, y_test)),
        threads=threads,
        stats=stats,
    )
