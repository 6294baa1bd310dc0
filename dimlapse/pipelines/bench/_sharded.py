"""Per-rank memory of sharded capture against the shard size, and against a gather.

``dimlapse bench sharded [--ranks 2,4 --width 4096 --layers 4 --steps 8 --every 2
--parallelism fsdp]`` runs,
for each world size, three gloo jobs of the same shape (``torch.distributed.run``, one
process per rank, ``_sharded_worker.py``): plain training, recorded training, and the control
that gathers every parameter whole at the capture steps (what a recorder that gathers would
hold). Per rank it prints the peak RSS of the plain arm and the growth of the other two over
it, the writer process's own growth, and the ratios side by side: sharded capture should scale
with the shard (two ring slots in the trainer, a chunk buffer and its encoding in the writer),
the gather with the whole model.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ranks", default="2,4", help="comma-separated world sizes (default 2,4)")
    p.add_argument("--width", type=int, default=4096, help="Linear width (default 4096)")
    p.add_argument("--layers", type=int, default=4, help="Linear layers (default 4)")
    p.add_argument("--steps", type=int, default=8, help="training steps (default 8)")
    p.add_argument("--every", type=int, default=2, help="capture interval (default 2)")
    p.add_argument(
        "--parallelism",
        choices=KINDS,
        default="fsdp",
        help="fsdp: fully_shard on a 1-D mesh; hsdp: on a (world/2, 2) replicate x shard mesh "
        "(replica 0 writes the weights); tp: Colwise/Rowwise pairs (default fsdp)",
    )


ARMS = ("plain", "recorded", "gather")
KINDS = ("fsdp", "hsdp", "tp")


def _job(arm: str, world: int, args: argparse.Namespace, out: str) -> list[dict[str, Any]]:
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
        str(world), "-m", "dimlapse.pipelines.bench._sharded_worker", arm, str(args.width),
        str(args.layers), str(args.steps), str(args.every), out, args.parallelism,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"the {world}-rank {arm} job failed:\n{done.stderr[-3000:]}")
    return [
        json.loads((Path(out) / f"{args.parallelism}-{arm}-{world}-{rank}.json").read_text())
        for rank in range(world)
    ]


def main(args: argparse.Namespace) -> int:
    worlds = [int(w) for w in args.ranks.split(",")]
    if any(w < 2 for w in worlds):
        raise SystemExit(f"Expected --ranks of world sizes >= 2, got {args.ranks!r}")
    if args.parallelism == "hsdp" and any(w % 2 for w in worlds):
        raise SystemExit(f"Expected --ranks of even world sizes for hsdp, got {args.ranks!r}")
    if args.parallelism == "tp" and args.layers % 2:
        raise SystemExit(f"Expected an even --layers for tp (Colwise/Rowwise pairs), got "
                         f"{args.layers}")  # fmt: skip
    how = {
        "fsdp": "sharded with fully_shard",
        "hsdp": "sharded with fully_shard on a (world/2, 2) mesh",
        "tp": "Colwise/Rowwise pairs",
    }[args.parallelism]
    print(
        f"sharded capture: {args.layers} x Linear({args.width}, {args.width}) {how}, "
        f"{args.steps} steps, capture every {args.every}. Peak RSS per rank "
        "(MB); recorded and gather as growth over the plain arm's peak (same rank, same job "
        "shape); writer: the writer process's own growth"
    )
    print(
        f"{'world':>5} {'rank':>4} {'full':>7} {'shard':>7} {'plain':>7} {'+rec':>7} "
        f"{'+gather':>8} {'writer':>7} {'rec/shard':>9} {'writer/shard':>12} "
        f"{'gather/full':>11}"
    )
    with tempfile.TemporaryDirectory() as out:
        for world in worlds:
            runs = {arm: _job(arm, world, args, out) for arm in ARMS}
            for p, r, g in zip(*(runs[a] for a in ARMS), strict=True):
                shard, full, base = p["shard_mb"], p["full_mb"], p["peak_mb"]
                rec, gather = r["peak_mb"] - base, g["peak_mb"] - base
                writer = r["writer_growth_mb"]
                print(
                    f"{world:>5} {p['rank']:>4} {full:7.1f} {shard:7.1f} {base:7.1f} "
                    f"{rec:7.1f} {gather:8.1f} {writer:7.1f} {rec / shard:9.2f} "
                    f"{writer / shard:12.2f} {gather / full:11.2f}"
                )
    return 0
