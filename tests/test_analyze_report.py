"""Figures and report.md from a synthetic analysis DataTree with known numbers."""

import re

import numpy as np
import pytest
import xarray as xr

from dimlapse.analyze import comparison
from dimlapse.analyze._pipeline import save_tree
from dimlapse.analyze.jobs._claims import STUDY
from dimlapse.analyze.jobs._coupling import coupling
from dimlapse.analyze.jobs._phases import phases
from dimlapse.analyze.jobs._timing import timing
from dimlapse.analyze.jobs._training import find_spikes, training_dynamics
from dimlapse.analyze.report import (
    FIGURES,
    claims_table,
    headline,
    render_figures,
    report_markdown,
    write_report,
)
from dimlapse.analyze.report._claims import phase_cell

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
    rng = np.random.default_rng(1)
    loss = np.exp(-opt / 2000 + 0.02 * rng.standard_normal(opt.size))
    loss[(opt >= 5990) & (opt <= 6010)] *= 7.0  # a loss spike around fc2's transition at 6000
    acc = np.where(opt % 50 == 0, 0.7, np.nan)
    scalars = xr.Dataset(
        {
            "loss": ("step", loss),
            "grad_norm": ("step", np.exp(-opt / 4000)),
            "test_accuracy": ("step", acc),
        },
        coords={"step": opt},
    )
    attrs = {"run": "synthetic", "alpha": 0.05, "run_status": "complete", "run_every": 50}
    attrs |= {
        "run_config": {"model": "mlp", "steps": 8000},
        "run_dataset": {"name": "mnist1d", "input_shape": [1, 40]},
        "default_detector": "pelt",
    }
    return xr.DataTree.from_dict(
        {
            "/": xr.Dataset(attrs=attrs),
            "dimensionality": xr.Dataset({"dimensionality": dim}),
            "transitions": trans,
            "phases": phases(dim),
            "timing": timing(trans, total_steps=8000),
            "coupling": coupling(dim, scalars, n_boot=50),
            "sampling": _sampling(trans),
            "compare": comparison(dim, transitions=trans),
            "training": training_dynamics(scalars),
        }
    )


def test_headline_is_the_recorded_default_detector_never_the_study_rule(tree):
    assert headline(tree) == ("stable_rank", "pelt")
    bare = tree.copy()
    bare.attrs = {k: v for k, v in tree.attrs.items() if k != "default_detector"}
    assert headline(bare)[1] != "zscore"  # the API's default, or a calibrated detector


def test_claims_numbers_match_the_fixture(tree):
    table, n = claims_table(tree)
    assert (n["a_raw"], n["a_sig"], n["a_null"]) == (4, 3, 5.0)
    assert (n["w_raw"], n["w_sig"]) == (0, 0)
    assert n["early_sig"] == pytest.approx(2 / 3)
    rho = tree["coupling"]["rho"].sel(kind="activation", metric="stable_rank", transform="raw")
    assert n["loss_raw_abs"] == pytest.approx(np.median(np.abs(rho.sel(target="loss").values)))
    assert n["grad_raw_abs"] == pytest.approx(np.median(np.abs(rho.sel(target="grad_norm").values)))
    assert n["same"] == 2  # both activation layers: collapse, expansion, stabilisation
    assert n["finest_sig"] == 6  # 3 per layer summed over two layers at interval 50
    assert n["coarse_found"] == pytest.approx(np.mean([4, 2]))
    assert table.count("\n") == 13  # header, rule, 6 claims x 2 spaces
    assert "raw 4 (null 5.0), significant 3; 3 episodes" in table
    assert "| this run: pelt (stable_rank, layers pooled) | study's rule: zscore |" in table
    weight_jumps = "raw 0 (null 5.0), significant 0"  # no weight transitions, same null
    assert f"| Jumps (weight) | - | {weight_jumps}; 0 episodes | {weight_jumps} |" in table
    assert "| Timing (weight) | - | no significant transition | no significant" in table
    # 30 -> 28 with noise: a 7 % decline, labelled collapse where a phase moves >= 1 % of level
    assert "| Phases (weight) | - | fc1: collapse 0-" in table
    # 3 activation vs 0 weight episodes: P(3 of 3 | equal rates) = 1/8, not significant
    assert "| Jumps (activation) |" in table and "**inconclusive**: share of all episodes" in table
    assert "p = 0.12, interval [0.29, 1.00], n = 3 episodes" in table


def test_report_markdown_sections_and_interpretation(tree):
    text = report_markdown(tree)
    assert text.startswith("# dimlapse report: synthetic")
    for label, key, cell in (  # each study claim beside this run's numbers, in its row
        ("Jumps (activation)", "counts", "raw 4 (null 5.0), significant 3; 3 episodes"),
        ("Timing (activation)", "timing", "67 % of significant"),
        ("Sampling (activation)", "sampling", "every 50: 6, every 100: 4, every 1000: 2"),
    ):
        assert f"| {label} | {STUDY[key]} | {cell} |" in text
    interpretation = text.split("\n## Interpretation\n")[1].split("\n## ")[0]
    assert "no more than about what the same rule finds" in interpretation  # 4 raw, 5 null
    assert "3 activation and 0 weight episodes" in interpretation
    assert "timing (activation): inconclusive; 2 of 3 episodes early." in interpretation


