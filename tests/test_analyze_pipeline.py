"""End to end: analyze_run on tiny stores written by dimlapse.capture.Recorder."""

import argparse
import itertools
import json
import os

import numpy as np
import pytest
import xarray as xr
import zarr

torch = pytest.importorskip("torch")

from dimlapse.analyze._pipeline import JOBS, analyze_run, run_name, scheduler_context  # noqa: E402
from dimlapse.analyze.report import FIGURES  # noqa: E402
from dimlapse.analyze.report._claims import STUDY  # noqa: E402
from dimlapse.pipelines.cli._analyze import (  # noqa: E402
    add_analyze_arguments,
    add_report_arguments,
    resolve_store,
    run_analyze,
    run_report,
)
from dimlapse.pipelines.cli._main import CLIError  # noqa: E402


@pytest.fixture(scope="module")
def analysed(small_run_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("pipe") / "results"
    tree = analyze_run(
        small_run_store,
        out,
        progress=False,
        n_boot=100,
        metrics=["stable_rank", "effective_rank"],
    )
    return small_run_store, out, tree


def test_tree_opens_with_every_job_and_named_dims(analysed):
    store, out, tree = analysed
    disk = xr.open_datatree(out / "analysis.zarr", engine="zarr")
    assert set(disk.children) == set(disk.attrs["jobs"]) == set(JOBS) - {"formation"}  # no labels
    dim = disk["dimensionality"]["dimensionality"]
    assert dim.dims == ("kind", "layer", "step", "metric")
    assert set(dim["kind"].values) == {"weight", "activation"}
    steps = zarr.open_group(str(store), mode="r")["weights/step"][:]
    np.testing.assert_array_equal(dim["step"].values, steps)  # every snapshot, in order
    assert "detector" in disk["transitions"].dims
    assert {"target", "transform"} <= set(disk["coupling"].dims)
    assert "interval" in disk["sampling"].dims
    assert disk.attrs["run"] == store.name.removesuffix(".zarr")
    assert json.loads(disk["phases"].attrs["parameters"])["tolerance"] == 0.1
    # the saved tree holds the same numbers as the returned one
    xr.testing.assert_allclose(disk["phases"].to_dataset().load(), tree["phases"].to_dataset())


def test_figures_and_report_exist(analysed):
    store, out, tree = analysed
    for name in FIGURES:
        png = out / "figures" / f"{name}.png"
        assert png.stat().st_size > 5_000
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (out / "report.md").read_text()
    assert text.startswith(f"# dimlapse report: {store.name.removesuffix('.zarr')}\n")
    det = tree.attrs["default_detector"]
    assert f"| this run: {det} (stable_rank, layers pooled) | study's rule: zscore |" in text
    # recorded with Recorder alone (no recipe): the setup line names what the store holds
    n_params = tree.attrs["run_model"]["n_parameters"]
    assert f"model mlp in the study, Sequential ({n_params:,} parameters) here" in text
    assert "data MNIST in the study, not recorded here" in text
    assert f"inputs 784 in the study, {tree.attrs['run_probe']['shape'][1]} here" in text
    counts = {}
    for kind in ("activation", "weight"):  # this run's pooled counts, raw beside its null
        t = tree["timing"].to_dataset().sel(kind=kind, metric="stable_rank", detector=det)
        raw, null, sig = (float(t[v].sum()) for v in ("n_raw", "n_null", "n_significant"))
        study = STUDY["counts"] if kind == "activation" else "-"
        cell = f"raw {raw:,.0f} (null {null:,.1f}), significant {sig:,.0f}"
        assert f"| Jumps ({kind}) | {study} | {cell}; " in text  # then the episode count
        counts[kind] = sig
    interpretation = text.split("\n## Interpretation\n")[1].split("\n## ")[0]
    kept = f"{det} keeps {counts['activation']:,.0f} activation and {counts['weight']:,.0f} weight"
    assert kept in interpretation
    cp = tree["coupling"].to_dataset().sel(kind="activation", metric="stable_rank")
    layer = str(cp["layer"].values[0])
    for target in ("loss", "grad_norm"):  # both recorded: both correlated, per layer
        rho = float(cp["rho"].sel(layer=layer, target=target, transform="raw"))
        assert f"{layer}: {rho:+.3f} [" in text


def test_coupling_matches_an_independent_recomputation(analysed):
    store, _, tree = analysed
    from scipy.stats import spearmanr

    from dimlapse.analyze import open_run

    run = open_run(store)
    loss = run.scalars["loss"].values
    steps = run.scalars["step"].values
    dim = tree["dimensionality"]["dimensionality"].sel(kind="activation", metric="stable_rank")
    layer = str(dim["layer"].values[0])
    capture = dim["step"].values
    aligned = [loss[(steps > a) & (steps <= b)].mean() for a, b in itertools.pairwise(capture)]
    expected = spearmanr(dim.sel(layer=layer).values[1:], aligned).statistic
    got = tree["coupling"]["rho"].sel(
        kind="activation", layer=layer, metric="stable_rank", target="loss", transform="raw"
    )
    np.testing.assert_allclose(got.item(), expected, atol=1e-9)


def test_crashed_run_is_analysed_up_to_the_last_complete_snapshot(tiny_run_copy, tmp_path):
    root = zarr.open_group(str(tiny_run_copy), mode="r+")
    root.attrs["status"] = "crashed"
    # a killed writer never closes the run: the rows it wrote are not recorded in `contents`
    root.attrs["contents"] = {"groups": root.attrs["contents"]["groups"]}
    kept = root["weights/step"][:-4]
    for group in ("weights", "activations"):
        step = root[f"{group}/step"]
        step[-4:] = -1  # a kill mid-flush: the last snapshots' index was never written
    tree = analyze_run(
        tiny_run_copy,
        tmp_path / "out",
        progress=False,
        n_boot=50,
        figures=False,
        metrics=["stable_rank"],
        detectors=("zscore",),
    )
    np.testing.assert_array_equal(tree["dimensionality"]["step"].values, kept)
    assert tree.attrs["run_status"] == "crashed"
    # captured every step: the default sampling intervals start at the run's own (1 step),
    # so a run too short for every 5 steps still gets its sampling job
    samp = tree["sampling"]
    assert samp["interval"].values.tolist()[:2] == [1, 5]
    assert samp["n_samples"].values[0] == kept.size


def test_run_name_and_store_resolution(tmp_path):
    assert run_name("data/runs/mlp-mnist1d-s0.zarr") == "mlp-mnist1d-s0"
    assert run_name("memory://x/abc.zarr/") == "abc"
    with pytest.raises(CLIError, match="make capture"):
        resolve_store(None, str(tmp_path))
    with pytest.raises(CLIError, match="No run 'nope'"):
        resolve_store("nope", str(tmp_path))
    (tmp_path / "old.zarr").mkdir()
    (tmp_path / "new.zarr").mkdir()
    os.utime(tmp_path / "old.zarr", (1, 1))
    assert resolve_store(None, str(tmp_path)).endswith("new.zarr")
    assert resolve_store("old", str(tmp_path)).endswith("old.zarr")
    assert resolve_store("memory://a.zarr", str(tmp_path)) == "memory://a.zarr"


def test_cli_analyze_and_report(analysed, tmp_path, capsys):
    store, _, _ = analysed
    parser = argparse.ArgumentParser()
    add_analyze_arguments(parser)
    out = tmp_path / "cli"
    args = parser.parse_args(
        [
            "--run",
            str(store),
            "--out-dir",
            str(out),
            "--no-progress",
            "--n-boot",
            "20",
            "--detectors",
            "zscore",
            "--metrics",
            "stable_rank",
        ]
    )
    assert run_analyze(args) == 0
    written = (out / "report.md").read_text()
    assert "| this run: zscore (stable_rank, layers pooled) | study's rule: not run |" in written
    (out / "report.md").unlink()
    rparser = argparse.ArgumentParser()
    add_report_arguments(rparser)
    assert run_report(rparser.parse_args(["--out-dir", str(out)])) == 0
    assert (out / "report.md").read_text() == written  # re-rendered from analysis.zarr alone
    with pytest.raises(CLIError, match="make analyze"):
        run_report(rparser.parse_args(["--out-dir", str(tmp_path / "none")]))
    with pytest.raises(CLIError, match="make analyze"):
        run_report(rparser.parse_args(["--results-dir", str(tmp_path / "empty")]))


def test_each_group_equals_its_job_run_alone(analysed):
    """One pass for dimensionality (and formation), shared reads, threads: the same numbers as
    each job's public function computed on its own, in the order the jobs documented."""
    from dimlapse.analyze import (
        ALL_DETECTORS,
        comparison,
        coupling,
        dimensionality,
        open_run,
        phases,
        training_dynamics,
        transitions,
    )

    store, _, tree = analysed
    run = open_run(store)
    metrics = ["stable_rank", "effective_rank"]
    dims = dimensionality(run, metrics=metrics).compute()
    xr.testing.assert_allclose(tree["dimensionality"].to_dataset(), dims, rtol=1e-12)
    dim = dims["dimensionality"]
    dim.attrs["every"] = 5
    alone = transitions(dim, detectors=ALL_DETECTORS, alpha=0.05)
    xr.testing.assert_allclose(tree["transitions"].to_dataset(), alone.compute())
    total = float(run.scalars["step"].max())
    expected = {
        "phases": phases(dim),
        "coupling": coupling(dim, run.scalars, n_boot=100),
        "compare": comparison(dim, transitions=alone, total_steps=total),
        "training": training_dynamics(run.scalars),
    }
    for job, ds in expected.items():
        xr.testing.assert_allclose(tree[job].to_dataset(), ds.compute())


def test_job_seconds_count_every_job_run(analysed):
    _, _, tree = analysed
    wall, cpu = tree.attrs["job_seconds"], tree.attrs["job_cpu_seconds"]
    assert list(wall) == list(cpu) == ["dimensionality", *tree.attrs["jobs"][1:]]
    assert all(v >= 0 for v in [*wall.values(), *cpu.values()])


def test_validation_messages(tmp_path):
    with pytest.raises(ValueError, match="`alpha` to be a float"):
        analyze_run(tmp_path / "x.zarr", alpha=2.0)
    with pytest.raises(ValueError, match="`scheduler` to be None"):
        with scheduler_context(42):
            pass


@pytest.mark.slow
def test_distributed_scheduler_gives_the_same_tree(analysed, tmp_path):
    from distributed import LocalCluster

    store, _, tree = analysed
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False) as cluster:
        remote = analyze_run(
            store,
            tmp_path / "dist",
            scheduler=cluster.scheduler_address,
            progress=False,
            n_boot=100,
            metrics=["stable_rank", "effective_rank"],
        )
    for job in ("dimensionality", "phases", "coupling", "compare"):
        xr.testing.assert_allclose(remote[job].to_dataset(), tree[job].to_dataset())
