"""GPU capture benchmark: ResNet-18 and a small ViT, batch 128, capture every 5, 512 probe.

Run on a machine with a CUDA device::

    dimlapse bench gpu                                  # both models, CUDA
    dimlapse bench gpu --dry-run                        # tiny config on CPU (a smoke test)
    python -m dimlapse.pipelines.bench.gpu --dry-run    # the same, as a script

Arms, interleaved in blocks on identically initialised models with synthetic CIFAR-shaped
data already on the device (so input loading is not measured):

- ``plain``: training only;
- ``dimlapse``: ``Recorder(every=5)`` with weights and the default module selection's
  activations on a 512-example probe (conv outputs at 16 positions, 4 tokens);
- ``weights-only``: ``Recorder(every=5, mode="weights")``; activations are replayed later;
- ``spectra``: ``Recorder(every=5, mode="spectra")``: spectra of every weight and activation
  matrix at every capture step, full snapshots every 500 steps;
- ``ndtracker``: ``ndt.HighFrequencyTracker`` every 5 steps, when importable.

Each block is timed with ``torch.cuda.synchronize()`` at its edges only (no per-step syncs);
the ratio is the median over blocks of (arm's block time / plain's block time in the same
block). Targets: <= 1.05x full capture, <= 1.03x spectra mode at every 5 (README, "Measured").
The Recorder's writer is a spawned process on CUDA: the ``__main__`` guard of the script (or
of the ``dimlapse`` console script) is what makes that safe.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from dimlapse.pipelines.zoo import DataSpec, ResNet, ViT


def make_model(name: str, *, tiny: bool) -> nn.Module:
    """ResNet-18 (CIFAR layout) or a small ViT (d 192, depth 6, 4 heads, patch 4) on 32x32."""
    if name == "resnet18":
        return ResNet(3, 10, dim=2, width=8 if tiny else 64, blocks=(2, 2, 2, 2))
    if name == "vit":
        spec = DataSpec("synthetic", "image", (3, 32, 32), 10)
        if tiny:
            return ViT(spec, patch=8, d=16, heads=2, depth=1, ff=32)
        return ViT(spec, patch=4, d=192, heads=4, depth=6, ff=768)
    raise ValueError(f"Unknown model {name!r}; expected 'resnet18' or 'vit'")


class _Arm:
    """One arm: model, optimiser, fixed synthetic batches on the device, optional capture."""

    def __init__(self, name: str, model_name: str, device: torch.device, *, batch: int, tiny: bool):
        torch.manual_seed(0)
        self.model = make_model(model_name, tiny=tiny).to(device)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-3)
        g = torch.Generator(device="cpu").manual_seed(0)
        self.x = torch.randn(8, batch, 3, 32, 32, generator=g).to(device)  # 8 rotating batches
        self.y = torch.randint(10, (8, batch), generator=g).to(device)
        self.loss_fn = nn.CrossEntropyLoss()
        self.name, self.n = name, 0
        self.hook: Callable[[int, torch.Tensor], object] | None = None

    def step(self) -> None:
        i = self.n % len(self.x)
        loss = self.loss_fn(self.model(self.x[i]), self.y[i])
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.n += 1
        if self.hook is not None:
            self.hook(self.n, loss.detach())


def bench_model(
    model_name: str,
    device: torch.device,
    *,
    batch: int,
    probe_size: int,
    every: int,
    blocks: int,
    steps: int,
    warmup: int,
    tiny: bool,
    root: Path,
) -> dict[str, float]:
    """Block-paired step-time ratios to plain training for one model."""
    from dimlapse.capture import CaptureOptions, Recorder

    g = torch.Generator(device="cpu").manual_seed(1)
    probe = torch.randn(probe_size, 3, 32, 32, generator=g).to(device)
    arms = {n: _Arm(n, model_name, device, batch=batch, tiny=tiny) for n in ("plain", "dimlapse")}
    for extra in ("weights-only", "spectra"):
        arms[extra] = _Arm(extra, model_name, device, batch=batch, tiny=tiny)
    recorders = []
    for name, mode in (("dimlapse", "full"), ("weights-only", "weights"), ("spectra", "spectra")):
        rec = Recorder(
            arms[name].model,
            str(root / f"{model_name}-{name}.zarr"),
            every=every,
            probe=probe,
            options=CaptureOptions(mode=mode),
        )
        arms[name].hook = lambda _n, loss, rec=rec: rec.step(loss)
        recorders.append(rec)
    tracker = None
    try:
        from ndt import HighFrequencyTracker
    except ImportError:
        pass
    else:
        arm = arms["ndtracker"] = _Arm("ndtracker", model_name, device, batch=batch, tiny=tiny)
        tracker = HighFrequencyTracker(arm.model, sampling_frequency=every)
        arm.hook = lambda n, loss, tr=tracker: tr.log(n, loss.item())  # its documented usage

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    names = list(arms)
    for name in names:  # warm-up (cudnn autotuning, allocator, first snapshots)
        for _ in range(warmup):
            arms[name].step()
    block_times: dict[str, list[float]] = {n: [] for n in names}
    for b in range(blocks):
        for name in names[b % len(names) :] + names[: b % len(names)]:
            sync()
            t0 = time.perf_counter()
            for _ in range(steps):
                arms[name].step()
            sync()
            block_times[name].append(time.perf_counter() - t0)
    for rec in recorders:
        rec.close()
    if tracker is not None:
        tracker.close()
    plain = block_times["plain"]
    out = {"plain_step_ms": 1e3 * statistics.median(plain) / steps}
    for name in names[1:]:
        out[name] = statistics.median(t / p for t, p in zip(block_times[name], plain, strict=True))
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``dimlapse bench gpu``."""
    p.add_argument("--models", default="resnet18,vit", help="comma-separated")
    p.add_argument("--device", default="cuda", help="torch device")
    p.add_argument("--batch", type=int, default=128, help="training batch size")
    p.add_argument("--probe-size", type=int, default=512, help="probe examples")
    p.add_argument("--every", type=int, default=5, help="capture interval")
    p.add_argument("--blocks", type=int, default=8, help="interleaved blocks")
    p.add_argument("--steps", type=int, default=50, help="steps per arm per block")
    p.add_argument("--warmup", type=int, default=20, help="untimed steps per arm first")
    p.add_argument("--dry-run", action="store_true", help="tiny models and batches, on CPU")


