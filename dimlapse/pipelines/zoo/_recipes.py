"""Recipes: frozen, JSON-round-tripping configs for one training-and-capture run.

A :class:`Recipe` names a model and a dataset and fixes every training and capture knob, so a
run store's ``config`` attr is enough to rebuild the model (``make replay``) or rerun the run.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dimlapse.capture import CaptureOptions

MODELS = ("mlp", "cnn", "resnet", "transformer", "vit", "gpt2-tiny")
DATASETS = ("mnist1d", "digits", "modadd", "mnist", "cifar10", "stdlib")
OPTIMIZERS = ("adam", "adamw", "sgd")
CODECS_HELP = (
    "'lz4' (lossless, default), 'zstd', 'blosc-zstd', 'none', 'float16' or 'bitround-<bits>'"
)
_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

DEFAULT_DATA = {
    "mlp": "mnist1d",
    "cnn": "mnist1d",
    "resnet": "mnist1d",
    "vit": "digits",
    "transformer": "modadd",
    "gpt2-tiny": "stdlib",
}

# Per-model training defaults. The mlp entry is the study's protocol (Adam, lr 1e-3, batch 64,
# 8000 steps, every 5). The transformer uses the grokking recipe for modular addition
# (AdamW with strong weight decay, large batches), which has a delayed-generalisation transition:
# measured with seed 0 (CPU): train accuracy 1.00 by step 1000 with held-out accuracy 0.41, a
# loss spike near step 2000, then held-out accuracy 0.998 by step 2250 and 1.000 after.
_MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "mlp": {"steps": 8000, "optimizer": "adam", "lr": 1e-3, "batch_size": 64},
    "cnn": {"steps": 4000, "optimizer": "adam", "lr": 1e-3, "batch_size": 64},
    "resnet": {"steps": 4000, "optimizer": "adam", "lr": 1e-3, "batch_size": 64},
    "vit": {"steps": 4000, "optimizer": "adam", "lr": 1e-3, "batch_size": 64},
    "transformer": {
        "steps": 4000,
        "optimizer": "adamw",
        "lr": 1e-3,
        "batch_size": 512,
        "weight_decay": 1.0,
        "betas": (0.9, 0.98),
    },
    # A byte-level language model on the Python standard library's source (nanoGPT-style
    # AdamW); the loss is the mean next-byte cross-entropy over every position.
    "gpt2-tiny": {
        "steps": 2000,
        "optimizer": "adamw",
        "lr": 1e-3,
        "batch_size": 32,
        "weight_decay": 0.1,
        "betas": (0.9, 0.95),
        "probe_size": 256,  # = the held-out windows, evaluated at every capture step
    },
}


@dataclass(frozen=True)
class Recipe:
    """Everything that defines one training-and-capture run.

    Parameters
    ----------
    model, data
        Names from :data:`MODELS` and :data:`DATASETS`.
    steps
        Optimizer steps.
    every
        Capture interval in optimizer steps (step 0 is the initial state).
    seed
        Seeds model initialisation, batch order and the probe choice.
    batch_size, lr, optimizer, weight_decay, betas
        Optimiser settings.
    probe_size
        Examples in the fixed probe batch, drawn (seeded) from the held-out split.
    positions, tokens
        Spatial positions / token positions sampled per example for conv / token outputs.
    activations
        Capture probe activations inline; ``False`` records weights only (replay later), as
        ``mode="weights"`` does.
    codec
        Store codec: 'lz4' (lossless, default), 'zstd', 'blosc-zstd', 'none', 'float16' or
        'bitround-<bits>'.
    mode
        Capture mode: 'full' (default), 'weights' or 'spectra' (see ``CaptureOptions``).
        The capture fields become a :class:`~dimlapse.capture.CaptureOptions` through
        :meth:`capture_options`.

    Examples
    --------
    >>> r = Recipe.default("mlp", steps=100)
    >>> Recipe.from_json(r.to_json()) == r
    True
    """

    model: str
    data: str
    steps: int = 8000
    every: int = 5
    seed: int = 0
    batch_size: int = 64
    lr: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    probe_size: int = 512
    positions: int = 16
    tokens: int = 4
    activations: bool = True
    codec: str = "lz4"
    mode: str = "full"

    def __post_init__(self) -> None:
        _check_choice("model", self.model, MODELS)
        _check_choice("data", self.data, DATASETS)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        for name in ("steps", "every", "batch_size", "probe_size", "positions", "tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Expected `{name}` to be a positive int, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"Expected `seed` to be a non-negative int, got {self.seed!r}")
        if not (isinstance(self.lr, int | float) and self.lr > 0):
            raise ValueError(f"Expected `lr` to be a positive float, got {self.lr!r}")
        if not (isinstance(self.weight_decay, int | float) and self.weight_decay >= 0):
            raise ValueError(
                f"Expected `weight_decay` to be a non-negative float, got {self.weight_decay!r}"
            )
        if not isinstance(self.activations, bool):
            raise ValueError(f"Expected `activations` to be a bool, got {self.activations!r}")
        check_codec(self.codec)
        _check_choice("mode", self.mode, ("full", "weights", "spectra"))
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))

    @classmethod
    def default(cls, model: str, **overrides: Any) -> Recipe:
        """The default recipe for ``model`` (its default dataset and protocol), with overrides.

        ``None`` values in ``overrides`` are ignored, so CLI options can be passed straight in.
        """
        _check_choice("model", model, MODELS)
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise TypeError(f"Unknown recipe field(s) {unknown}; valid fields: {sorted(fields)}")
        values: dict[str, Any] = {"model": model, "data": DEFAULT_DATA[model]}
        values.update(_MODEL_DEFAULTS[model])
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict (tuples become lists)."""
        out = dataclasses.asdict(self)
        out["betas"] = list(self.betas)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Recipe:
        """Inverse of :meth:`to_dict`; unknown keys raise ``TypeError`` naming them."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - fields)
        if unknown:
            raise TypeError(f"Unknown recipe field(s) {unknown}; valid fields: {sorted(fields)}")
        d = dict(d)
        if "betas" in d:
            d["betas"] = tuple(d["betas"])
        return cls(**d)

    def to_json(self) -> str:
        """Serialise to a JSON string (sorted keys)."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Recipe:
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))

    def capture_options(self) -> CaptureOptions:
        """The Recorder options this recipe fixes: ``mode`` (``"weights"`` when ``activations``
        is False), ``positions``, ``tokens``, ``codec``, and ``total_steps`` = ``steps``.

        Examples
        --------
        >>> Recipe.default("mlp", steps=100, activations=False).capture_options().mode
        'weights'
        """
        from dimlapse.capture import CaptureOptions  # torch: only when a run is captured

        return CaptureOptions(
            mode=self.mode if self.activations else "weights",
            positions=self.positions,
            tokens=self.tokens,
            codec=self.codec,
            total_steps=self.steps,
        )

    @property
    def run_name(self) -> str:
        """The default run name, ``<model>-<data>-s<seed>``."""
        return f"{self.model}-{self.data}-s{self.seed}"


def check_run_name(name: str) -> str:
    """Validate a run name (used as a directory name)."""
    if not isinstance(name, str) or not _RUN_NAME.match(name):
        raise ValueError(
            f"Expected `run` to be a name of letters, digits, '.', '_' or '-' "
            f"(not starting with a symbol), got {name!r}"
        )
    return name


def check_codec(codec: str) -> str:
    """Validate a codec name: 'lz4', 'zstd', 'blosc-zstd', 'none', 'float16' or
    'bitround-<bits>' (1-23 bits)."""
    ok = codec in ("lz4", "zstd", "blosc-zstd", "none", "float16")
    if isinstance(codec, str) and codec.startswith("bitround-"):
        bits = codec.removeprefix("bitround-")
        ok = bits.isdigit() and 1 <= int(bits) <= 23
    if not ok:
        raise ValueError(f"Expected `codec` to be one of {CODECS_HELP}, got {codec!r}")
    return codec


def _check_choice(name: str, value: object, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"Unknown {name} {value!r}; expected one of: {', '.join(valid)}")
