"""Exports read back with the tools themselves: TensorBoard's event reader, pandas / pyarrow.

The source is a real run (``small_run_store``) analysed by ``analyze_run``, plus hand-built
variants of its analysis: planted significant / notable events, NaN values, a claims group,
an alerts log, no events at all, no run store.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

pytest.importorskip("tensorboard")
pytest.importorskip("pyarrow")
pytest.importorskip("torch")  # the fixture run is recorded with dimlapse.capture

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.util.tensor_util import make_ndarray

from dimlapse.analyze import analyze_run, open_run
from dimlapse.analyze._pipeline import save_tree
from dimlapse.analyze.exports import (
    COLUMNS,
    ExportExistsError,
    NotAnalysedError,
    alerts_table,
    dimensionality_table,
    export,
)
from dimlapse.analyze.watch import Alert
from dimlapse.pipelines.cli import main

METRICS = ["stable_rank", "effective_rank"]


@pytest.fixture(scope="module")
def analysed(small_run_store, tmp_path_factory):
    """(store, results_dir): the small run analysed into ``<results_dir>/small-run/``."""
    results = tmp_path_factory.mktemp("export") / "results"
    analyze_run(
        small_run_store,
        results / "small-run",
        progress=False,
        n_boot=100,
        metrics=METRICS,
        figures=False,
    )
    return small_run_store, results


def _tree(results):
    return xr.open_datatree(results / "small-run" / "analysis.zarr", engine="zarr").load()


def _save(tree, folder):
    save_tree(tree, folder / "analysis.zarr")
    return folder


def _with(tree, **groups):
    """`tree` with some groups replaced or added (Datasets)."""
    nodes = {node.path: node.to_dataset(inherit=False) for node in tree.subtree}
    nodes.update({f"/{k}": v for k, v in groups.items()})
    return xr.DataTree.from_dict(nodes)


CLAIMS = xr.Dataset(
    {
        "statistic": (("claim", "space"), [[-0.9, -0.2], [0.7, np.nan]]),
        "p_value": (("claim", "space"), [[0.001, 0.4], [0.02, np.nan]]),
        "n": (("claim", "space"), [[12, 3], [8, 0]]),
        "verdict": (
            ("claim", "space"),
            np.array([["reproduced", "inconclusive"], ["reproduced", "inconclusive"]], object),
        ),
    },
    coords={"claim": ["rho_loss", "timing"], "space": ["activation", "weight"]},
)


def _alerts():
    """Two real alerts at one step and one later, as watch logs them."""
    made = [
        Alert("bottleneck", "2", "participation_ratio", 100, (40, 100), 0.01, 0.02, "stalled"),
        Alert("instability", "4", "participation_ratio", 100, (40, 100), 0.2, 0.08, "erratic"),
        Alert("non_finite", "0", "participation_ratio", 250, (250, 250), np.nan, 0.0, "NaN",
              severity="critical"),
    ]  # fmt: skip
    return made


@pytest.fixture(scope="module")
def planted(analysed, tmp_path_factory):
    """A results folder: planted significant and notable events, a NaN, claims, alerts."""
    _, results = analysed
    tree = _tree(results)
    trans = tree["transitions"].to_dataset()
    real = trans["step"].notnull()
    sig = real & (trans["transition"] < 2)
    trans["significant"] = sig
    trans["notable"] = sig & (trans["kind"] == "activation")
    dims = tree["dimensionality"].to_dataset()
    dims["dimensionality"][0, 0, 3, 0] = np.nan
    folder = tmp_path_factory.mktemp("planted") / "small-run"
    folder.mkdir()
    _save(_with(tree, transitions=trans, dimensionality=dims, claims=CLAIMS), folder)
    lines = [json.dumps(a.to_dict()) for a in _alerts()]
    (folder / "alerts.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def _accumulator(folder):
    (path,) = folder.glob("events.out.tfevents.*")
    ea = EventAccumulator(str(path), size_guidance={"scalars": 0, "tensors": 0})
    ea.Reload()
    return ea


def _text(event):
    return make_ndarray(event.tensor_proto).item().decode("utf-8")


def _rows(markdown):
    """Body rows of a Markdown table, as lists of cells."""
    lines = [ln for ln in markdown.splitlines() if ln.startswith("| ")][2:]
    return [[c.strip() for c in ln.strip("|").split(" | ")] for ln in lines]


# -- TensorBoard ---------------------------------------------------------------------------


def test_tensorboard_scalars_equal_the_source(analysed, tmp_path):
    store, results = analysed
    done = export(store, to="tensorboard", out=tmp_path, results_dir=results)
    assert [p.parent for p in done.files] == [tmp_path / "tensorboard" / "small-run"]
    ea = _accumulator(tmp_path / "tensorboard" / "small-run")
    dims = _tree(results)["dimensionality"].to_dataset()
    scalars = open_run(store).scalars.load()
    expected = {f"scalars/{n}" for n in scalars.data_vars if n != "wall_time"}
    da = dims["dimensionality"]
    for kind in da["kind"].values:
        for layer in da["layer"].values:
            expected |= {f"dimensionality/{kind}/{layer}/{m}" for m in METRICS}
    expected |= {f"dimensionality/activation/{ly}/twonn" for ly in dims["twonn"]["layer"].values}
    assert set(ea.Tags()["scalars"]) == expected
    for kind in ("weight", "activation"):
        for layer in da["layer"].values:
            for metric in METRICS:
                got = ea.Scalars(f"dimensionality/{kind}/{layer}/{metric}")
                src = da.sel(kind=kind, layer=layer, metric=metric)
                np.testing.assert_array_equal([e.step for e in got], src["step"].values)
                # simple_value is float32 in the format: equal to the source rounded to it
                np.testing.assert_array_equal([e.value for e in got], src.values.astype(np.float32))
    tw = dims["twonn"].isel(layer=0)
    got = ea.Scalars(f"dimensionality/activation/{tw['layer'].item()}/twonn")
    np.testing.assert_array_equal([e.step for e in got], tw["twonn_step"].values)
    np.testing.assert_array_equal([e.value for e in got], tw.values.astype(np.float32))
    for name in ("loss", "grad_norm"):
        got = ea.Scalars(f"scalars/{name}")
        np.testing.assert_array_equal([e.step for e in got], scalars["step"].values)
        np.testing.assert_array_equal([e.value for e in got], scalars[name].values)
    # wall times: the run's start plus its recorded wall_time, in step order
    start = pd.Timestamp(open_run(store).attrs["created"]).timestamp()
    loss = ea.Scalars("scalars/loss")
    np.testing.assert_allclose(
        [e.wall_time - start for e in loss], scalars["wall_time"].values, atol=1e-6
    )
    # no significant event in this small run: no events tag, and the summary says so
    assert not [t for t in ea.Tags()["tensors"] if t.startswith("events/")]
    (summary,) = ea.Tensors("run/summary")
    text = _text(summary)
    assert "**run** small-run" in text
    assert "the notable ones (0 of" in text
    assert "claims table left out" not in text  # analyze_run writes the claims group


def test_tensorboard_events_alerts_and_nan(planted, tmp_path):
    export(planted, to="tensorboard", out=tmp_path)
    ea = _accumulator(tmp_path / "tensorboard" / "small-run")
    trans = xr.open_datatree(planted / "analysis.zarr", engine="zarr")["transitions"].load()
    chosen = trans["significant"] & trans["notable"]  # notable where present
    assert int(chosen.sum()) < int(trans["significant"].sum())  # the rule matters here
    for det in trans["detector"].values:
        c = chosen.sel(detector=det)
        steps = np.rint(trans["step"].sel(detector=det).values[c.values]).astype(int)
        events = ea.Tensors(f"events/{det}")
        at, count = np.unique(steps, return_counts=True)
        assert [e.step for e in events] == at.tolist()  # one event per (tag, step)
        assert [len(_rows(_text(e))) for e in events] == count.tolist()
        kinds = {r[0] for e in events for r in _rows(_text(e))}
        assert kinds == {"activation"}  # only notable events are shown
    alerts = ea.Tensors("alerts")
    assert [e.step for e in alerts] == [100, 250]
    first = _rows(_text(alerts[0]))
    assert sorted(r[1] for r in first) == ["bottleneck", "instability"]
    assert _rows(_text(alerts[1]))[0][:2] == ["critical", "non_finite"]
    dims = xr.open_datatree(planted / "analysis.zarr", engine="zarr")["dimensionality"]
    da = dims["dimensionality"].load()
    kind, layer, metric = (str(da[d].values[i]) for d, i in (("kind", 0), ("layer", 0),
                                                              ("metric", 0)))  # fmt: skip
    got = ea.Scalars(f"dimensionality/{kind}/{layer}/{metric}")
    values = np.array([e.value for e in got])
    assert np.isnan(values[3]) and np.isfinite(np.delete(values, 3)).all()
    text = _text(ea.Tensors("run/summary")[0])
    assert "the notable ones" in text and "claims table left out" not in text


# -- tables --------------------------------------------------------------------------------


def _read(path):
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    return pd.read_csv(path, keep_default_na=False, na_values=[""])


@pytest.mark.parametrize("to", ["parquet", "csv"])
def test_tables_equal_the_source(planted, tmp_path, to):
    done = export(planted, to=to, out=tmp_path)
    names = {p.stem for p in done.files}
    assert names == {"dimensionality", "scalars", "events", "claims", "alerts"}
    assert not done.notes
    tree = xr.open_datatree(planted / "analysis.zarr", engine="zarr").load()
    ext = done.files[0].suffix

    dim = _read(tmp_path / f"dimensionality{ext}")
    assert list(dim.columns) == list(COLUMNS["dimensionality"])
    da = tree["dimensionality"]["dimensionality"]
    tw = tree["dimensionality"]["twonn"]
    assert len(dim) == da.size + tw.size
    assert dim["step"].dtype == np.int64 and dim["value"].dtype == np.float64
    for (kind, layer, metric), rows in dim.groupby(["kind", "layer", "metric"]):
        src = (
            tw.sel(layer=str(layer))
            if metric == "twonn"
            else da.sel(kind=kind, layer=str(layer), metric=metric)
        )
        np.testing.assert_array_equal(rows["value"].to_numpy(), src.values)  # NaN included
        steps = src["twonn_step" if metric == "twonn" else "step"].values
        np.testing.assert_array_equal(rows["step"].to_numpy(), steps)
    assert dim["value"].isna().sum() == int(da.isnull().sum() + tw.isnull().sum()) >= 1

    ev = _read(tmp_path / f"events{ext}")
    trans = tree["transitions"]
    assert len(ev) == int(trans["step"].notnull().sum())
    assert list(ev.columns[:8]) == [
        "kind", "layer", "metric", "detector", "transition", "step", "significant", "notable",
    ]  # fmt: skip
    assert ev["reported"].dtype == bool and ev["significant"].dtype == bool
    assert int(ev["reported"].sum()) == int((trans["significant"] & trans["notable"]).sum())
    assert set(ev.columns) >= {"p_value", "score", "scale", "onset", "duration", "sign"}

    claims = _read(tmp_path / f"claims{ext}")
    assert list(claims.columns[:2]) == ["claim", "space"]
    assert set(claims.columns[2:]) == set(CLAIMS.data_vars)
    assert len(claims) == CLAIMS["verdict"].size
    row = claims[(claims["claim"] == "timing") & (claims["space"] == "weight")].iloc[0]
    assert row["verdict"] == "inconclusive" and row["n"] == 0 and np.isnan(row["statistic"])

    alerts = _read(tmp_path / f"alerts{ext}")
    assert list(alerts.columns) == list(COLUMNS["alerts"])
    assert alerts["step"].tolist() == [100, 100, 250]
    assert alerts["severity"].tolist() == ["warning", "warning", "critical"]
    assert alerts["window_start"].tolist() == [40, 40, 250]
    assert np.isnan(alerts["statistic"].iloc[2])

    sc = _read(tmp_path / f"scalars{ext}")
    scalars = open_run(tree.attrs["store"]).scalars.load()
    assert len(sc) == scalars["step"].size * len(scalars.data_vars)
    loss = sc[sc["name"] == "loss"]
    np.testing.assert_array_equal(loss["value"], scalars["loss"].values.astype(np.float64))


def test_parquet_dtypes_through_pyarrow(planted, tmp_path):
    import pyarrow.parquet as pq

    export(planted, to="parquet", out=tmp_path)
    schema = pq.read_schema(tmp_path / "dimensionality.parquet")
    assert [str(schema.field(n).type) for n in COLUMNS["dimensionality"]] == [
        "large_string", "large_string", "large_string", "int64", "double",
    ]  # fmt: skip
    assert str(pq.read_schema(tmp_path / "events.parquet").field("reported").type) == "bool"


# -- edge cases ----------------------------------------------------------------------------


def test_no_events_and_no_run_store(analysed, tmp_path):
    """Zero candidates in every series, and a results folder whose run store is gone."""
    _, results = analysed
    tree = _tree(results)
    trans = tree["transitions"].to_dataset().isel(transition=slice(0, 0))
    tree = _with(tree, transitions=trans)
    tree.attrs["store"] = str(tmp_path / "gone.zarr")
    folder = _save(tree, tmp_path / "res")
    done = export(folder, to="parquet", out=tmp_path / "tables")
    assert {p.stem for p in done.files} == {"dimensionality", "events", "alerts", "claims"}
    assert any("training scalars left out" in n for n in done.notes)
    ev = pd.read_parquet(tmp_path / "tables" / "events.parquet")
    assert len(ev) == 0 and "reported" in ev.columns and ev["step"].dtype == np.float64
    export(folder, to="tensorboard", out=tmp_path / "tb")
    ea = _accumulator(tmp_path / "tb" / "tensorboard" / "small-run")
    assert not [t for t in ea.Tags()["scalars"] if t.startswith("scalars/")]
    assert ea.Tags()["tensors"] == ["run/summary"]
    assert "training scalars left out" in _text(ea.Tensors("run/summary")[0])


def test_run_without_analysis_is_refused_naming_the_command(small_run_store, tmp_path, capsys):
    with pytest.raises(NotAnalysedError, match=r"has not been analysed.*dimlapse analyze --run"):
        export(small_run_store, to="csv", results_dir=tmp_path)
    status = main(["export", str(small_run_store), "--to", "csv", "--results-dir", str(tmp_path)])
    assert status == 2
    assert "dimlapse analyze --run" in capsys.readouterr().err


def test_earlier_export_is_kept_unless_overwrite(planted, tmp_path, capsys):
    export(planted, to="csv", out=tmp_path)
    before = (tmp_path / "events.csv").stat().st_mtime_ns
    with pytest.raises(ExportExistsError, match=r"earlier csv export.*events\.csv.*overwrite"):
        export(planted, to="csv", out=tmp_path)
    assert (tmp_path / "events.csv").stat().st_mtime_ns == before
    export(planted, to="parquet", out=tmp_path)  # another format does not collide
    export(planted, to="tensorboard", out=tmp_path)
    argv = ["export", str(planted), "--to", "tensorboard", "--out", str(tmp_path)]
    assert main(argv) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0
    out = capsys.readouterr().out
    assert "wrote " in out
    # 300 loss points and 2 alert steps: within what TensorBoard keeps by default
    assert f"view: tensorboard --logdir {tmp_path / 'tensorboard'}\n" in out
    assert len(list((tmp_path / "tensorboard" / "small-run").glob("events.out.tfevents.*"))) == 1


def test_bad_arguments_are_named(planted, tmp_path, capsys):
    with pytest.raises(ValueError, match="Expected `to` to be one of tensorboard, parquet, csv"):
        export(planted, to="xlsx")
    with pytest.raises(TypeError, match="Expected `run_or_results`"):
        export(3, to="csv")
    bad = tmp_path / "small-run"
    shutil.copytree(planted, bad)
    (bad / "alerts.jsonl").write_text('{"step": 1}\nnot json\n')
    with pytest.raises(ValueError, match=r"alerts\.jsonl, line 2"):
        export(bad, to="csv", out=tmp_path / "out")
    with pytest.raises(SystemExit):
        main(["export", str(planted), "--to", "xlsx"])
    assert "invalid choice: 'xlsx'" in capsys.readouterr().err


def test_cli_resolves_a_run_name_and_defaults_out(analysed, tmp_path, capsys):
    store, results = analysed
    runs = store.parent
    own = tmp_path / "results"
    shutil.copytree(results, own)
    argv = ["export", "small-run", "--to", "csv", "--runs-dir", str(runs)]
    assert main([*argv, "--results-dir", str(own)]) == 0
    assert (own / "small-run" / "export" / "dimensionality.csv").exists()
    claims = pd.read_csv(own / "small-run" / "export" / "claims.csv")
    assert {"claim", "space", "verdict"} <= set(claims.columns) and len(claims) > 0
    assert "note: no alerts" in capsys.readouterr().out


def test_live_log_reads_back_as_it_grows(tmp_path):
    from dimlapse.analyze.exports import TensorBoardLog

    with TensorBoardLog(tmp_path, flush_secs=60) as log:
        log.dimensionality(0, {("activation", "fc1", "stable_rank"): 3.25})
        log.scalars(1, {"loss": 2.5, "grad_norm": np.nan})
        log.flush()  # a reader sees what was flushed while the run goes on
        assert [e.value for e in _accumulator(tmp_path).Scalars("scalars/loss")] == [2.5]
        log.dimensionality(5, {("activation", "fc1", "stable_rank"): 4.5})
        log.alert(5, "| severity | kind |\n| --- | --- |\n| warning | bottleneck |")
    ea = _accumulator(tmp_path)
    got = ea.Scalars("dimensionality/activation/fc1/stable_rank")
    assert [(e.step, e.value) for e in got] == [(0, 3.25), (5, 4.5)]
    assert np.isnan(ea.Scalars("scalars/grad_norm")[0].value)
    assert _rows(_text(ea.Tensors("alerts")[0])) == [["warning", "bottleneck"]]
    with pytest.raises(ValueError, match="Expected `flush_secs` > 0 seconds, got 0"):
        TensorBoardLog(tmp_path, flush_secs=0)


def test_view_asks_for_every_point_beyond_tensorboards_default_sampling():
    from dimlapse.analyze.exports._api import _view

    steps = np.arange(0, 7505, 5)  # 1501 snapshots: TensorBoard keeps 1000 by default
    dims = xr.Dataset(
        {"dimensionality": (("kind", "layer", "step", "metric"), np.ones((1, 1, steps.size, 1)))},
        coords={"kind": ["activation"], "layer": ["fc1"], "step": steps, "metric": ["pr"]},
    )
    events = pd.DataFrame({"detector": ["pelt"] * 12, "step": np.arange(12.0) * 10})
    tables = {
        "dimensionality": dimensionality_table(dims),
        "events": events.assign(reported=True),
        "alerts": alerts_table([]),
    }
    assert _view(Path("tb"), tables) == (
        "tensorboard --logdir tb --samples_per_plugin scalars=1501,text=12"
    )
    tables["events"] = events.assign(reported=np.arange(12) < 3)  # 3 reported: default is 10
    assert _view(Path("tb"), tables) == "tensorboard --logdir tb --samples_per_plugin scalars=1501"
