"""What a detector is (``DetectorSpec``) and how the null is built (``Calibration``).

A detector is one registration in ``_registry.DETECTORS``: its name, a function
``detect(x, options, context) -> Events`` (``x`` (rows, n), ``context`` the trend smoother,
:class:`Context`), a frozen options dataclass whose defaults are the detector's defaults, the
fewest samples it can fire on, and the surrogate count its calibration uses. Nothing else in the
package names a detector.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from .._validate import check_positive_int
from ._events import Events

DIRECTIONS = ("both", "up", "down")
NOISE_MODELS = ("ar1", "block")


def check_positive(value: Any, name: str) -> float:
    """Validate a positive number option; return it as a float."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.number) or not value > 0:
        raise ValueError(f"Expected `{name}` to be a positive number, got {value!r}")
    return float(value)


def check_choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    """Validate a string option against its allowed values."""
    if value not in choices:
        raise ValueError(f"Expected `{name}` to be one of {choices}, got {value!r}")
    return str(value)


def options_attrs(opts: Any, prefix: str = "") -> dict[str, object]:
    """A frozen options dataclass as JSON-friendly attrs (None -> "auto", tuples -> lists)."""
    out: dict[str, object] = {}
    for k, v in asdict(opts).items():
        out[prefix + k] = "auto" if v is None else list(v) if isinstance(v, tuple) else v
    return out


@dataclass(frozen=True)
class Context:
    """What the calibration tells a detector, the same for the series and its surrogates.

    ``smoother``: (n, n) trend smoother ``W`` at the trend window under test; detectors that use
    it place candidates on the values and score them on the residual ``x - W x``, so a change
    scores by how much sharper it is than that trend (the same candidates at every window).
    ``events``: (n,) events already accepted (a sharp copy, ``_noise.event_component``); the
    residual is then ``(I - W)(x - events)``, free of their smooth leftovers.
    """

    smoother: Any = None  # scipy.sparse (n, n), ``_smoother.smoother_sparse``
    events: np.ndarray | None = None

    def residual(self, x: np.ndarray) -> np.ndarray:
        """``(x - events)(I - W)^T`` for ``x`` (rows, n); ``x`` itself without a smoother."""
        if self.smoother is None:
            return x
        z = x if self.events is None else x - self.events[None, :]
        return z - np.asarray(self.smoother @ z.T).T  # (rows, n)


NO_CONTEXT = Context()


@dataclass(frozen=True)
class DetectorSpec:
    """One detector: everything the calibration needs to know about it.

    Attributes
    ----------
    name : str
        Registry key and the ``detector`` coordinate of results.
    detect : callable
        ``detect(x, options, context) -> Events`` on ``x`` of shape (rows, n); ``context``
        (:class:`Context`) carries the trend smoother (``NO_CONTEXT``: score on the values).
        The same call runs on the observed series and its surrogates.
    options : type
        Frozen dataclass of the detector's parameters; ``options()`` gives the defaults.
    min_length : callable
        ``min_length(options) -> int``: fewest finite samples on which the detector can fire.
    n_surrogates : int
        Surrogates per series (its cost sets this: a vectorised detector affords more).
    summary : str
        One line for docs and attrs.
    rowwise : bool
        Each row's events are those of the row alone, bit for bit, in any batch: the ladder
        may then score surrogates a batch at a time and stop early (``_sequential``).
    """

    name: str
    detect: Callable[[np.ndarray, Any, Context], Events]
    options: type
    min_length: Callable[[Any], int]
    n_surrogates: int
    summary: str
    rowwise: bool = False

    def check_options(self, opts: Any) -> Any:
        """``opts`` if it is this detector's options type, else a ValueError naming it."""
        if opts is None:
            return self.options()
        if not isinstance(opts, self.options):
            raise ValueError(
                f"Expected options for detector {self.name!r} to be a {self.options.__name__}, "
                f"got {type(opts).__name__} ({opts!r})"
            )
        return opts


@dataclass(frozen=True)
class Calibration:
    """How the null surrogates of each series are built and how many are drawn.

    Attributes
    ----------
    trend_window : int
        Time scale (samples) of the smooth trend the null allows; changes sharper than this are
        abrupt. Default 50.
    trend_degree : int
        Degree (0, 1 or 2) of the local-polynomial trend smoother. Default 2.
    noise : {"ar1", "block"}
        Gaussian AR(1) fitted robustly to the residual, or shuffled residual blocks.
    block : int or None
        Block length for ``noise="block"`` (default ``trend_window``).
    seed : int
        Series ``i`` draws from ``np.random.default_rng([seed, i])``.
    n_surrogates : int or None
        Surrogates per series; None: each detector's own count (``DetectorSpec.n_surrogates``).
    mask_events : bool
        Fit the noise to the residual with level shifts and fast ramps excised (``_noise``), so
        a staircase is not taken for noise. False: the plain residual (the earlier model).
    scales : tuple of float
        Factors of ``trend_window`` at which every candidate is tested again to find its time
        scale (``scale`` in the result: the narrowest trend window at which it is significant).
        Empty: no ladder (``scale`` is ``trend_window`` for significant events).

    Examples
    --------
    >>> Calibration(trend_window=100).trend_window
    100
    >>> Calibration(noise="white")
    Traceback (most recent call last):
    ...
    ValueError: Expected `noise` to be one of ('ar1', 'block'), got 'white'
    """

    trend_window: int = 50
    trend_degree: int = 2
    noise: str = "ar1"
    block: int | None = None
    seed: int = 0
    n_surrogates: int | None = None
    mask_events: bool = True
    scales: tuple[float, ...] = (0.25, 0.5, 2.0, 4.0)

    def __post_init__(self) -> None:
        check_positive_int(self.trend_window, "trend_window", minimum=3)
        if self.trend_degree not in (0, 1, 2) or isinstance(self.trend_degree, bool):
            raise ValueError(f"Expected `trend_degree` to be 0, 1 or 2, got {self.trend_degree!r}")
        check_choice(self.noise, "noise", NOISE_MODELS)
        if self.block is not None:
            check_positive_int(self.block, "block")
        check_positive_int(self.seed, "seed", minimum=0)
        if self.n_surrogates is not None:
            check_positive_int(self.n_surrogates, "n_surrogates")
        if not isinstance(self.mask_events, bool):
            raise ValueError(f"Expected `mask_events` to be a bool, got {self.mask_events!r}")
        if isinstance(self.scales, str) or not all(
            check_positive(f, "scales") for f in self.scales
        ):
            raise ValueError(f"Expected `scales` to be positive factors, got {self.scales!r}")
        object.__setattr__(self, "scales", tuple(float(f) for f in self.scales))

    def ladder(self, n: int) -> tuple[int, ...]:
        """Trend windows (samples, ascending, base included) usable on ``n`` samples."""
        tws = {self.trend_window}
        for f in self.scales:
            tw = round(f * self.trend_window)
            if 3 <= tw <= max(3, n // 2):
                tws.add(tw)
        return tuple(sorted(tws))

    def attrs(self) -> dict[str, object]:
        return options_attrs(self)


def field_names(cls: type) -> list[str]:
    """Option names of a dataclass, for error messages."""
    return [f.name for f in fields(cls)]
