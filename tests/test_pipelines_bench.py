"""Benchmarks: the interleaving and ratio arithmetic, and quick runs of both scripts (slow)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dimlapse.pipelines.bench._capture import format_report, interleave, run_benchmark, summarise

ROOT = Path(__file__).resolve().parents[1]


def test_interleave_rotates_arm_order_per_block():
    calls = []
    arms = {n: (lambda n=n: calls.append(n)) for n in ("a", "b", "c")}
    times = interleave(arms, blocks=3, steps=2)
    assert "".join(calls) == "aabbcc" + "bbccaa" + "ccaabb"
    assert {k: [len(b) for b in v] for k, v in times.items()} == {k: [2, 2, 2] for k in "abc"}


def test_summarise_block_paired_ratios_against_hand_computed_values():
    times = {
        "plain": [[1.0, 1.0], [2.0, 2.0], [1.0, 3.0]],
        "arm": [[1.0, 2.0], [2.0, 4.0], [2.0, 2.0]],
    }
    s = summarise(times)
    # per-block mean ratios 1.5, 1.5, 1.0 -> median 1.5
    assert s["arm"]["ratio"] == pytest.approx(1.5)
    assert s["plain"]["ratio"] == pytest.approx(1.0)
    assert s["arm"]["median_ms"] == pytest.approx(2000.0)
    assert s["arm"]["mean_ms"] == pytest.approx(1e3 * 13 / 6)
    assert s["arm"]["p99_ms"] == pytest.approx(4000.0)  # the largest of six values
    assert s["arm"]["ratio_of_medians"] == pytest.approx(2.0 / 1.5)


@pytest.mark.slow
def test_quick_bench_capture_runs_and_reports(tmp_path):
    result = run_benchmark(
        blocks=2, steps=20, warmup=5, codec_steps=20, feed_steps=50, large=False, root=tmp_path
    )
    arms = result["arms"]
    assert set(arms) >= {"plain", "full", "weights", "spectra", "floor", "busy-process"}
    assert arms["plain"]["ratio"] == 1.0 and arms["full"]["ratio"] > 0
    assert arms["full"]["writer"] == "process"  # a local store: the writer process
    assert arms["full"]["bytes_per_snapshot"] > arms["spectra"]["bytes_per_snapshot"] > 0
    z = result["codecs"]
    assert z["lz4"]["snapshots"] == 5  # step 0 and every 5 of 20 steps
    assert z["float16"]["compression_ratio"] > 1.8  # float32 -> float16 halves the bytes
    assert set(result["feed"]) == {"full", "weights", "spectra", "weights 40-in"}
    assert result["feed"]["weights"]["writer_ms"] > 0
    text = format_report(result)
    for arm in ("full", "floor"):  # each arm's row carries its measured ratio
        assert f"{arm:<14} {arms[arm]['ratio']:>6.3f}x" in text
    assert f"{'bitround-10':<12} {z['bitround-10']['bytes_per_snapshot']:>15,.0f}" in text


@pytest.mark.slow
def test_bench_capture_through_the_cli(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "dimlapse", "bench", "capture", "--blocks", "1",
         "--steps", "10", "--warmup", "0", "--codec-steps", "10", "--no-ndtracker",
         "--json", str(tmp_path / "b.json")],
        capture_output=True, text=True, cwd=tmp_path, check=True,
    )  # fmt: skip
    arms = json.loads((tmp_path / "b.json").read_text())["arms"]
    assert f"{'full':<14} {arms['full']['ratio']:>6.3f}x" in out.stdout  # the saved numbers


@pytest.mark.slow
def test_bench_gpu_dry_run_on_cpu():
    out = subprocess.run(
        [sys.executable, "-m", "dimlapse.pipelines.bench.gpu", "--dry-run"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    for model in ("resnet18", "vit"):  # the dry run's tiny configuration, then measured ratios
        line = f"{model}: batch 4, every 5, probe 8: plain "
        assert re.search(rf"^{line}[\d.]+ ms/step; dimlapse [\d.]+x, ", out.stdout, re.M)


def test_bench_gpu_refuses_cuda_when_absent(capsys):
    import torch

    from dimlapse.pipelines.cli import main

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert main(["bench", "gpu"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def _arm(wall, cpu, jobs):
    return {"wall": wall, "cpu": cpu, "load": 0.5, "jobs": jobs}


def test_analyze_comparison_sums_the_first_pass_and_names_the_gap():
    from dimlapse.pipelines.bench._analyze_e2e import format_comparison

    base_jobs = {"dimensionality": 3.0, "transitions": 20.0, "formation": 5.0}
    new_jobs = {"dimensionality+formation": 4.0, "transitions": 20.0}
    results = {
        "default": {"new": [_arm(40.0, 70.0, new_jobs)], "base": [_arm(50.0, 90.0, base_jobs)]},
        "small": {"new": [_arm(4.0, 6.0, {"transitions": 1.0})], "base": []},
    }
    text = format_comparison(results, {"default": Path("d.zarr"), "small": Path("s.zarr")})
    # the previous version's two jobs are one row beside this version's one pass: 8 s vs 4 s
    assert re.search(r"dimensionality\+formation\s+8\.00\s+4\.00\s+2\.00x", text)
    # 40 s - 24 s of jobs: the rest is imports, saving and figures
    assert re.search(r"imports, save, figures\s+22\.00\s+16\.00", text)
    assert "target <= 30 s: NOT met, gap 10.0 s; largest: transitions 20.0 s" in text
    assert "CPU time / " in text and "target <= 5 s: met (4.0 s)" in text


def test_analyze_comparison_reads_jobs_and_rest_from_one_run():
    from dimlapse.pipelines.bench._analyze_e2e import format_comparison

    # three runs: the first one slow; the median run (50 s, 40 s of jobs) gives the rows
    runs = [
        _arm(70.0, 100.0, {"transitions": 60.0}),
        _arm(50.0, 90.0, {"transitions": 40.0}),
        _arm(48.0, 88.0, {"transitions": 45.0}),
    ]
    text = format_comparison({"default": {"new": runs, "base": []}}, {"default": Path("d.zarr")})
    assert re.search(r"wall, s\s+-\s+50\.00", text)
    assert re.search(r"  transitions\s+-\s+40\.00", text)
    assert re.search(r"imports, save, figures\s+-\s+10\.00", text)


@pytest.mark.slow
def test_analyze_end_to_end_times_every_job_of_a_real_run(tiny_run_store):
    from dimlapse.pipelines.bench._analyze_e2e import compare

    res = compare({"small": tiny_run_store}, base=None)["small"]
    (new,) = res["new"]
    assert res["base"] == [] and new["wall"] > 0 and new["cpu"] > 0
    # no probe labels in this run: no formation job, so dimensionality has its own entry
    assert {"dimensionality", "transitions", "sampling"} <= set(new["jobs"])
    assert new["jobs_cpu"].keys() == new["jobs"].keys()


def test_analyze_gap_lines_say_each_cause_and_its_control():
    from dimlapse.pipelines.bench._analyze_gap import format_gap

    g = {
        "cores": 2,
        "first_pass": {"spectra + metrics": (10.0, 18.0), "formation": (6.0, 11.0)},
        "transitions": {
            "wall": 50.0,
            "cpu": 48.0,
            "fits": 1000.0,
            "ruptures_cpu": 12.0,
            "bare_ms_per_fit": 11.5,
            "n": 1601.0,
            "series": 54.0,
        },
        "imports": (2.0, 1.8),
        "figures": (5.0, 4.9),
    }
    text = "\n".join(format_gap("default", g))
    assert "CPU / 2 cores" in text and "floor on 2 cores 24.0 s" in text
    # 12 s of 48 s in the C fits, 12 ms per fit in the job against 11.5 ms replayed bare
    assert "1000 fits of 1601 samples over 54 series, 12.0 s CPU (25 %), 12.00 ms" in text
    assert "replayed on bare KernelCPD: 11.50 ms per fit" in text
    assert re.search(r"first pass, formation\s+wall\s+6\.0 s\s+CPU\s+11\.0 s", text)


@pytest.mark.slow
def test_analyze_gap_controls_run_on_a_real_result(tiny_run_store, tmp_path):
    from dimlapse.pipelines.bench._analyze_e2e import compare
    from dimlapse.pipelines.bench._analyze_gap import gap

    res = compare({"small": tiny_run_store}, base=None, work=tmp_path)["small"]
    g = gap(tiny_run_store, res["new"][0]["out"] / "analysis.zarr")
    t = g["transitions"]
    # every PELT fit of the serial rerun is counted, and its C time is part of the job's CPU
    assert t["fits"] > 0 and 0 < t["ruptures_cpu"] <= t["cpu"] and t["bare_ms_per_fit"] > 0
    assert t["series"] == float(np.prod([n for d, n in _dims(res).items() if d != "step"]))
    assert {"spectra + metrics", "TwoNN + stable rank"} <= set(g["first_pass"])
    assert all(w > 0 and c > 0 for w, c in (g["imports"], g["figures"]))


def _dims(res) -> dict[str, int]:
    import xarray as xr

    tree = xr.open_datatree(res["new"][0]["out"] / "analysis.zarr", engine="zarr")
    return dict(tree["dimensionality"].to_dataset()["dimensionality"].sizes)
