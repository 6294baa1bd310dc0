"""The detector registry: adding a detector is one ``DetectorSpec`` line here.

``DEFAULT_DETECTOR`` is the one with the best measured power on the benchmark families
(staircases, ramps, a step in a trend, planted single steps) at nominal false-alarm rates on the
null families; ``dimlapse bench transitions`` measures it (README table).
"""

from __future__ import annotations

from ._detectors import MeanShiftOptions, ZScoreOptions, meanshift, zscore
from ._pelt import PeltOptions, pelt
from ._spec import DetectorSpec

# Vectorised detectors get 200 surrogates; PELT runs ruptures once per surrogate (about 5 ms
# for 1,600 samples), so it gets 50. Below the empirical resolution 1 / (1 + B) p-values come
# from a fitted tail (``_tail``), so B sets the precision, not the floor.
DETECTORS: dict[str, DetectorSpec] = {
    s.name: s
    for s in (
        DetectorSpec(
            "zscore", zscore, ZScoreOptions, lambda o: o.min_periods + 1, 200,
            "the study's rolling z-score rule (trailing window, |z| > threshold)",
        ),
        DetectorSpec(
            "meanshift", meanshift, MeanShiftOptions, lambda o: 2 * o.window, 200,
            "difference of adjacent window means, in noise-model units",
        ),
        DetectorSpec(
            "pelt", pelt, PeltOptions, lambda o: 2 * o.min_size, 50,
            "PELT optimal segmentation of the mean (Killick et al. 2012), ramps merged",
            rowwise=True,  # one ruptures fit per row; the noise scale per row (_pelt)
        ),
    )
}  # fmt: skip
DEFAULT_DETECTOR = "pelt"
ALL_DETECTORS = tuple(DETECTORS)


def spec(name: object) -> DetectorSpec:
    """The registered spec called ``name``; a ValueError listing the names otherwise."""
    if not isinstance(name, str) or name not in DETECTORS:
        raise ValueError(f"Expected `detectors` to be among {ALL_DETECTORS}, got {name!r}")
    return DETECTORS[name]
