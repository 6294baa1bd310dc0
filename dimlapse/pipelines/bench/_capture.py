"""``dimlapse bench capture`` (``make bench-capture``): what capture costs, measured side by
side in one process.

The study's MLP (784-256-128-10, Adam lr 1e-3, batch 64) on the digits data (upsampled to
28x28), on CPU with one torch thread, capturing every 5 steps. Arms run interleaved in
blocks, each with its own identically initialised model, so slow drift of the machine hits
every arm alike:

- ``plain``: training only;
- ``full``, ``weights``, ``spectra``: a Recorder in each capture mode (every weight; the three
  Linear layers' activations on a fixed 512-example held-out probe in full and spectra mode);
- ``weights@1``: weights-only capture at *every* step (0.94 MB per step through the ring);
- ``ndtracker``: ``ndt.HighFrequencyTracker`` every 5 steps on the same layers (if installed);
- ``floor``: plain training while a separate process does nothing but the probe forward once
  per capture step: what any off-thread probe forward costs this machine;
- ``spectra-floor``: the same with the spectra's Gram + eigvalsh of the six matrices added;
- ``busy-process``: plain training beside a separate process multiplying matrices with one
  BLAS thread: the machine's own contention between cores, apart from any GIL.

Reported per arm: the ratio to plain training (median over blocks of the arm's mean step time
over plain's in the same block; the mean includes capture steps, so this is the wall-time
cost), the p99 step time, the training-thread milliseconds per capture, the writer's CPU
milliseconds per snapshot and the stored bytes per snapshot. Then the per-MB table
(``_capture_mb``: capture CPU per MB of weights-only snapshot, all processes, marginal over
snapshots, per codec, via zarr's pipeline and against a copy+CRC+write floor), a feed table (CPU per
snapshot with no training, all processes, start-up excluded), a codec table (ratio and writer
CPU per snapshot on real training) and a large-model table (~30M parameters: peak RSS and
bytes per snapshot per mode).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..cli import CLIError
from ..zoo import MLP, digits
from ._capture_mb import PER_MB_CODECS, format_per_mb, per_mb_table

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
    mode: str = "full",
    codec: str | None = None,
) -> Any:
    from dimlapse.capture import CaptureOptions, Recorder

    options = CaptureOptions(mode=mode, codec=codec)
    return Recorder(trainer.model, store, every=every, probe=probe, options=options)


MODES = ("full", "weights", "spectra")
EVERY_STEP = "weights@1"  # weights-only capture at every step


def feed_cpu(
    x: torch.Tensor, probe: torch.Tensor, *, steps: int, every: int, root: Path
) -> dict[str, dict[str, float]]:
    """CPU per snapshot of each mode, all processes, with no training: ``steps`` calls of
    ``rec.step()`` (training-thread CPU) plus the writer's CPU, start-up excluded."""
    out = {}
    narrow = (x.flatten(1)[:, :40].contiguous(), probe.flatten(1)[:, :40].contiguous())
    runs = [(m, m, x, probe) for m in MODES] + [("weights 40-in", "weights", *narrow)]
    for label, mode, xs, pr in runs:
        trainer = _Trainer(xs, xs.new_zeros(len(xs), dtype=torch.long), seed=0)
        rec = _recorder(trainer, str(root / f"feed-{label}.zarr".replace(" ", "-")), pr,
                        every=every, mode=mode)  # fmt: skip
        t0 = time.thread_time()
        for _ in range(steps):
            rec.step(0.5)
        train_cpu = time.thread_time() - t0
        rec.close()
        s = rec.stats
        n = max(1, s["snapshots"])
        out[label] = {
            "snapshots": s["snapshots"],
            "train_ms": 1e3 * train_cpu / n,
            "writer_ms": 1e3 * (s["writer_cpu_seconds"] or 0.0) / n,
            "total_ms": 1e3 * (train_cpu + (s["writer_cpu_seconds"] or 0.0)) / n,
        }
    return out


