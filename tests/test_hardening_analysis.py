"""Hardening of the analysis side: damaged, short or hostile inputs fail clearly, or are reported.

Each test reproduces a case that was analysed silently, crashed with a bare error, hung, or
wrote outside ``data/results/<run>/``.
"""

import re
import socket
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import xarray as xr
import zarr
from conftest import record_tiny_run

from dimlapse.analyze import (
    SPECTRAL_METRICS,
    DegenerateSpectrumWarning,
    dimensionality,
    open_run,
    sampling,
)
from dimlapse.analyze._integrity import StoreIntegrityError
from dimlapse.analyze._pipeline import analyze_run, run_name
from dimlapse.pipelines.cli._main import main

CHUNK = 8  # the tiny run's chunk length along `step` (steps 0..40, every 1)


def _chunk(store, array, i):
    return store / "weights" / array / "c" / str(i) / "0" / "0"


# --- corrupt data is never analysed -------------------------------------------------------


def test_flipped_bytes_fail_the_checksum_naming_array_and_steps(tiny_run_copy):
    f = _chunk(tiny_run_copy, "0.weight", 1)
    data = bytearray(f.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 64] = bytes(b ^ 0xFF for b in data[mid : mid + 64])
    f.write_bytes(bytes(data))
    run = open_run(tiny_run_copy)  # metadata is intact: opening works
    with pytest.raises(StoreIntegrityError, match=r"weights/0\.weight: .*steps 8-15"):
        run.weights["0.weight"].values  # noqa: B018


def test_truncated_chunk_names_array_and_steps(tiny_run_copy):
    f = _chunk(tiny_run_copy, "2.weight", 2)
    f.write_bytes(f.read_bytes()[:7])
    with pytest.raises(StoreIntegrityError, match=r"weights/2\.weight: .*steps 16-23"):
        open_run(tiny_run_copy).weights["2.weight"].values  # noqa: B018


def test_analyze_run_refuses_a_corrupt_chunk(tiny_run_copy, tmp_path):
    f = _chunk(tiny_run_copy, "0.weight", 0)
    f.write_bytes(f.read_bytes()[:-3])
    with pytest.raises(StoreIntegrityError, match=r"weights/0\.weight: .*steps 0-7"):
        analyze_run(tiny_run_copy, tmp_path / "out", progress=False, figures=False)
    assert not (tmp_path / "out" / "analysis.zarr").exists()


def test_missing_chunk_of_a_complete_run_is_refused_on_open(tiny_run_copy):
    _chunk(tiny_run_copy, "0.weight", 3).unlink()
    with pytest.raises(StoreIntegrityError, match=r"weights/0\.weight: .*steps 24-31.*missing"):
        open_run(tiny_run_copy)


def test_corrupt_root_metadata_is_a_clear_error(tiny_run_copy):
    meta = tiny_run_copy / "zarr.json"
    meta.write_text(meta.read_text()[:40])
    with pytest.raises(StoreIntegrityError, match=r"zarr\.json.*damaged"):
        open_run(tiny_run_copy)


