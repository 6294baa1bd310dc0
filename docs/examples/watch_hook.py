"""A training script that watches itself: lower the learning rate on instability, stop on
collapse or NaN, with the live dashboard open.

A 64-32-32-32-10 MLP on scikit-learn's digits (offline, seconds on a CPU) whose learning
rate is raised 50x at step 300 (a bad schedule). The watcher, on a background thread, sees
the dimensionality turn erratic, and its hook divides the learning rate by 10.

    .venv/bin/python docs/examples/watch_hook.py [--port 8765] [--linger 0]

Open the printed URL while it runs; alerts go to data/results/watch-hook/alerts.jsonl.
"""

from __future__ import annotations

import argparse
import threading
import time

import torch
from sklearn.datasets import load_digits
from torch import nn

from dimlapse.capture import CaptureOptions, Recorder
from dimlapse.pipelines.watch import Dashboard, Watcher


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="data/runs/watch-hook.zarr")
    parser.add_argument("--port", type=int, default=8765, help="dashboard port (0: any free)")
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--delay", type=float, default=0.02, help="seconds of sleep per step")
    parser.add_argument("--linger", type=float, default=0, help="keep the dashboard up (s)")
    args = parser.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(1)
    x, y = load_digits(return_X_y=True)
    x, y = torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y)
    model = nn.Sequential(
        nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
        nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 10),
    )  # fmt: skip
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    stop = threading.Event()
    last_cut = [-1000]  # step of the last learning-rate cut (layers alert one by one)
    now = [0]  # the training step, for the hook's latency

    def on_alert(alert):  # called on the watcher's thread
        print(f"step {alert.step} (seen at training step {now[0]}): {alert.message}", flush=True)
        if alert.kind == "instability" and alert.step > last_cut[0] + 100:
            last_cut[0] = alert.step
            for group in opt.param_groups:
                group["lr"] /= 10
            print(f"  -> learning rate lowered to {opt.param_groups[0]['lr']:g}")
        elif alert.severity == "critical":
            stop.set()  # the loop below ends at its next step
            print("  -> stopping training")

    g = torch.Generator().manual_seed(0)
    with (
        Dashboard(port=args.port) as board,
        Recorder(
            model,
            args.store,
            every=5,
            probe=x[:256],
            overwrite=True,
            options=CaptureOptions(flush_every=4),
        ) as rec,
        Watcher(args.store, on_alert=on_alert, dashboard=board, interval=0.2) as watcher,
    ):
        print(f"dashboard: {board.url}")
        for step in range(1, args.steps + 1):
            if step == 300:  # the bad schedule
                for group in opt.param_groups:
                    group["lr"] = 5e-2
            idx = torch.randint(0, len(x), (64,), generator=g)
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            rec.step(loss.detach())
            now[0] = step
            time.sleep(args.delay)
            if stop.is_set():
                break
        rec.close()  # marks the run complete: the watcher reads the last snapshots and ends
        result = watcher.join(timeout=60)
        if result is not None:
            print(f"watch {result.stopped}: {len(result.alerts)} alert(s), run {result.status}")
        time.sleep(args.linger)
    print(f"trained {step} steps, final learning rate {opt.param_groups[0]['lr']:g}")


if __name__ == "__main__":
    main()