def main(args: argparse.Namespace) -> int:
    """Run every model, print one line per model."""
    if args.dry_run:
        args.device, args.batch, args.probe_size = "cpu", 4, 8
        args.blocks, args.steps, args.warmup = 2, 5, 2
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            print("bench_gpu: CUDA is not available; use --dry-run on CPU", file=sys.stderr)
            return 2
        torch.backends.cudnn.benchmark = True
        print(f"device: {torch.cuda.get_device_name(device)}, torch {torch.__version__}")
    with tempfile.TemporaryDirectory(prefix="dimlapse-bench-gpu-") as tmp:
        for model_name in args.models.split(","):
            r = bench_model(
                model_name, device, batch=args.batch, probe_size=args.probe_size,
                every=args.every, blocks=args.blocks, steps=args.steps, warmup=args.warmup,
                tiny=args.dry_run, root=Path(tmp),
            )  # fmt: skip
            ratios = ", ".join(f"{k} {v:.3f}x" for k, v in r.items() if k != "plain_step_ms")
            print(
                f"{model_name}: batch {args.batch}, every {args.every}, probe {args.probe_size}: "
                f"plain {r['plain_step_ms']:.2f} ms/step; {ratios}"
            )
    return 0


if __name__ == "__main__":  # the spawned CUDA writer re-imports this module: keep the guard
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    add_arguments(parser)
    raise SystemExit(main(parser.parse_args()))