def test_cli_reports_corruption_in_one_line(tiny_run_copy, tmp_path, capsys):
    (tiny_run_copy / "zarr.json").write_text("{")
    status = main(["analyze", "--run", str(tiny_run_copy), "--out-dir", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert status == 2 and len(err.splitlines()) == 1 and "zarr.json" in err


# --- short and crashed runs ---------------------------------------------------------------


def test_short_run_is_refused_with_the_snapshot_count_needed(tmp_path):
    store = record_tiny_run(tmp_path / "short.zarr", steps=3)
    with pytest.raises(ValueError, match=r"has 4 complete snapshot\(s\).*at least 10"):
        analyze_run(store, tmp_path / "out", progress=False)


def test_crashed_run_with_no_snapshot_is_refused(tiny_run_copy, tmp_path):
    root = zarr.open_group(str(tiny_run_copy), mode="r+")
    for group in ("weights", "activations", "scalars", "state"):
        if group in root and "step" in root[group]:
            step = root[group]["step"]
            step[:] = -np.ones(step.shape, dtype=step.dtype)  # crashed before any index write
    root.attrs["status"] = "crashed"
    root.attrs["contents"] = {**root.attrs["contents"], "rows": {}}  # as a crashed writer says
    with pytest.raises(ValueError, match=r"status 'crashed'\) has 0 complete snapshot"):
        analyze_run(tiny_run_copy, tmp_path / "out", progress=False)


def test_sampling_too_short_says_how_many_samples_it_needs():
    da = xr.DataArray(np.arange(3.0), dims="step", coords={"step": [0, 5, 10]})
    with pytest.raises(ValueError, match=r"at least `min_samples` = 10 .* got 3"):
        sampling(da, intervals=[5], detectors=["zscore"])


# --- schedulers that cannot be reached ----------------------------------------------------


def test_unreachable_scheduler_fails_fast(tiny_run_store, tmp_path):
    t0 = time.perf_counter()
    with pytest.raises(ConnectionError, match=r"No dask scheduler answered at 'tcp://127"):
        analyze_run(
            tiny_run_store,
            tmp_path / "out",
            scheduler="tcp://127.0.0.1:1",
            scheduler_timeout=1.0,
            progress=False,
        )
    assert time.perf_counter() - t0 < 10


def test_silent_scheduler_times_out_in_the_cli(tiny_run_store, tmp_path, capsys):
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        address = f"tcp://127.0.0.1:{silent.getsockname()[1]}"
        t0 = time.perf_counter()
        args = f"--scheduler {address} --scheduler-timeout 1 --no-progress".split()
        status = main(["analyze", "--run", str(tiny_run_store), "--out-dir", str(tmp_path), *args])
        elapsed = time.perf_counter() - t0
    err = capsys.readouterr().err.strip()
    assert status == 2 and elapsed < 10
    assert len(err.splitlines()) == 1 and address in err and "within 1 s" in err


# --- every output stays under data/results/<run>/ -----------------------------------------


def test_analyze_refuses_a_run_path_that_climbs(tiny_run_store, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    status = main(["analyze", "--run", f"{tiny_run_store}/weights/..", "--no-progress"])
    err = capsys.readouterr().err
    assert status == 2 and "'..'" in err
    assert not (tmp_path / "data").exists()


def test_report_refuses_a_run_name_that_climbs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "results").mkdir(parents=True)
    status = main(["report", "--run", "../../../x"])
    err = capsys.readouterr().err
    assert status == 2 and "../../../x" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_run_name_refuses_dot_dot_and_empty_names():
    assert run_name("data/runs/mlp-mnist1d-s0.zarr/") == "mlp-mnist1d-s0"
    for bad in ("a.zarr/weights/..", "..", "memory://x/../y.zarr", ".zarr"):
        with pytest.raises(ValueError, match="Expected"):
            run_name(bad)


# --- non-finite values are listed, and what was excluded is said --------------------------


@pytest.fixture(scope="module")
def nan_analysis(tmp_path_factory):
    base = tmp_path_factory.mktemp("nan")
    store = record_tiny_run(
        base / "nan-run.zarr", steps=30, nan_loss_at=(5, 17), nan_weight_at=(20,)
    )
    with pytest.warns(DegenerateSpectrumWarning, match="hold NaN/Inf"):
        tree = analyze_run(
            store,
            base / "out",
            progress=False,
            metrics=["stable_rank", "participation_ratio"],
            detectors=("zscore",),
            intervals=(1, 2),
            n_boot=20,
            twonn_stride=0,
        )
    return tree, base / "out"


def test_nonfinite_loss_and_weights_are_listed(nan_analysis):
    tree, out = nan_analysis
    disk = xr.open_datatree(out / "analysis.zarr", engine="zarr")
    nonfinite = disk.attrs["nonfinite"]
    assert nonfinite["scalars/loss"] == [5, 17]
    assert nonfinite["weights/0.weight"] == [20]
    assert disk.attrs["excluded"]["weight/0"] == [20]
    assert tree.attrs["excluded"]["activation/0"] == [20]  # the probe ran through NaN weights


def test_report_lists_nonfinite_values_and_exclusions(nan_analysis):
    _, out = nan_analysis
    text = (out / "report.md").read_text()
    assert "scalars/loss: steps 5, 17" in text
    assert "weights/0.weight: step 20" in text
    assert "weight 0: step 20" in text


def test_report_of_a_clean_run_says_nothing_was_excluded(nan_analysis):
    from dimlapse.analyze.report._markdown import report_markdown

    tree, _ = nan_analysis
    clean = tree.copy()
    clean.attrs = {**tree.attrs, "nonfinite": {}, "excluded": {}}
    text = report_markdown(clean)
    assert "no NaN or Inf" in text and "scalars/loss" not in text


def test_figures_without_labelled_artists_do_not_warn(nan_analysis, tmp_path):
    from dimlapse.analyze.report._figures import render_figures

    tree, _ = nan_analysis
    blank = tree.copy()
    cmp = blank["compare"].to_dataset()
    cmp["normalised"] = cmp["normalised"] * np.nan  # nothing to draw, nothing labelled
    blank["compare"] = xr.DataTree(cmp)
    paths = render_figures(blank, tmp_path / "fig")  # filterwarnings=error: a warning fails
    assert all(p.stat().st_size > 0 for p in paths.values())


# --- parameters of unusual shape ------------------------------------------------------------


def test_root_parameter_with_leading_singleton_is_a_matrix_named_by_itself():
    rng = np.random.default_rng(0)
    steps = np.arange(4)
    pos = rng.standard_normal((4, 1, 6, 5)).astype(np.float32)  # (step, 1, length, d)
    weights = xr.Dataset(
        {"pos": (("step", "pos.d0", "pos.d1", "pos.d2"), pos, {"layer": "", "kind": "weight"})},
        coords={"step": steps},
    )
    acts = xr.Dataset(coords={"step": steps})
    run = SimpleNamespace(weights=weights, activations=acts, attrs={"every": 1})
    dim = dimensionality(run, metrics=["stable_rank"], twonn_stride=0).compute()["dimensionality"]
    assert list(dim["layer"].values) == ["pos"]
    ref = [SPECTRAL_METRICS["stable_rank"](np.linalg.svd(p[0].astype(float))[1]) for p in pos]
    np.testing.assert_allclose(dim.sel(kind="weight", layer="pos").values[:, 0], ref, rtol=1e-9)
    assert (np.asarray(ref) > 1.5).all()  # not the 1.0 of a 1 x (length * d) reshape


# --- capture options larger than the data -------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "value", "words"),
    [("--probe-size", "100000", "probe_size"), ("--batch-size", "10000000", "batch_size")],
)
def test_sizes_larger_than_the_data_are_one_line(tmp_path, capsys, flag, value, words):
    args = f"--model mlp --data digits --steps 2 {flag} {value} --no-progress".split()
    status = main(["capture", *args, "--out-dir", str(tmp_path), "--cache-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert status == 2 and len(err.splitlines()) == 1 and words in err  # no traceback


# --- comments cite documents a maintainer can open ------------------------------------------


def test_code_cites_only_documents_in_the_repository():
    root = Path(__file__).resolve().parents[1]
    outside = re.compile(r"STORAGE_NOTES|\bissues? #?\d+\b", re.IGNORECASE)
    cited = re.compile(r"docs/[\w./-]+\.md")
    hits, missing = [], []
    for path in sorted((root / "dimlapse").rglob("*.py")):
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if outside.search(line):
                hits.append(f"{path.relative_to(root)}:{i}: {line.strip()}")
            missing += [doc for doc in cited.findall(line) if not (root / doc).exists()]
    assert not hits, "\n".join(hits)
    assert not missing, missing


def test_sparse_scalars_are_not_listed_for_steps_they_were_not_measured():
    from dimlapse.analyze.jobs._nonfinite import nonfinite_record

    steps = np.arange(20)
    acc = np.where(steps % 5 == 0, 0.5, np.nan)  # held-out accuracy at capture steps only
    acc[10] = np.inf
    loss = np.linspace(1, 0.1, 20)
    loss[[3, 4]] = np.nan
    scalars = xr.Dataset(
        {"loss": ("step", loss), "test_accuracy": ("step", acc)}, coords={"step": steps}
    )
    record = nonfinite_record(SimpleNamespace(attrs={"nonfinite": {}}, scalars=scalars))
    assert record == {"scalars/loss": [3, 4], "scalars/test_accuracy": [10]}


def test_a_run_is_one_datatree_that_can_be_saved(tiny_run_store, tmp_path):
    run = open_run(tiny_run_store)
    tree = run.to_datatree()
    assert {"weights", "activations", "scalars", "probe"} <= set(tree.children)
    assert tree.attrs["status"] == "complete"
    w = tree["weights"]["0.weight"]
    xr.testing.assert_equal(w.load(), run.weights["0.weight"].load())
    tree.to_zarr(tmp_path / "copy.zarr", consolidated=False)
    back = xr.open_datatree(tmp_path / "copy.zarr", engine="zarr", consolidated=False)
    np.testing.assert_array_equal(back["weights"]["0.weight"].values, w.values)