def codec_table(
    x: torch.Tensor,
    y: torch.Tensor,
    probe: torch.Tensor,
    *,
    codecs: list[str],
    steps: int,
    every: int,
    root: Path,
) -> dict[str, dict[str, float]]:
    """Bytes per snapshot, compression ratio and writer CPU per snapshot per codec, on
    identical full-mode training runs."""
    out = {}
    for codec in codecs:
        trainer = _Trainer(x, y, seed=0)
        with _recorder(
            trainer, str(root / f"codec-{codec}.zarr"), probe, every=every, codec=codec
        ) as rec:
            for _ in range(steps):
                rec.step(trainer.step())
        s = rec.stats
        n = max(1, s["snapshots"])  # codec_steps = 315: 64 snapshots, one whole chunk
        out[codec] = {
            "snapshots": s["snapshots"],
            "bytes_per_snapshot": s["bytes_stored"] / n,
            "raw_bytes_per_snapshot": s["bytes_raw"] / n,
            "compression_ratio": s["bytes_raw"] / s["bytes_stored"],
            "writer_ms": 1e3 * s["writer_cpu_seconds"] / n,
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
    codecs: tuple[str, ...] = ("none", "lz4", "zstd", "blosc-zstd", "bitround-10", "float16"),
    codec_steps: int = 315,
    feed_steps: int = 2000,
    large: bool = True,
    per_mb_codecs: tuple[str, ...] = PER_MB_CODECS,
    root: str | Path | None = None,
) -> dict[str, Any]:
    """Measure capture overhead on the study's MLP; see the module docstring."""
    from ._procs import BusyProcess, Floor, large_model

    torch.set_num_threads(1)  # one torch thread: the writer process gets the other core
    data = digits()
    x, y = data.x_train, data.y_train
    probe = data.x_test[
        torch.randperm(len(data.y_test), generator=torch.Generator().manual_seed(0))[:probe_size]
    ]
    with tempfile.TemporaryDirectory(prefix="dimlapse-bench-") as tmp:
        base = Path(root) if root is not None else Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        names = ("plain", *MODES, EVERY_STEP, "floor", "spectra-floor", "busy-process")
        trainers = {name: _Trainer(x, y, seed=0) for name in names}
        recs = {
            m: _recorder(trainers[m], str(base / f"bench-{m}.zarr"), probe, every=every, mode=m)
            for m in MODES
        }
        recs[EVERY_STEP] = _recorder(trainers[EVERY_STEP], str(base / "bench-every-step.zarr"),
                                     probe, every=1, mode="weights")  # fmt: skip
        floors = {
            "floor": Floor(trainers["floor"].model, probe, eigen=False),
            "spectra-floor": Floor(trainers["spectra-floor"].model, probe, eigen=True),
        }
        busy = BusyProcess()

        def plain_step() -> None:
            busy.on.clear()
            trainers["plain"].step()

        arms: dict[str, StepFn] = {"plain": plain_step}
        for mode in recs:

            def mode_step(t: _Trainer = trainers[mode], rec: Any = recs[mode]) -> None:
                busy.on.clear()
                rec.step(t.step())

            arms[mode] = mode_step
        for name, floor in floors.items():

            def floor_step(t: _Trainer = trainers[name], f: Floor = floor) -> None:
                busy.on.clear()
                t.step()
                if t.n % every == 0:
                    f.poke()

            arms[name] = floor_step

        def busy_step() -> None:
            busy.on.set()
            trainers["busy-process"].step()

        arms["busy-process"] = busy_step
        tracker = None
        if ndtracker:
            try:
                from ndt import HighFrequencyTracker
            except ImportError:
                ndtracker = False
            else:
                t = trainers["ndtracker"] = _Trainer(x, y, seed=0)
                net = t.model
                tracker = HighFrequencyTracker(
                    net,
                    layers=[net.fc1, net.fc2, net.fc3],
                    layer_names=["fc1", "fc2", "fc3"],
                    sampling_frequency=every,
                )

                def ndt_step() -> None:
                    busy.on.clear()
                    loss = t.step()
                    tracker.log(t.n, loss.item())  # its documented usage: a float loss

                arms["ndtracker"] = ndt_step
        interleave(arms, blocks=1, steps=warmup)
        times = interleave(arms, blocks=blocks, steps=steps)
        busy.close()
        for floor in floors.values():
            floor.close()
        close_s = {}
        for m, rec in recs.items():
            t0 = time.perf_counter()
            rec.close()
            close_s[m] = time.perf_counter() - t0
        if tracker is not None:
            tracker.close()
        replay_s = _time_replay(str(base / "bench-weights.zarr"), x[0].numel())
        summary = summarise(times)
        for m, rec in recs.items():
            s = rec.stats
            n = max(1, s["snapshots"])
            summary[m].update(
                train_ms_per_capture=1e3 * s["train_thread_capture_seconds"] / n,
                writer_ms_per_snapshot=1e3 * (s["writer_cpu_seconds"] or 0.0) / n,
                bytes_per_snapshot=(s["bytes_stored"] or 0) / n,
                snapshots=s["snapshots"],
                dropped=s["dropped"],
                close_s=close_s[m],
                writer=s["writer"],
            )
        feed = feed_cpu(x, probe, steps=feed_steps, every=every, root=base)
        mb = per_mb_table(x, codecs=per_mb_codecs, root=base) if per_mb_codecs else None
        sizes = codec_table(
            x, y, probe, codecs=list(codecs), steps=codec_steps, every=every, root=base
        )
    return {
        "arms": summary,
        "feed": feed,
        "per_mb": mb,
        "codecs": sizes,
        "large": large_model() if large else None,
        "replay": {"seconds": replay_s, "snapshots": recs["weights"].stats["snapshots"]},
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
        f"{'arm':<14} {'ratio':>7} {'p99 ms':>8} {'train ms/capture':>17} "
        f"{'writer CPU ms/snap':>19} {'bytes/snap':>11}",
    ]
    for name, a in result["arms"].items():
        extra = (
            f"{a['train_ms_per_capture']:>17.3f} {a['writer_ms_per_snapshot']:>19.2f} "
            f"{a['bytes_per_snapshot']:>11,.0f}"
            if "train_ms_per_capture" in a
            else f"{'':>17} {'':>19} {'':>11}"
        )
        lines.append(f"{name:<14} {a['ratio']:>6.3f}x {a['p99_ms']:>8.2f} {extra}")
    lines.append(
        "ratio = median over blocks of (the arm's mean step time / plain's in the same block); "
        "floor = a separate process doing only the probe forward per capture (spectra-floor: "
        "plus the spectra); busy-process = a separate one-BLAS-thread process, always busy; "
        f"{EVERY_STEP} = weights-only capture at every step"
    )
    writers = {a.get("writer") for a in result["arms"].values() if a.get("writer")}
    lines.append(f"writer: {', '.join(sorted(writers))}")
    lines.append("")
    lines.append("CPU per snapshot with no training (all processes, start-up excluded):")
    lines.append(f"{'mode':<14} {'train thread ms':>16} {'writer ms':>10} {'total ms':>9}")
    for mode, f in result["feed"].items():
        lines.append(
            f"{mode:<14} {f['train_ms']:>16.3f} {f['writer_ms']:>10.3f} {f['total_ms']:>9.3f}"
        )
    lines.append("(weights 40-in: the 40-256-128-10 MLP of the default mnist1d recipe, 178 KB)")
    if result.get("per_mb"):
        lines.append("")
        lines.extend(format_per_mb(result["per_mb"]))
    r = result["replay"]
    lines.append(
        f"weights mode: activations replayed afterwards for {r['snapshots']} snapshots in "
        f"{r['seconds']:.2f} s ({1e3 * r['seconds'] / max(1, r['snapshots']):.1f} ms/snapshot)"
    )
    lines.append("")
    lines.append(
        f"{'codec':<12} {'bytes/snapshot':>15} {'raw bytes':>12} {'compression':>12} "
        f"{'writer CPU ms/snap':>19}"
    )
    for codec, z in result["codecs"].items():
        lines.append(
            f"{codec:<12} {z['bytes_per_snapshot']:>15,.0f} {z['raw_bytes_per_snapshot']:>12,.0f} "
            f"{z['compression_ratio']:>11.2f}x {z['writer_ms']:>19.2f}"
        )
    large = result.get("large")
    if large:
        lines.append("")
        lines.append(
            f"large model: MLP {large['widths']} ({large['model_mb']:.0f} MB of float32), SGD, "
            f"batch 8, {large['steps']} steps, every {large['every']}"
        )
        lines.append(
            f"{'mode':<9} {'s/step':>7} {'trainer peak RSS MB':>20} {'writer peak RSS MB':>19} "
            f"{'bytes per capture step':>23}"
        )
        for mode, m in large["modes"].items():
            st, g = m["stats"], m.get("groups", {})
            n = max(1, (st or {}).get("snapshots") or 1)
            # spectra mode: the per-step spectra (its full snapshot at step 0 is sparse)
            per = g.get("spectra", 0) / n if mode == "spectra" else sum(g.values()) / n
            lines.append(
                f"{mode:<9} {m['train_s'] / large['steps']:>7.3f} {m['rss_self_mb']:>20.0f} "
                f"{m['rss_children_mb']:>19.0f} {per:>23,.0f}"
            )
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``bench-capture``."""
    p.add_argument("--blocks", type=int, default=10, help="interleaved blocks (default 10)")
    p.add_argument("--steps", type=int, default=200, help="steps per arm per block (default 200)")
    p.add_argument("--warmup", type=int, default=50, help="untimed steps per arm first")
    p.add_argument("--every", type=int, default=5)
    p.add_argument("--probe-size", type=int, default=512)
    p.add_argument(
        "--codec-steps", type=int, default=315, help="steps per codec run (315: one whole chunk)"
    )
    p.add_argument("--feed-steps", type=int, default=2000, help="rec.step() calls per feed run")
    p.add_argument("--no-ndtracker", action="store_true", help="skip the ndtracker arm")
    p.add_argument("--no-large", action="store_true", help="skip the ~30M-parameter arm")
    p.add_argument("--no-per-mb", action="store_true", help="skip the CPU-per-MB table")
    p.add_argument("--json", help="also write the results as JSON to this path (default: none)")


def main(args: argparse.Namespace) -> int:
    """Run the benchmark from parsed arguments and print the report."""
    # dozens of Recorders start and close here: their two log lines each would bury the report
    logging.getLogger("dimlapse.capture").setLevel(logging.WARNING)
    for name in ("blocks", "steps", "every", "probe_size", "codec_steps", "feed_steps"):
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
        feed_steps=args.feed_steps,
        large=not args.no_large,
        per_mb_codecs=() if args.no_per_mb else PER_MB_CODECS,
    )
    print(format_report(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    return 0
