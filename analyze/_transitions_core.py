"""Calibration core shared by ``find_transitions`` and ``transitions``: parameters, one series
against its surrogates, and the hierarchical false-discovery control across series."""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import numpy as np

from ._detectors import DETECTORS, DIRECTIONS
from ._jobcommon import check_positive_int
from ._surrogates import NOISE_MODELS, surrogates
from ._transitions_ramp import locate
from ._transitions_tail import NO_TAIL, Tail, critical_score, fit_tail, tail_pvalues

CALIBRATION_DEFAULTS: dict[str, object] = {
    "trend_window": 50,
    "trend_degree": 2,
    "noise": "ar1",
    "block": None,
    "seed": 0,
}
# Fast (vectorised) detectors get 200 surrogates; PELT runs ruptures once per surrogate (about
# 5 ms for 1,600 samples), so it gets 50. Below the empirical resolution 1 / (1 + B) p-values
# come from a fitted tail (``_transitions_tail``), so B sets the precision, not the floor.
N_SURROGATES = {"zscore": 200, "meanshift": 200, "pelt": 50}
N_SURROGATES_OTHER = 100


def detector_defaults(name: str) -> dict[str, object]:
    """Keyword defaults of a registered detector."""
    sig = inspect.signature(DETECTORS[name])
    return {k: p.default for k, p in sig.parameters.items() if p.kind is p.KEYWORD_ONLY}


def _check_pos(name: str, v: object) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float | np.number) or not v > 0:
        raise ValueError(f"Expected `{name}` to be a positive number, got {v!r}")
    return float(v)


def _check_choice(name: str, v: object, choices: tuple[str, ...]) -> str:
    if v not in choices:
        raise ValueError(f"Expected `{name}` to be one of {choices}, got {v!r}")
    return str(v)


def validate_param(name: str, v: object) -> object:
    """Validate one detector or calibration parameter by name; return the normalised value."""
    if name in ("window", "trend_window"):
        return check_positive_int(v, name, minimum=3 if name == "trend_window" else 2)
    if name in ("min_periods",):
        return check_positive_int(v, name, minimum=2)
    if name in ("min_size", "n_surrogates"):
        return check_positive_int(v, name, minimum=1)
    if name == "trend_degree":
        if v not in (0, 1, 2) or isinstance(v, bool):
            raise ValueError(f"Expected `trend_degree` to be 0, 1 or 2, got {v!r}")
        return int(v)
    if name == "merge_gap":
        return check_positive_int(v, name, minimum=0)
    if name == "block":
        return None if v is None else check_positive_int(v, name, minimum=1)
    if name == "seed":
        return check_positive_int(v, name, minimum=0)
    if name in ("threshold", "pen_scale"):
        return _check_pos(name, v)
    if name == "penalty":
        return None if v is None else _check_pos(name, v)
    if name == "direction":
        return _check_choice(name, v, DIRECTIONS)
    if name == "model":
        return _check_choice(name, v, ("l2", "rbf"))
    if name == "noise":
        return _check_choice(name, v, NOISE_MODELS)
    return v


def check_alpha(alpha: object) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 < alpha < 1:
        raise ValueError(f"Expected `alpha` to be a number in (0, 1), got {alpha!r}")
    return float(alpha)


def resolve_params(
    detectors: tuple[str, ...], params: dict[str, object]
) -> tuple[dict[str, object], dict[str, dict[str, object]], dict[str, int]]:
    """Split user ``params`` into calibration settings, per-detector settings and surrogate counts.

    A plain name (``window=30``) applies to every detector that takes it; a prefixed name
    (``pelt_window=30``, ``zscore_n_surrogates=500``) to that detector only.
    """
    for d in detectors:
        if d not in DETECTORS:
            raise ValueError(f"Expected `detector` to be one of {tuple(DETECTORS)}, got {d!r}")
    cal = dict(CALIBRATION_DEFAULTS)
    det = {d: detector_defaults(d) for d in detectors}
    nsur = {d: N_SURROGATES.get(d, N_SURROGATES_OTHER) for d in detectors}
    for key, value in params.items():
        prefix, _, rest = key.partition("_")
        targets = [prefix] if prefix in detectors and rest else list(detectors)
        name = rest if prefix in detectors and rest else key
        if name in cal and name not in det[targets[0]]:
            cal[name] = validate_param(name, value)
            continue
        if name == "n_surrogates":
            for d in targets:
                nsur[d] = int(validate_param(name, value))  # type: ignore[call-overload]
            continue
        hit = [d for d in targets if name in det[d]]
        if not hit:
            valid = sorted({*cal, "n_surrogates", *(k for d in detectors for k in det[d])})
            raise ValueError(
                f"Unknown parameter `{key}`={value!r} for detector(s) {detectors}; "
                f"valid names: {valid} (prefix with a detector name to target one)"
            )
        for d in hit:
            det[d][name] = validate_param(name, value)
    for d, p in det.items():
        if "min_periods" in p and "window" in p and p["min_periods"] > p["window"]:  # type: ignore[operator]
            raise ValueError(
                f"Expected `min_periods` <= `window` for detector {d!r}, "
                f"got min_periods={p['min_periods']!r} and window={p['window']!r}"
            )
    return cal, det, nsur