def test_setup_difference_is_stated_before_the_claims(tree):
    text = report_markdown(tree)
    setup = text.index("**Setup differs from the study.**")
    assert setup < text.index("## The study's claims")
    assert "inputs 784 in the study, 40 here" in text and "data MNIST in the study, mnist1d" in text
    assert "model mlp in the study" not in text  # the same architecture family is no difference


def test_rho_verdicts_follow_the_differenced_intervals(tree):
    text = report_markdown(tree)
    cp = tree["coupling"].to_dataset()
    for target, label in (("loss", "rho(loss)"), ("grad_norm", "rho(grad norm)")):
        for kind in ("activation", "weight"):
            d = cp.sel(kind=kind, metric="stable_rank", target=target, transform="diff")
            verdict = "reproduced" if (d.rho_high.values < 0).all() else "not reproduced"
            row = next(x for x in text.splitlines() if x.startswith(f"| {label} ({kind}) |"))
            assert f"**{verdict}**: median differenced rho" in row
    # weight trajectories fall with the loss (raw rho +0.99) but their differences do not move
    # with it: not the study's negative coupling
    assert "| rho(loss) (weight) |" in text


def test_training_spike_is_found_and_the_transition_in_it_labelled(tree):
    tr = tree["training"].to_dataset()
    start = tr["spike_start"].sel(target="loss").values
    end = tr["spike_end"].sel(target="loss").values
    assert np.isfinite(start).sum() == 1 and (start[0], end[0]) == (5990, 6010)
    assert np.isfinite(tr["spike_start"].sel(target="grad_norm").values).sum() == 0
    text = report_markdown(tree)
    assert "1 loss spike(s) at steps 5,990-6,010" in text
    assert "3 notable activation episode(s): 1 during a loss spike; 2 in quiet training." in text
    assert "(zscore, the study's rule, any layer or metric) coincide" in text
    assert "6,000 (loss spike)" in text
    assert "held-out accuracy 0.700" in text


@pytest.mark.parametrize("seed", range(5))
def test_find_spikes_recovers_planted_spikes_and_nothing_else(seed):
    rng = np.random.default_rng(seed)
    steps = np.arange(3000.0)
    clean = np.exp(-steps / 800 + 0.05 * rng.standard_normal(steps.size))
    assert find_spikes(steps, clean) == []
    spiky = clean.copy()
    spiky[1000:1004] *= 4.0
    spiky[2500:2520] *= 10.0
    found = sorted((a, b) for a, b, _ in find_spikes(steps, spiky))
    assert found == [(1000.0, 1003.0), (2500.0, 2519.0)]


def test_a_change_faster_than_the_phases_resolve_is_not_labelled():
    steps = np.arange(0, 2001, 5.0)
    fast = np.where(steps < 100, 30.0, 5.0) + np.linspace(0, 3, steps.size)  # 30 -> 5 at once
    data = np.stack([fast, np.linspace(30, 25, steps.size)])[None, :, :, None]
    dim = xr.DataArray(
        data,
        dims=("kind", "layer", "step", "metric"),
        coords={
            "kind": ["activation"],
            "layer": ["fast", "slow"],
            "step": steps,
            "metric": ["stable_rank"],
        },
    )
    trans = xr.Dataset(
        {
            "step": (
                ("kind", "layer", "metric", "detector", "transition"),
                np.full((1, 2, 1, 1, 1), np.nan),
            )
        },
        coords={
            "kind": ["activation"],
            "layer": ["fast", "slow"],
            "metric": ["stable_rank"],
            "detector": ["pelt"],
        },
    )
    mini = xr.DataTree.from_dict(
        {
            "dimensionality": xr.Dataset({"dimensionality": dim}),
            "transitions": trans,
            "phases": phases(dim),
        }
    )
    cell, same, n = phase_cell(mini, "activation")
    fast_cell, slow_cell = cell.split("; ")
    assert "unresolved 0-" in fast_cell and "faster than the phases resolve" in fast_cell
    assert "unresolved" not in slow_cell and "collapse" in slow_cell
    assert (same, n) == (0, 2)


def test_figures_and_report_round_trip_through_zarr(tree, tmp_path):
    save_tree(tree, tmp_path / "analysis.zarr")
    disk = xr.open_datatree(tmp_path / "analysis.zarr", engine="zarr").load()
    paths = render_figures(disk, tmp_path / "figures")
    assert set(paths) == set(FIGURES)
    for p in paths.values():
        assert p.read_bytes()[:4] == b"\x89PNG"
    write_report(disk, tmp_path / "report.md")
    text = (tmp_path / "report.md").read_text()
    assert text == report_markdown(tree)
    linked = re.findall(r"\]\(figures/(\w+)\.png\)", text)
    assert sorted(linked) == sorted(p.stem for p in paths.values())  # every figure, no other


