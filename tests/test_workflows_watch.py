"""``watch``: incremental reading, each diagnosis on a run made to show it, silence on a
healthy run, the alert log, the hook, the CLI and a run watched while it is written."""

from __future__ import annotations

import json
import threading
import urllib.request

import numpy as np
import pytest
from _watch_runs import Plant, record

from dimlapse.analyze import open_run
from dimlapse.analyze.watch import Diagnoser, DiagnosisOptions, Monitor, Trajectories
from dimlapse.pipelines.cli._main import main
from dimlapse.pipelines.watch._watcher import Watcher, alert_log_path, watch
from dimlapse.pipelines.watch.dashboard import Dashboard

PLANTS = {
    "healthy": Plant(),
    "bottleneck": Plant(widths=(32, 2, 32)),  # layer "2" is 2 units wide
    "spike": Plant(spike=(150, 0.05)),  # Adam's lr 1e-3 -> 5e-2 at step 150
    "dead": Plant(dead_third=2),  # 30 of layer "4"'s 32 ReLUs never open
    "collapse": Plant(collapse_at=150),  # layer "2" forced to rank 1 from step 150 on
    "recover": Plant(collapse_at=150, collapse_until=200),  # ... for steps 150-199 only
    "nan": Plant(nan_at=150),  # a NaN in layer "0"'s weights at step 150
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Each planted run, recorded once for the module (about 3-6 s each)."""
    base = tmp_path_factory.mktemp("watch-runs")
    cache: dict[str, str] = {}

    def get(name: str) -> str:
        if name not in cache:
            path = base / f"{name}.zarr"
            # the collapses run long enough for a severe one to persist `persist` windows
            record(path, PLANTS[name], steps=500 if name in ("collapse", "recover") else 300)
            cache[name] = str(path)
        return cache[name]

    return get


def _alerts(path: str, **kwargs) -> list:
    mon = Monitor(path, **kwargs)
    mon.poll()
    while mon.backlog:
        mon.poll()
    return mon.alerts


def _kinds(alerts, kind: str) -> list:
    return [a for a in alerts if a.kind == kind]


# -- incremental reading ---------------------------------------------------------------------


def test_trajectories_match_an_svd_of_the_stored_activations(runs):
    path = runs("healthy")
    tr = Trajectories(path)
    tr.poll()
    acts = open_run(path).activations
    assert tr.layers == ["0", "2", "4", "6"]  # the model's order
    np.testing.assert_array_equal(tr.steps, acts["step"].values)
    for layer in tr.layers:
        x = acts[layer].values.astype(np.float64)  # (step, sample, feature)
        x = x - x.mean(axis=1, keepdims=True)
        s = np.linalg.svd(x, compute_uv=False)  # (step, rank), independent of the Gram trick
        lam = s**2
        np.testing.assert_allclose(
            tr.values[layer]["stable_rank"], lam.sum(1) / lam.max(1), rtol=1e-6
        )
        pr = lam.sum(1) ** 2 / (lam**2).sum(1)
        np.testing.assert_allclose(tr.values[layer]["participation_ratio"], pr, rtol=1e-6)
        assert tr.widths[layer] == min(x.shape[1:])


def test_reading_in_small_batches_gives_the_same_trajectories_and_alerts(runs):
    path = runs("spike")
    whole = Trajectories(path)
    whole.poll()
    assert whole.backlog == 0 and whole.steps.size == 61
    small = Trajectories(path, max_batch=7)
    polls = 0
    while polls == 0 or small.backlog:
        small.poll()
        polls += 1
    assert polls == 9  # ceil(61 / 7)
    np.testing.assert_array_equal(small.steps, whole.steps)
    for layer in whole.layers:
        for m in whole.metrics:
            np.testing.assert_array_equal(small.values[layer][m], whole.values[layer][m])
    key = [(a.kind, a.layer, a.step, a.statistic) for a in _alerts(path)]
    batched = _alerts(path, max_batch=5)
    assert key and key == [(a.kind, a.layer, a.step, a.statistic) for a in batched]


def test_alerts_do_not_depend_on_how_the_series_arrives():
    rng = np.random.default_rng(0)
    steps = np.arange(0, 600, 5)
    t = np.arange(steps.size)
    calm = 3 + np.log1p(t / 10) + rng.normal(0, 0.01, t.size)
    wild = calm.copy()
    wild[70:] *= np.exp(rng.normal(0, 0.2, t.size - 70))  # erratic from snapshot 70
    series = {"a": calm, "b": wild, "c": calm * 1.3}
    widths = {"a": 64, "b": 64, "c": 10}
    whole = Diagnoser().update(steps, series, widths)
    pieces = Diagnoser()
    got, n = [], 0
    for size in rng.integers(1, 9, 100):
        n = min(steps.size, n + int(size))
        got += pieces.update(steps[:n], {k: v[:n] for k, v in series.items()}, widths)
    assert [(a.kind, a.layer, a.step) for a in got] == [(a.kind, a.layer, a.step) for a in whole]
    assert [(a.kind, a.layer) for a in whole] == [("instability", "b")]
    assert whole[0].step >= steps[70]


def test_options_are_validated():
    with pytest.raises(ValueError, match="`window` to be an int >= 4, got 2"):
        DiagnosisOptions(window=2)
    with pytest.raises(ValueError, match=r"`capacity` in \(0, 1\), got 1.5"):
        DiagnosisOptions(capacity=1.5)
    with pytest.raises(ValueError, match="`metrics` to name entries"):
        Trajectories("unused", metrics=("nope",))


# -- each diagnosis on a run made to show it -------------------------------------------------


def test_healthy_run_raises_nothing(runs):
    assert _alerts(runs("healthy")) == []


def test_width_2_layer_is_a_bottleneck(runs):
    alerts = _alerts(runs("bottleneck"))
    found = _kinds(alerts, "bottleneck")
    assert [a.layer for a in found] == ["2"]
    a = found[0]
    assert a.statistic >= a.threshold == DiagnosisOptions().capacity  # >= 80 % of 2 units
    assert a.window[1] - a.window[0] == 5 * (DiagnosisOptions().window - 1)
    assert "width 2" in a.message


def test_learning_rate_spike_is_instability(runs):
    alerts = _alerts(runs("spike"))
    found = _kinds(alerts, "instability")
    assert len(found) == 1, alerts  # one episode, however many layers turn erratic
    assert any(c.startswith("learning-rate change 0.001 -> 0.05") for c in found[0].context)
    assert all(a.statistic > a.threshold for a in found)
    assert min(a.step for a in found) >= 150  # not before the spike
    for a in found:  # the threshold was calibrated on the calm snapshots before the spike
        assert a.calibration["steps"][1] < 150 and a.calibration["noise"] < 0.02
        assert a.threshold == pytest.approx(np.clip(4 * a.calibration["noise"], 0.03, 0.08))
        assert a.statistic > 4 * a.calibration["noise"]
    assert not _kinds(alerts, "bottleneck")


def test_dead_units_block_information_flow(runs):
    alerts = _alerts(runs("dead"))
    found = _kinds(alerts, "information_flow")
    assert [a.layer for a in found] == ["0,2 -> 4,6"]
    assert not _kinds(alerts, "bottleneck") and not _kinds(alerts, "instability")


def test_forced_rank_one_layer_is_a_rank_collapse_then_critical(runs):
    alerts = _alerts(runs("collapse"))
    found = _kinds(alerts, "rank_collapse")
    warn, crit = found  # one episode: its onset, then the critical escalation
    assert warn.severity == "warning" and crit.severity == "critical"
    assert {"4", "6"} <= set(warn.layer.split(","))
    o = DiagnosisOptions()
    for a in found:
        assert a.statistic < a.threshold
        assert a.calibration["peak_step"] < 150 <= a.step
    level = crit.statistic * crit.calibration["peak"]
    assert crit.statistic < o.severe or level <= o.floor  # layer 4 keeps 43 % of 2.6: 1.1
    assert crit.step >= warn.step + 5 * (o.persist * o.window - 1)
    assert f"for {o.persist * o.window} snapshots" in crit.message


def test_a_collapse_released_after_50_steps_stays_a_warning(runs):
    found = _kinds(_alerts(runs("recover")), "rank_collapse")
    assert found and all(a.severity == "warning" for a in found)
    assert min(a.step for a in found) >= 150


def test_nan_is_reported_at_the_first_affected_snapshot(runs):
    alerts = _alerts(runs("nan"))
    found = {a.layer: a for a in _kinds(alerts, "non_finite")}
    assert {"0", "loss"} <= set(found)
    assert found["0"].step == 150  # the first snapshot after the NaN was written
    assert found["loss"].step == 151  # the first loss computed with it
    assert all(a.severity == "critical" for a in found.values())


# -- outputs: log, hook, CLI, dashboard ------------------------------------------------------


def test_watch_writes_the_alert_log_and_calls_the_hook(runs, tmp_path):
    path = runs("spike")
    seen = []
    result = watch(path, on_alert=seen.append, results_dir=tmp_path, interval=0.01)
    assert result.stopped == "finished" and result.status == "complete"
    log = alert_log_path(path, tmp_path)
    assert log == tmp_path / "spike" / "alerts.jsonl"
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert lines == [a.to_dict() for a in seen] == [a.to_dict() for a in result.alerts]
    assert {"kind", "layer", "metric", "window", "statistic", "threshold", "calibration"} <= set(
        lines[0]
    )


def test_cli_watch_on_a_finished_run(runs, tmp_path, capsys):
    path = runs("bottleneck")
    code = main(
        ["watch", "--run", path, "--plain", "--no-dashboard", "--results-dir", str(tmp_path)]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "ALERT bottleneck" in out and "finished (complete)" in out
    assert (tmp_path / "bottleneck" / "alerts.jsonl").read_text().count("\n") >= 1


def test_dashboard_serves_the_page_and_the_state(runs):
    mon = Monitor(runs("spike"))
    mon.poll()
    with Dashboard(port=0) as board:
        page = urllib.request.urlopen(board.url).read().decode()
        assert "src=" not in page and "https://" not in page  # works offline: nothing fetched
        board.publish(mon.state())
        state = json.loads(urllib.request.urlopen(board.url + "state.json").read())
    assert state["last_step"] == 300 and state["snapshots"] == 61
    assert [ly["name"] for ly in state["layers"]] == ["0", "2", "4", "6"]
    assert len(state["alerts"]) == len(mon.alerts) > 0


# -- live ----------------------------------------------------------------------------------------


def test_watch_follows_a_run_while_another_thread_writes_it(tmp_path):
    path = tmp_path / "live.zarr"
    writer = threading.Thread(target=record, args=(path, Plant()), kwargs={"delay": 0.004})
    seen_snapshots: list[int] = []

    class Spy:  # a view that records what each poll had read
        def update(self, state, *, dashboard=None):
            seen_snapshots.append(state["snapshots"])

    writer.start()  # watch waits for the store to appear and become a run
    try:
        result = watch(path, results_dir=None, interval=0.05, view=Spy(), timeout=120)
    finally:
        writer.join()
    assert result.stopped == "finished" and result.status == "complete"
    assert result.snapshots == 61 and result.last_step == 300
    grew = sorted(set(seen_snapshots))
    assert len(grew) >= 3, seen_snapshots  # it saw the run grow, not one finished store
    assert grew[0] < 61 and seen_snapshots == sorted(seen_snapshots)
    # read incrementally, it ends where a reader of the finished run ends
    offline = Trajectories(path)
    offline.poll()
    live = Trajectories(path)
    for _ in range(3):
        live.poll()
    np.testing.assert_array_equal(live.steps, offline.steps)


def test_a_training_script_stops_itself_from_the_hook(tmp_path):
    path = tmp_path / "hooked.zarr"
    stop = threading.Event()
    alerts = []

    def on_alert(alert):
        alerts.append(alert)
        if alert.severity == "critical":
            stop.set()

    done: list[int] = []
    writer = threading.Thread(
        target=lambda: done.append(
            record(path, Plant(nan_at=100), steps=2000, delay=0.004, stop=stop)
        )
    )
    writer.start()
    try:
        with Watcher(path, on_alert=on_alert, interval=0.05, results_dir=None) as w:
            writer.join(timeout=120)
    finally:
        stop.set()
        writer.join()
    assert w.result is not None
    assert alerts and alerts[0].kind == "non_finite"
    assert 100 < done[0] < 2000  # stopped by the hook, well before the planned end
    assert open_run(path).status == "complete"


def test_watch_validates_its_arguments_and_waits_only_as_told(tmp_path):
    with pytest.raises(ValueError, match="`interval` to be a positive number of seconds, got 0"):
        watch(tmp_path / "x.zarr", interval=0)
    with pytest.raises(ValueError, match="`on_alert` to be callable"):
        watch(tmp_path / "x.zarr", on_alert="print")
    with pytest.raises(FileNotFoundError, match="No run store"):
        watch(tmp_path / "missing.zarr", wait=0.2, interval=0.05, results_dir=None)
    code = main(
        [
            "watch",
            "--run",
            str(tmp_path / "missing.zarr"),
            "--wait",
            "0",
            "--plain",
            "--no-dashboard",
        ]
    )
    assert code == 2


def test_terminal_panel_lists_layers_values_and_alerts(runs):
    from dimlapse.pipelines.watch._view import TerminalView, sparkline

    assert sparkline(np.array([1.0, 2.0, np.nan, 3.0])) == "▁▅·█"
    mon = Monitor(runs("bottleneck"))
    mon.poll()
    panel = TerminalView.panel(mon.state(), dashboard="http://127.0.0.1:1/")
    for layer in ("0", "2", "4", "6"):
        assert f"\n{layer} " in panel or f"m{layer} " in panel
    assert "bottleneck" in panel and "step 300" in panel and "http://127.0.0.1:1/" in panel
