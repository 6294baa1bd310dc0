"""``make bench-capture``: what capture costs, measured side by side in one process.

The study's MLP (784-256-128-10, Adam lr 1e-3, batch 64) on the digits data (upsampled to
28x28), on CPU with one torch thread. Arms run interleaved in blocks, each arm with its own
identically initialised model, so slow drift of the machine hits every arm alike:

- ``plain``: training only;
- ``dimlapse``: a Recorder every 5 steps with every weight and the three Linear layers'
  activations on a fixed 512-example held-out probe;
- ``weights``: a Recorder every 5 steps with every weight and no probe forward during training;
  the same activations are then materialised by ``replay`` from the stored weights (timed);
- ``ndtracker``: ``ndt.HighFrequencyTracker`` every 5 steps on the same layers (when importable);
- ``busy-core``: plain training while a background thread multiplies matrices nonstop: not a
  capture method but a calibration of the machine, showing what any concurrent work on the
  other core costs the training thread (on shared 2-vCPU VMs this alone can be 1.5x).

Reported per arm: median and mean step time, and the ratio to plain training as the median
over blocks of (arm's mean step time / plain's mean step time in the same block); the mean
includes the capture steps, so this ratio is the wall-time cost. Then bytes per snapshot and
the compression ratio of the lossless and lossy codecs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._cli import CLIError
from ._data import digits
from ._models import MLP

StepFn = Callable[[], None]


def interleave(
    arms: dict[str, StepFn],
    *,
    blocks: int,
    steps: int,
    sync: Callable[[], None] = lambda: None,
) -> dict[str, list[list[float]]]:
    """Run every arm ``steps`` steps per block for ``blocks`` blocks, rotating the order.

    Returns per arm a list (one per block) of per-step seconds. ``sync`` is called before each
    clock read at block edges (e.g. ``torch.cuda.synchronize``); per-step times are only
    meaningful on CPU, where the work is synchronous.
    """
    names = list(arms)
    times: dict[str, list[list[float]]] = {n: [] for n in names}
    for b in range(blocks):
        order = names[b % len(names) :] + names[: b % len(names)]
        for name in order:
            fn, block = arms[name], []
            sync()
            for _ in range(steps):
                t0 = time.perf_counter()
                fn()
                block.append(time.perf_counter() - t0)
            sync()
            times[name].append(block)
    return times


def summarise(times: dict[str, list[list[float]]], *, baseline: str = "plain") -> dict[str, Any]:
    """Median / mean step time per arm and the block-paired ratio to ``baseline``."""
    out: dict[str, Any] = {}
    base = [statistics.fmean(b) for b in times[baseline]]
    for name, blocks in times.items():
        flat = [t for b in blocks for t in b]
        means = [statistics.fmean(b) for b in blocks]
        out[name] = {
            "median_ms": 1e3 * statistics.median(flat),
            "mean_ms": 1e3 * statistics.fmean(flat),
            "p99_ms": 1e3 * sorted(flat)[min(len(flat) - 1, int(0.99 * len(flat)))],
            "ratio": statistics.median(m / p for m, p in zip(means, base, strict=True)),
            "ratio_of_medians": statistics.median(flat)
            / statistics.median(t for b in times[baseline] for t in b),
        }
    return out


class _Trainer:
    """One arm's model, optimiser and seeded batch stream; ``step()`` returns the loss."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, *, seed: int, batch: int = 64):
        torch.manual_seed(seed)
        self.model = MLP(x[0].numel(), 10)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.x, self.y, self.batch = x, y, batch
        self.gen = torch.Generator().manual_seed(seed)
        self.loss_fn = nn.CrossEntropyLoss()
        self.n = 0

    def step(self) -> torch.Tensor:
        b = torch.randint(len(self.y), (self.batch,), generator=self.gen)
        loss = self.loss_fn(self.model(self.x[b]), self.y[b])
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.n += 1
        return loss.detach()


def _recorder(
    trainer: _Trainer,
    store: str,
    probe: torch.Tensor,
    *,
    every: int,
    codec: str,
    activations: bool = True,
):
    from dimlapse.capture import Recorder

    return Recorder(
        trainer.model, store, every=every, probe=probe, codec=codec, activations=activations
    )


class _BusyCore:
    """A background thread that multiplies matrices (GIL released) while ``on`` is set."""

    def __init__(self) -> None:
        self.on, self.stop = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._run, name="bench-busy-core", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        a = torch.rand(384, 384)
        while not self.stop.is_set():
            if self.on.wait(timeout=0.05):
                a @ a

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


