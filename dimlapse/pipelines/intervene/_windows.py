"""Intervention windows: a baseline run and runs disrupted during given step windows.

Every run uses the same recipe and seed (same initialisation, same batch order), is trained by
:func:`dimlapse.pipelines.training.train` and captured like any run; the disruption is applied by
its ``intervention`` hook only for steps ``start < step <= end`` of its window. Kinds:

- ``label_noise``: a share ``strength`` (default 0.5) of each batch's labels replaced by
  uniformly random classes.
- ``input_noise``: Gaussian noise of ``strength`` (default 1.0) times the batch's std added.
- ``blur``: inputs average-pooled by a factor ``strength`` (default 4) along every spatial
  axis and interpolated back (the deficit of Achille, Rovere and Soatto 2019, "Critical
  learning periods in deep networks", who down- and up-sampled CIFAR-10 images).
- ``freeze``: the parameters of module ``layer`` (default the first with parameters) get no
  update during the window.
- ``lr_spike``: the learning rate multiplied by ``strength`` (default 10).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

KINDS = ("label_noise", "input_noise", "blur", "freeze", "lr_spike")
DEFAULT_STRENGTH = {"label_noise": 0.5, "input_noise": 1.0, "blur": 4.0, "freeze": 1.0}
DEFAULT_STRENGTH["lr_spike"] = 10.0
_WINDOW = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")


def parse_windows(text: str) -> list[tuple[int, int]]:
    """``"0-500,1000-1500"`` -> ``[(0, 500), (1000, 1500)]`` (steps ``start < step <= end``)."""
    windows = []
    for part in str(text).split(","):
        m = _WINDOW.match(part)
        if not m or int(m.group(1)) >= int(m.group(2)):
            raise ValueError(
                f"Expected `windows` as comma-separated START-END step ranges with START < END, "
                f"such as '0-500,1000-1500', got {text!r}"
            )
        windows.append((int(m.group(1)), int(m.group(2))))
    return windows


def check_kind(kind: str) -> str:
    """Validate a disruption kind."""
    if kind not in KINDS:
        raise ValueError(f"Unknown `kind` {kind!r}; expected one of: {', '.join(KINDS)}")
    return kind


def first_layer(model: nn.Module) -> str:
    """Name of the first module that owns parameters directly (the default frozen layer)."""
    for name, mod in model.named_modules():
        if name and any(True for _ in mod.parameters(recurse=False)):
            return name
    raise ValueError("Expected a model with at least one parameterised module")


def blur(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Average-pool ``x`` (N, C, L) or (N, C, H, W) by ``factor`` and interpolate back."""
    spatial = x.shape[2:]
    pool = F.avg_pool1d if x.ndim == 3 else F.avg_pool2d
    low = pool(x, kernel_size=factor, stride=factor, ceil_mode=True)
    mode = "linear" if x.ndim == 3 else "bilinear"
    return F.interpolate(low, size=spatial, mode=mode, align_corners=False)


@dataclass
class Disruption:
    """The ``intervention`` hook of one run: disrupts steps ``start < step <= end``.

    It also keeps a reference to the trained model, for the per-class evaluation afterwards.
    ``window`` None is the baseline (no disruption).
    """

    kind: str
    window: tuple[int, int] | None
    strength: float
    layer: str | None = None
    seed: int = 0
    n_classes: int = 10
    model: nn.Module | None = field(default=None, repr=False)
    _saved: Any = field(default=None, repr=False)

    def __call__(
        self, step: int, model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self.model = model
        if self.window is None:
            return x, y
        inside = self.window[0] < step <= self.window[1]
        if self.kind in ("freeze", "lr_spike"):
            self._toggle(inside, model, opt)
            return x, y
        if not inside:
            return x, y
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        if self.kind == "label_noise":
            swap = torch.rand(y.shape, generator=g) < self.strength
            noise = torch.randint(0, self.n_classes, y.shape, generator=g)
            return x, torch.where(swap.to(y.device), noise.to(y.device), y)
        if not torch.is_floating_point(x):
            raise ValueError(f"`kind` {self.kind!r} needs float inputs, got {x.dtype} tokens")
        if self.kind == "input_noise":
            noise = torch.randn(x.shape, generator=g).to(x.device)
            return x + self.strength * x.std() * noise, y
        return blur(x, int(self.strength)), y  # blur

    def _toggle(self, inside: bool, model: nn.Module, opt: torch.optim.Optimizer) -> None:
        active = self._saved is not None
        if inside == active:
            return
        if self.kind == "lr_spike":
            if inside:
                self._saved = [g["lr"] for g in opt.param_groups]
                for g in opt.param_groups:
                    g["lr"] *= self.strength
            else:
                for g, lr in zip(opt.param_groups, self._saved, strict=True):
                    g["lr"] = lr
                self._saved = None
            return
        module = model.get_submodule(self.layer or first_layer(model))
        if inside:  # Adam/SGD skip parameters whose grad is None (zero_grad(set_to_none=True))
            self._saved = [p.requires_grad for p in module.parameters()]
            for p in module.parameters():
                p.requires_grad_(False)
        else:
            for p, req in zip(module.parameters(), self._saved, strict=True):
                p.requires_grad_(req)
            self._saved = None


@torch.no_grad()
def per_class_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, n: int) -> list[float]:
    """Held-out accuracy of ``model`` per class (NaN for a class without examples)."""
    model.eval()
    pred = torch.cat([model(x[i : i + 2048]).argmax(-1) for i in range(0, len(y), 2048)])
    out = []
    for c in range(n):
        mask = y == c
        out.append(float((pred[mask] == c).float().mean()) if mask.any() else float("nan"))
    return out
