"""Figures and report.md from a synthetic analysis DataTree with known numbers."""

import numpy as np
import pytest
import xarray as xr

from dimlapse.analyze._compare import compare
from dimlapse.analyze._coupling import coupling
from dimlapse.analyze._figures import FIGURES, headline, render_figures
from dimlapse.analyze._phases import phases
from dimlapse.analyze._pipeline import save_tree
from dimlapse.analyze._report import claims_table, report_markdown, write_report
from dimlapse.analyze._timing import timing

STEPS = np.arange(0, 8001, 50)
LAYERS = ["fc1", "fc2"]
KINDS = ["activation", "weight"]
METRICS = ["stable_rank", "participation_ratio"]
DETECTORS = ["zscore", "pelt"]


def _dim():
    rng = np.random.default_rng(0)
    act = np.interp(STEPS, [0, 300, 5000, 8000], [20, 5, 40, 40])
    wt = np.linspace(30, 28, STEPS.size)
    data = np.empty((2, 2, STEPS.size, 2))
    data[0] = act[None, :, None] + rng.normal(0, 0.2, (2, STEPS.size, 2))
    data[1] = wt[None, :, None] + rng.normal(0, 0.05, (2, STEPS.size, 2))
    return xr.DataArray(
        data,
        dims=("kind", "layer", "step", "metric"),
        coords={"kind": KINDS, "layer": LAYERS, "step": STEPS, "metric": METRICS},
        name="dimensionality",
    )


def _transitions():
    # activation fc1: 3 raw (2 significant, both early), fc2: 1 raw significant late;
    # weight: nothing. n_null 2.5 per series.
    shape = (2, 2, 2, 2, 3)  # kind, layer, metric, detector, transition
    step = np.full(shape, np.nan)
    sig = np.zeros(shape, dtype=bool)
    step[0, 0, :, :, :3] = [[[100, 1500, 4000]]]
    sig[0, 0, :, :, :2] = True
    step[0, 1, :, :, 0] = 6000
    sig[0, 1, :, :, 0] = True
    dims = ("kind", "layer", "metric", "detector", "transition")
    return xr.Dataset(
        {
            "step": (dims, step),
            "significant": (dims, sig),
            "n_null": (dims[:-1], np.full(shape[:-1], 2.5)),
        },
        coords={"kind": KINDS, "layer": LAYERS, "metric": METRICS, "detector": DETECTORS},
    )


def _sampling(trans):
    intervals = [50, 100, 1000]
    base = xr.Dataset(
        {
            v: (("kind", "layer", "metric", "detector"), np.ones((2, 2, 2, 2)))
            for v in ("n_raw", "n_significant", "n_null", "n_base_found")
        },
        coords=trans[["kind", "layer", "metric", "detector"]].coords,
    )
    out = xr.concat([base * (3 - i) for i in range(3)], dim="interval")
    out = out.assign_coords(interval=intervals)
    out["effective_interval"] = ("interval", intervals)
    out["n_samples"] = ("interval", [161, 81, 9])
    return out


@pytest.fixture(scope="module")
def tree():
    dim = _dim()
    trans = _transitions()
    opt = np.arange(1, 8001)
    scalars = xr.Dataset(
        {"loss": ("step", np.exp(-opt / 2000)), "grad_norm": ("step", np.exp(-opt / 4000))},
        coords={"step": opt},
    )
    return xr.DataTree.from_dict(
        {
            "/": xr.Dataset(
                attrs={"run": "synthetic", "alpha": 0.05, "run_status": "complete", "run_every": 50}
            ),
            "dimensionality": xr.Dataset({"dimensionality": dim}),
            "transitions": trans,
            "phases": phases(dim),
            "timing": timing(trans, 8000),
            "coupling": coupling(dim, scalars, n_boot=50),
            "sampling": _sampling(trans),
            "compare": compare(dim, trans),
        }
    )


def test_headline_is_stable_rank_and_zscore(tree):
    assert headline(tree) == ("stable_rank", "zscore")


def test_claims_numbers_match_the_fixture(tree):
    table, n = claims_table(tree)
    assert (n["a_raw"], n["a_sig"], n["a_null"]) == (4, 3, 5.0)
    assert (n["w_raw"], n["w_sig"]) == (0, 0)
    assert n["early_raw"] == pytest.approx(2 / 4)  # cutoff 2000: steps 100, 1500
    assert n["early_sig"] == pytest.approx(2 / 3)
    assert n["same"] == 2  # both activation layers: collapse, expansion, stabilisation
    assert n["finest_sig"] == 6  # 3 per layer summed over two layers at interval 50
    assert n["coarse_found"] == pytest.approx(np.mean([4, 2]))
    assert table.count("\n") == 7  # header, rule, six claims
    assert "raw 4, significant 3" in table
    assert "activation 5.0" in table


def test_report_markdown_sections_and_interpretation(tree):
    text = report_markdown(tree)
    assert text.startswith("# dimlapse report: synthetic")
    for claim in ("-0.951", "-0.701", "~85", "two thirds", "collapse 0-300", "coarse sampling"):
        assert claim in text
    assert "## Interpretation" in text
    assert "no more than about what the same rule finds" in text  # 4 raw, 5 null
    assert "67% of the significant activation transitions" in text
    for f in FIGURES:
        assert f"figures/{f}.png" in text


def test_figures_and_report_round_trip_through_zarr(tree, tmp_path):
    save_tree(tree, tmp_path / "analysis.zarr")
    disk = xr.open_datatree(tmp_path / "analysis.zarr", engine="zarr").load()
    paths = render_figures(disk, tmp_path / "figures")
    assert set(paths) == set(FIGURES)
    for p in paths.values():
        assert p.read_bytes()[:4] == b"\x89PNG"
    write_report(disk, tmp_path / "report.md")
    assert (tmp_path / "report.md").read_text() == report_markdown(tree).replace(
        "synthetic", "synthetic"
    )