def test_figures_in_forked_workers_are_the_same_bytes_as_in_one_process(tree, tmp_path):
    serial = render_figures(tree, tmp_path / "one", workers=1)
    forked = render_figures(tree, tmp_path / "two", workers=2)
    assert list(forked) == list(serial) == list(FIGURES)  # the documented order
    for name, path in serial.items():
        assert forked[name].parent == tmp_path / "two"
        assert path.read_bytes() == forked[name].read_bytes(), name
    with pytest.raises(ValueError, match="`workers`"):
        render_figures(tree, tmp_path / "three", workers=0)


def test_short_run_warning_accuracy_window_and_formation(tree, tmp_path):
    steps = STEPS.astype(float)
    opt = np.arange(1, 8001)
    acc = np.where(opt % 50 == 0, np.where(opt < 1480, 0.1, 0.9), np.nan)  # jumps at 1,500
    scalars = (
        tree["training"].to_dataset()[["loss", "grad_norm"]].assign(test_accuracy=("step", acc))
    )
    dec = np.clip((steps[:, None] - 1000) / 2000, 0.1, 0.9) * np.ones((1, 2))  # (step, layer)
    form = xr.Dataset(
        {
            "decodability": (("step", "layer"), dec),
            "formation_step": (("layer", "fraction"), [[2000.0, 2800.0], [2000.0, np.nan]]),
            "chance": ((), 0.1),
        },
        coords={"step": steps, "layer": LAYERS, "fraction": [0.5, 0.9]},
    )
    trans = tree["transitions"].to_dataset()
    trans["step"] = trans["step"].where(trans["step"] != 1500.0, 1510.0)  # fc1's second event
    groups = {k: tree[k].to_dataset() for k in tree.children}
    groups |= {"training": training_dynamics(scalars), "formation": form, "transitions": trans}
    groups.pop("claims", None)
    attrs = dict(tree.attrs)
    long = xr.DataTree.from_dict({"/": xr.Dataset(attrs=attrs), **groups})
    text = report_markdown(long)
    assert "> **Warning:**" not in text
    assert "half of the rise by step 1,500 (t50), 90 % by step 1,500 (t90); 1 notable" in text
    assert "inside that window: 1,510-1,510 (activation)." in text
    assert "- fc1: probe decodability 0.10 -> 0.90; formation 50% at step 2,000, 90% at " in text
    assert (
        "- fc2: probe decodability 0.10 -> 0.90; formation 50% at step 2,000, 90% at step n/a"
        in text
    )
    paths = render_figures(long, tmp_path / "figures")
    assert paths["formation"].read_bytes()[:4] == b"\x89PNG"
    assert "![formation](figures/formation.png)" in text
    first = {k: v.isel(step=slice(0, 17)) if "step" in v.dims else v for k, v in groups.items()}
    first["timing"] = groups["timing"]
    first["phases"] = phases(tree["dimensionality"]["dimensionality"].isel(step=slice(0, 17)))
    short = xr.DataTree.from_dict({"/": xr.Dataset(attrs=attrs), **first})
    warned = report_markdown(short)
    assert warned.splitlines()[2].startswith("> **Warning:** this run has 17 snapshots; the jobs")
    assert warned.count("**inconclusive**") == 12 and "**reproduced**" not in warned


@pytest.mark.parametrize(
    ("last", "attrs", "flagged"),
    [
        (0.0, {"probe_examples": 512, "classes": 97}, True),  # p = (96/97)^512 = 0.005
        (4 / 512, {"probe_examples": 512, "classes": 97}, False),  # 4 hits, 5.3 expected
        (0.0, {}, False),  # an analysis from before the probe size was stored
    ],
)
def test_formation_lines_flag_decoding_below_a_uniform_guess(last, attrs, flagged):
    from dimlapse.analyze.report._context import formation_lines

    steps = np.arange(0, 50, 5.0)
    dec = np.stack([np.full(steps.size, 0.3), np.full(steps.size, last)], axis=1)
    form = xr.Dataset(
        {
            "decodability": (("step", "layer"), dec),
            "formation_step": (("layer", "fraction"), np.full((2, 2), np.nan)),
            "chance": ((), 0.02, attrs),
        },
        coords={"step": steps, "layer": ["good", "lost"], "fraction": [0.5, 0.9]},
    )
    lines = formation_lines(xr.DataTree.from_dict({"/": xr.Dataset(), "formation": form}))
    below = [line for line in lines if line.startswith("- Below a uniform guess")]
    if not flagged:
        assert below == []
        return
    [line] = below
    assert "among the 97 classes (0.010) at the last step: lost (0.00, p = 0.005);" in line
    assert "good" not in line and "512 probe examples against 1/97" in line