def min_length(name: str, p: dict[str, object]) -> int:
    """Fewest finite samples on which detector ``name`` can fire at all."""
    if name == "zscore":
        return int(p["min_periods"]) + 1  # type: ignore[call-overload]
    if name == "meanshift":
        return 2 * int(p["window"])  # type: ignore[call-overload]
    if name == "pelt":
        return 2 * int(p["min_size"])  # type: ignore[call-overload]
    return 3


@dataclass
class SeriesResult:
    """Calibrated events of one series for one detector (indices into the finite samples)."""

    onset: np.ndarray
    end: np.ndarray
    score: np.ndarray
    sign: np.ndarray
    p_value: np.ndarray
    n_null: float
    critical: float  # a candidate needs a score above this for p <= alpha
    tested: bool
    note: str = ""
    tail: Tail = NO_TAIL  # the fitted tail of the surrogate event scores
    from_tail: np.ndarray | None = None  # (k,) bool: p-value from the tail, not the count


def empty_result(tested: bool, note: str) -> SeriesResult:
    z = np.zeros(0, dtype=np.int64)
    return SeriesResult(z, z, np.zeros(0), z, np.zeros(0), np.nan, np.nan, tested, note)


def calibrate_series(
    x: np.ndarray,
    detectors: dict[str, dict[str, object]],
    nsur: dict[str, int],
    cal: dict[str, object],
    rng: np.random.Generator,
    alpha: float,
) -> tuple[dict[str, SeriesResult], dict[str, float]]:
    """Run each detector on ``x`` (finite, (n,)) and on shared surrogates; max-statistic p-values.

    p = (1 + #{surrogates whose largest event score >= the candidate's}) / (1 + n_surrogates),
    or, where fewer than 10 surrogate maxima reach the candidate, ``1 - exp(-Lambda(score))``
    from a generalized Pareto tail fitted to the surrogate maxima (``_transitions_tail``).
    """
    ok = {d: x.size >= max(min_length(d, p), 3) for d, p in detectors.items()}
    out = {
        d: empty_result(False, f"{x.size} finite samples; {d} needs {min_length(d, p)}")
        for d, p in detectors.items()
        if not ok[d]
    }
    todo = [d for d in detectors if ok[d]]
    if not todo:
        return out, {}
    _, y, info = surrogates(
        x,
        n_surrogates=max(nsur[d] for d in todo),
        trend_window=int(cal["trend_window"]),  # type: ignore[call-overload]
        rng=rng,
        noise=str(cal["noise"]),
        block=cal["block"],  # type: ignore[arg-type]
        degree=int(cal["trend_degree"]),  # type: ignore[call-overload]
    )
    for d in todo:
        fn, p, b = DETECTORS[d], detectors[d], nsur[d]
        obs = fn(x, **p)
        null = fn(y[:b], **p)
        null_max = null.max_per_row(b)  # (b,)
        tail = fit_tail(null_max)
        p_value, from_tail = tail_pvalues(obs.score, null_max, tail)
        onset, end = locate(x, obs.start, obs.stop, obs.peak, obs.margin)
        out[d] = SeriesResult(
            onset=onset,
            end=end,
            score=obs.score,
            sign=obs.sign,
            p_value=p_value,
            n_null=float(null.count_per_row(b).mean()),
            critical=critical_score(null_max, tail, alpha),
            tested=True,
            tail=tail,
            from_tail=from_tail,
        )
    return out, info


def bh_adjust(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg (1995) adjusted p-values: q_(i) = min_{j >= i} m p_(j) / j, <= 1."""
    p = np.asarray(p, dtype=np.float64)
    m = p.size
    if m == 0:
        return p.copy()
    order = np.argsort(p)
    scaled = p[order] * m / np.arange(1, m + 1)
    q = np.minimum.accumulate(scaled[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(q, 1.0)
    return out


def hierarchical_fdr(p_series: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Select series by BH on their series-level p-values, then the within-series level.

    Returns ``(q_series, selected, level)``: a candidate of a selected series is significant
    when its (family-wise, max-statistic) p-value is <= ``level = alpha * R / m`` (Benjamini and
    Bogomolov 2014), R the number of selected series among the m tested.
    """
    q = bh_adjust(p_series)
    selected = q <= alpha
    m = p_series.size
    level = alpha * int(selected.sum()) / m if m else 0.0
    return q, selected, level