def codec_sizes(
    x: torch.Tensor,
    y: torch.Tensor,
    probe: torch.Tensor,
    *,
    codecs: list[str],
    steps: int,
    every: int,
    root: Path,
) -> dict[str, dict[str, float]]:
    """Bytes per snapshot and compression ratio per codec, on identical training runs."""
    out = {}
    for codec in codecs:
        trainer = _Trainer(x, y, seed=0)
        with _recorder(
            trainer, str(root / f"codec-{codec}.zarr"), probe, every=every, codec=codec
        ) as rec:
            for _ in range(steps):
                rec.step(trainer.step())
        s = rec.stats
        out[codec] = {
            "snapshots": s["snapshots"],
            "bytes_per_snapshot": s["bytes_stored"] / max(1, s["snapshots"]),
            "raw_bytes_per_snapshot": s["bytes_raw"] / max(1, s["snapshots"]),
            "compression_ratio": s["compression_ratio"],
        }
    return out


def run_benchmark(
    *,
    blocks: int = 10,
    steps: int = 200,
    warmup: int = 50,
    every: int = 5,
    probe_size: int = 512,
    ndtracker: bool = True,
    codecs: tuple[str, ...] = ("zstd", "float16", "bitround-10"),
    codec_steps: int = 200,
    root: str | Path | None = None,
) -> dict[str, Any]:
    """Measure capture overhead on the study's MLP; see the module docstring.

    Returns
    -------
    dict
        ``{"arms": {name: {median_ms, mean_ms, ratio, ratio_of_medians}}, "codecs": {...},
        "config": {...}, "recorder_stats": {...}, "close_seconds": float}``
    """
    torch.set_num_threads(1)  # one torch thread: the writer thread gets the other core
    data = digits()
    x, y = data.x_train, data.y_train
    probe = data.x_test[
        torch.randperm(len(data.y_test), generator=torch.Generator().manual_seed(0))[:probe_size]
    ]
    with tempfile.TemporaryDirectory(prefix="dimlapse-bench-") as tmp:
        base = Path(root) if root is not None else Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        trainers = {name: _Trainer(x, y, seed=0) for name in ("plain", "dimlapse", "weights")}
        rec = _recorder(
            trainers["dimlapse"], str(base / "bench.zarr"), probe, every=every, codec="zstd"
        )
        rec_w = _recorder(
            trainers["weights"],
            str(base / "bench-weights.zarr"),
            probe,
            every=every,
            codec="zstd",
            activations=False,
        )
        busy = _BusyCore()
        trainers["busy-core"] = _Trainer(x, y, seed=0)

        def plain_step() -> None:
            busy.on.clear()
            trainers["plain"].step()

        def dimlapse_step() -> None:
            busy.on.clear()
            rec.step(trainers["dimlapse"].step())

        def weights_step() -> None:
            busy.on.clear()
            rec_w.step(trainers["weights"].step())

        def busy_step() -> None:
            busy.on.set()
            trainers["busy-core"].step()

        arms: dict[str, StepFn] = {
            "plain": plain_step,
            "dimlapse": dimlapse_step,
            "weights": weights_step,
        }
        tracker = None
        if ndtracker:
            try:
                from ndt import HighFrequencyTracker
            except ImportError:
                ndtracker = False
            else:
                t = trainers["ndtracker"] = _Trainer(x, y, seed=0)
                m = t.model
                tracker = HighFrequencyTracker(
                    m,
                    layers=[m.fc1, m.fc2, m.fc3],
                    layer_names=["fc1", "fc2", "fc3"],
                    sampling_frequency=every,
                )

                def ndt_step() -> None:
                    busy.on.clear()
                    loss = t.step()
                    tracker.log(t.n, loss.item())  # its documented usage: a float loss

                arms["ndtracker"] = ndt_step
        arms["busy-core"] = busy_step
        interleave(arms, blocks=1, steps=warmup)
        times = interleave(arms, blocks=blocks, steps=steps)
        busy.close()
        t0 = time.perf_counter()
        rec.close()
        close_s = time.perf_counter() - t0
        rec_w.close()
        replay_s = _time_replay(str(base / "bench-weights.zarr"), x[0].numel())
        if tracker is not None:
            tracker.close()
        sizes = codec_sizes(
            x, y, probe, codecs=list(codecs), steps=codec_steps, every=every, root=base
        )
        stats = dict(rec.stats)
    return {
        "arms": summarise(times),
        "codecs": sizes,
        "recorder_stats": stats,
        "close_seconds": close_s,
        "replay": {"seconds": replay_s, "snapshots": rec_w.stats["snapshots"]},
        "config": {
            "model": "mlp 784-256-128-10",
            "data": "digits 28x28",
            "batch": 64,
            "every": every,
            "probe": probe_size,
            "blocks": blocks,
            "steps_per_block": steps,
            "warmup": warmup,
            "torch_threads": 1,
            "ndtracker": ndtracker,
        },
    }


