"""Tiny captured runs made to show each diagnosis of ``watch`` (shared by the watch tests).

A 64-32-32-32-10 ReLU MLP on scikit-learn's digits (offline), Adam at 1e-3, batch 64,
captured every 5 steps with a 128-example probe and 4 snapshots per flush; the learning
rate is recorded as a scalar (``lr``), as the recipes do, so alerts can name its changes.
Each planted fault is switched on by one argument; everything else is identical and seeded.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from sklearn.datasets import load_digits
from torch import nn

from dimlapse.capture import CaptureOptions, Recorder

X_ALL, Y_ALL = load_digits(return_X_y=True)
X = torch.tensor(X_ALL / 16.0, dtype=torch.float32)  # (1797, 64)
Y = torch.tensor(Y_ALL)


@dataclass(frozen=True)
class Plant:
    """What is wrong with a run (all off: the healthy run)."""

    widths: tuple[int, ...] = (32, 32, 32)
    lr: float = 1e-3
    spike: tuple[int, float] | None = None  # (step, lr) from that step on
    nan_at: int | None = None  # a NaN written into the first layer's weights
    collapse_at: int | None = None  # the second layer projected to rank 1 at every step
    collapse_until: int | None = None  # ... until this step (then it trains freely again)
    dead_third: int | None = None  # all but this many units of the third layer start dead


def mlp(widths: tuple[int, ...], *, seed: int = 0) -> nn.Sequential:
    """Linear layers named 0, 2, 4, ... (ReLU between), the last one the 10-class output."""
    torch.manual_seed(seed)
    dims = [64, *widths, 10]
    layers: list[nn.Module] = []
    for i in range(len(dims) - 1):
        layers.append(nn.Linear(dims[i], dims[i + 1]))
        if i < len(dims) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def record(
    path: Path,
    plant: Plant = Plant(),
    *,
    steps: int = 300,
    delay: float = 0.0,
    stop: threading.Event | None = None,
    optimizer_box: list | None = None,
) -> int:
    """Train and capture into ``path``; returns the last step trained.

    ``delay`` seconds of sleep per step make a run last long enough to be watched live;
    ``stop`` ends training early when set; ``optimizer_box`` receives the optimizer, so a
    watcher's hook can act on it.
    """
    torch.set_num_threads(1)
    model = mlp(plant.widths)
    if plant.dead_third is not None:
        with torch.no_grad():
            model[4].bias[plant.dead_third :] = -50.0  # ReLU never opens: no signal, no gradient
    opt = torch.optim.Adam(model.parameters(), lr=plant.lr)
    if optimizer_box is not None:
        optimizer_box.append(opt)
    g = torch.Generator().manual_seed(0)
    step = 0
    with Recorder(
        model, path, every=5, probe=X[:128], overwrite=True, options=CaptureOptions(flush_every=4)
    ) as rec:
        for step in range(1, steps + 1):
            if plant.spike is not None and step == plant.spike[0]:
                for group in opt.param_groups:
                    group["lr"] = plant.spike[1]
            idx = torch.randint(0, len(X), (64,), generator=g)
            loss = nn.functional.cross_entropy(model(X[idx]), Y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                if plant.nan_at is not None and step == plant.nan_at:
                    model[0].weight[0, 0] = float("nan")
                until = plant.collapse_until or steps + 1
                if plant.collapse_at is not None and plant.collapse_at <= step < until:
                    w = model[2].weight
                    u, s, vh = torch.linalg.svd(w, full_matrices=False)
                    w.copy_(s[0] * torch.outer(u[:, 0], vh[0]))  # rank 1
            rec.step(loss.detach(), lr=opt.param_groups[0]["lr"])
            if delay:
                time.sleep(delay)
            if stop is not None and stop.is_set():
                break
    return step
