"""What is recorded and how: one frozen, validated set of Recorder options.

The Recorder keeps what names one run (model, store, ``every``, probe, ``attrs``, and whether
it replaces or resumes a stored run); everything else is a :class:`CaptureOptions`, shared by
the Recorder, the training-framework callbacks (``integrations``) and the recipes, and
validated here once, at construction. Override fields with ``dataclasses.replace``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from . import _validate
from ._select import ModuleSelector, ParamSelector
from .writer import DEFAULT_MAX_BUFFER_BYTES, parse_codec

MODES = ("full", "weights", "spectra")


@dataclass(frozen=True)
class CaptureOptions:
    """Options of a :class:`~dimlapse.capture.Recorder`, validated at construction.

    Parameters
    ----------
    modules : None, list of types, glob str, list of globs or callable
        Modules whose outputs are recorded (default: Linear, Conv1d/2d, MultiheadAttention,
        transformer layers, Embedding).
    params : str, list of str, callable or None
        Parameter globs (among parameters with ndim >= 2), or ``callable(name, param)``.
    mode : {"full", "weights", "spectra"}
        ``full``: weights, state and probe activations ``(step, sample, feature)`` at every
        capture step. ``weights``: no activations (replay them later with
        :func:`~dimlapse.capture.replay`). ``spectra``: the singular values of every recorded
        weight matrix and of every module's sample-centred probe activations at every capture
        step, and full snapshots every ``full_every`` steps only: for big models (under 1 % of
        full mode's bytes per snapshot).
    full_every : int
        Spectra mode: steps between full snapshots (step 0 is always full; 0: never after it).
    positions, tokens : int
        Spatial positions / token positions sampled (fixed, seeded) per module.
    flush_every : int, optional
        Snapshots per chunk and flush (default: about 128 MiB of parameters, 1 to 64).
    max_buffer_bytes : int
        Size of the shared-memory ring of snapshot slots (default 256 MiB, between 2 and 128
        slots). It bounds the memory capture may hold while the writer catches up.
    backpressure : {"block", "drop"}
        When every slot is taken: wait, or drop the snapshot and count it.
    codec : str, optional
        ``lz4`` (lossless, the default for new runs; a resumed run keeps its own), ``zstd``,
        ``blosc-zstd``, ``none``, ``float16`` or ``bitround-<bits>``.
    writer : {"auto", "process", "thread"}
        Where the writer runs. ``auto``: a process, or a thread (with a logged warning) where
        a process cannot be used.
    total_steps : int, optional
        Planned optimizer steps: the projected bytes of the whole run are logged, and a run
        that would not fit the store's filesystem is refused, naming the modes that fit.
    writer_timeout : float
        Seconds training waits for a writer that makes no progress (stopped, hung) before
        capture is disabled (``degraded``, one logged error) and, on close, the writer
        process is ended; also the bound on waiting for a dead trainer's writer to flush
        before a new start. Default 60.
    strict : bool
        Re-raise writer errors on the training thread instead of degrading.
    rank : int
        In a ``torch.distributed`` job, the rank that records (checked against the world size
        by the Recorder); every other rank's Recorder does nothing.
    average_scalars : bool
        Distributed jobs: store the mean over ranks of each scalar (one ``all_reduce`` per
        step, in every rank).

    Examples
    --------
    >>> opts = CaptureOptions(modules="fc*", codec="float16")
    >>> dataclasses.replace(opts, mode="weights").mode
    'weights'
    >>> CaptureOptions.from_json(opts.to_json()) == opts
    True
    >>> CaptureOptions(mode="everything")
    Traceback (most recent call last):
    ...
    ValueError: Expected `mode` to be one of ('full', 'weights', 'spectra'), got 'everything'
    """

    modules: ModuleSelector = None
    params: ParamSelector = "*"
    mode: str = "full"
    full_every: int = 500
    positions: int = 16
    tokens: int = 4
    flush_every: int | None = None
    max_buffer_bytes: int = DEFAULT_MAX_BUFFER_BYTES
    backpressure: str = "block"
    codec: str | None = None
    writer: str = "auto"
    total_steps: int | None = None
    writer_timeout: float = 60.0
    strict: bool = False
    rank: int = 0
    average_scalars: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"Expected `mode` to be one of {MODES}, got {self.mode!r}")
        for name in ("positions", "tokens", "flush_every", "max_buffer_bytes"):
            if name != "flush_every" or self.flush_every is not None:  # None: sized by model
                _validate.positive_int(name, getattr(self, name))
        _validate.positive_int("full_every", self.full_every, minimum=0)
        if self.total_steps is not None:
            _validate.positive_int("total_steps", self.total_steps, minimum=0)
        t = self.writer_timeout
        if isinstance(t, bool) or not isinstance(t, int | float) or not 0 < t < float("inf"):
            raise ValueError(
                f"Expected `writer_timeout` to be a positive number of seconds, got {t!r}"
            )
        if self.backpressure not in ("block", "drop"):
            raise ValueError(
                f"Expected `backpressure` to be 'block' or 'drop', got {self.backpressure!r}"
            )
        if self.writer not in ("auto", "process", "thread"):
            raise ValueError(
                f"Expected `writer` to be 'auto', 'process' or 'thread', got {self.writer!r}"
            )
        if self.codec is not None:  # None: a resumed run keeps its codec, a new one the default
            parse_codec(self.codec)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict; ``modules`` and ``params`` must be globs (or None)."""
        out = dataclasses.asdict(self)
        for name in ("modules", "params"):
            value = out[name]
            if isinstance(value, tuple):
                value = out[name] = list(value)
            if not (value is None or isinstance(value, str) or _all_str(value)):
                raise ValueError(
                    f"Expected `{name}` to be None, a glob or a list of globs to serialise the "
                    f"options, got {value!r:.80}"
                )
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CaptureOptions:
        """Inverse of :meth:`to_dict`; unknown keys raise ``TypeError`` naming them."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - fields)
        if unknown:
            raise TypeError(f"Unknown capture option(s) {unknown}; valid fields: {sorted(fields)}")
        return cls(**d)

    def to_json(self) -> str:
        """Serialise to a JSON string (sorted keys)."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> CaptureOptions:
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))


def _all_str(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def check_options(options: Any) -> CaptureOptions:
    """``options`` itself, or the defaults for None; anything else is refused."""
    if options is None:
        return CaptureOptions()
    if not isinstance(options, CaptureOptions):
        raise ValueError(
            f"Expected `options` to be a dimlapse.capture.CaptureOptions or None, "
            f"got {options!r:.80}"
        )
    return options