def _time_replay(store: str, n_inputs: int) -> float:
    """Seconds to materialise a weights-only run's activations with ``replay``."""
    from dimlapse.capture import replay

    t0 = time.perf_counter()
    replay(store, MLP(n_inputs, 10))
    return time.perf_counter() - t0


def format_report(result: dict[str, Any]) -> str:
    """The printed tables."""
    c = result["config"]
    lines = [
        f"capture overhead: {c['model']} on {c['data']}, batch {c['batch']}, every {c['every']}, "
        f"probe {c['probe']}, {c['blocks']} interleaved blocks x {c['steps_per_block']} steps, "
        f"{c['torch_threads']} torch thread",
        f"{'arm':<10} {'median ms':>10} {'mean ms':>9} {'p99 ms':>8} {'ratio':>7} "
        f"{'ratio of medians':>17}",
    ]
    for name, a in result["arms"].items():
        lines.append(
            f"{name:<10} {a['median_ms']:>10.3f} {a['mean_ms']:>9.3f} {a['p99_ms']:>8.2f} "
            f"{a['ratio']:>6.3f}x "
            f"{a['ratio_of_medians']:>16.3f}x"
        )
    s = result["recorder_stats"]
    n_steps = c["blocks"] * c["steps_per_block"] + c["warmup"]
    lines.append(
        "ratio = median over blocks of (the arm's mean step time / plain's in the same block)"
    )
    lines.append(
        f"dimlapse: {1e3 * s['train_thread_capture_seconds'] / n_steps:.3f} ms/step inside "
        f"rec.step on the training thread ({s['queue_wait_seconds']:.2f} s of it waiting on a "
        f"full queue), final flush at close {result['close_seconds']:.2f} s, "
        f"{s.get('snapshots')} snapshots, {s.get('dropped', 0)} dropped"
    )
    r = result["replay"]
    lines.append(
        f"weights: activations replayed afterwards for {r['snapshots']} snapshots in "
        f"{r['seconds']:.2f} s ({1e3 * r['seconds'] / max(1, r['snapshots']):.1f} ms/snapshot)"
    )
    lines.append(
        "busy-core: plain training beside a matrix-multiplying thread, the machine's cost of "
        "any concurrent work"
    )
    lines.append(f"{'codec':<12} {'bytes/snapshot':>15} {'raw bytes':>12} {'compression':>12}")
    for codec, z in result["codecs"].items():
        lines.append(
            f"{codec:<12} {z['bytes_per_snapshot']:>15,.0f} {z['raw_bytes_per_snapshot']:>12,.0f} "
            f"{z['compression_ratio']:>11.2f}x"
        )
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``bench-capture``."""
    p.add_argument("--blocks", type=int, default=10, help="interleaved blocks (default 10)")
    p.add_argument("--steps", type=int, default=200, help="steps per arm per block (default 200)")
    p.add_argument("--warmup", type=int, default=50, help="untimed steps per arm first")
    p.add_argument("--every", type=int, default=5)
    p.add_argument("--probe-size", type=int, default=512)
    p.add_argument("--codec-steps", type=int, default=200, help="steps per codec size run")
    p.add_argument("--no-ndtracker", action="store_true", help="skip the ndtracker arm")
    p.add_argument("--json", help="also write the results as JSON to this path")


def main(args: argparse.Namespace) -> int:
    """Run the benchmark from parsed arguments and print the report."""
    for name in ("blocks", "steps", "every", "probe_size", "codec_steps"):
        value = getattr(args, name)
        if value < 1:
            raise CLIError(f"Expected `--{name.replace('_', '-')}` >= 1, got {value!r}")
    if args.warmup < 0:
        raise CLIError(f"Expected `--warmup` >= 0, got {args.warmup!r}")
    result = run_benchmark(
        blocks=args.blocks,
        steps=args.steps,
        warmup=args.warmup,
        every=args.every,
        probe_size=args.probe_size,
        ndtracker=not args.no_ndtracker,
        codec_steps=args.codec_steps,
    )
    print(format_report(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    return 0
