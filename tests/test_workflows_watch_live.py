"""Live logging from ``watch``: every step once and in order (what W&B requires), values equal
to the run's, read back from TensorBoard's event reader and from W&B's own reader of its
offline ``.wandb`` log, and the command's ``--tensorboard`` / ``--wandb``."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from _watch_runs import Plant, record

from dimlapse.analyze import open_run
from dimlapse.analyze.exports import LiveLog
from dimlapse.analyze.watch import Alert, NewSnapshots, Trajectories
from dimlapse.pipelines.cli._main import main
from dimlapse.pipelines.watch import watch

STEPS = 100  # a 100-step run: 21 snapshots (every 5), scalars at steps 1..100


class Run:
    """A user's W&B-style run that keeps what it is given (``log(dict, step=...)``)."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, dict]] = []

    def log(self, values: dict, step: int) -> None:
        self.calls.append((step, dict(values)))


@pytest.fixture(scope="module")
def done_run(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("live") / "done.zarr"
    record(path, Plant(nan_at=60), steps=STEPS)  # a non-finite alert at step 60
    return str(path)


def _by_key(calls: list[tuple[int, dict]]) -> dict[str, dict[int, object]]:
    out: dict[str, dict[int, object]] = {}
    for step, values in calls:
        for key, value in values.items():
            assert step not in out.setdefault(key, {}), (key, step)  # each (key, step) once
            out[key][step] = value
    return out


def _check_against_the_run(calls: list[tuple[int, dict]], path: str, kind: str) -> None:
    """Steps strictly increase; every value is the run's (scalars read by open_run)."""
    steps = [s for s, _ in calls]
    assert steps == sorted(set(steps)), steps
    got = _by_key(calls)
    offline = Trajectories(path)
    offline.poll()
    assert offline.kind == kind
    for layer in offline.layers:
        for metric, values in offline.values[layer].items():
            series = got[f"dimensionality/{kind}/{layer}/{metric}"]
            assert list(series) == offline.steps.tolist()
            np.testing.assert_array_equal(list(series.values()), values)
    scalars = open_run(path).scalars.load()
    for name in ("loss", "lr"):  # every optimizer step with a finite value
        values = scalars[name].values
        series = got[f"scalars/{name}"]
        assert list(series) == scalars["step"].values[np.isfinite(values)].tolist()
        np.testing.assert_array_equal(list(series.values()), values[np.isfinite(values)])


def test_a_watched_run_is_logged_step_by_step_with_the_runs_values(done_run):
    run = Run()
    result = watch(done_run, log_to=run, results_dir=None, interval=0.01)
    _check_against_the_run(run.calls, done_run, "activation")
    texts = _by_key(run.calls).get("alerts", {})
    assert [a.kind for a in result.alerts][:1] == ["non_finite"]
    assert sorted(texts) == sorted({a.step for a in result.alerts})
    for alert in result.alerts:  # each alert is a row of its step's Markdown table
        assert f"| {alert.step} | {alert.severity} | {alert.kind} |" in texts[alert.step]


def test_a_run_watched_while_it_is_written_is_logged_in_order_once(tmp_path):
    path = tmp_path / "growing.zarr"
    run = Run()
    grew: list[int] = []

    class Spy:  # how many snapshots each poll had read: the watch saw the run grow
        def update(self, state, *, dashboard=None):
            grew.append(state["snapshots"])

    writer = threading.Thread(
        target=record, args=(path, Plant()), kwargs={"steps": STEPS * 2, "delay": 0.01}
    )
    writer.start()
    try:
        live = LiveLog(run)
        watch(path, log_to=live, results_dir=None, interval=0.05, view=Spy(), timeout=120)
    finally:
        writer.join()
    assert len(set(grew)) >= 3, grew
    assert live.late == 0 and live.rows == len(run.calls)
    _check_against_the_run(run.calls, str(path), "activation")


def _new(steps, values, *, scalar_steps=(), loss=()) -> NewSnapshots:
    return NewSnapshots(
        np.asarray(steps, np.int64),
        {"fc1": {"stable_rank": np.asarray(values, np.float64)}},
        scalar_steps=np.asarray(scalar_steps, np.int64),
        scalars={"loss": np.asarray(loss, np.float64)} if len(loss) else {},
        kind="weight",
    )


def _alert(step: int) -> Alert:
    return Alert("non_finite", "fc1", "loss", step, (step, step), 1.0, 0.0, "NaN | Inf")


def test_rows_wait_for_both_streams_and_late_alerts_name_their_step():
    run = Run()
    live = LiveLog([run])
    live.update(_new([0, 5, 10], [1.0, 2.0, 3.0], scalar_steps=[0, 1, 2], loss=[4.0, 3.0, 2.0]))
    assert [s for s, _ in run.calls] == [0, 1, 2]  # 5 and 10 wait for their scalar rows
    live.update(_new([], [], scalar_steps=range(3, 8), loss=[np.nan, 1.0, 1.0, 1.0, 1.0]))
    assert [s for s, _ in run.calls] == [0, 1, 2, 4, 5, 6, 7]  # step 3: only a NaN loss
    assert run.calls[4] == (5, {"dimensionality/weight/fc1/stable_rank": 2.0, "scalars/loss": 1.0})
    live.update(_new([], []), [_alert(3)])  # raised now, for a step already sent
    assert run.calls[-1][0] == 7 and set(run.calls[-1][1]) == {"alerts"}
    assert "| 3 | warning | non_finite | fc1 | loss | NaN \\| Inf |" in run.calls[-1][1]["alerts"]
    live.flush()  # the watch ended: step 10 goes out without its scalar row
    assert run.calls[-1] == (10, {"dimensionality/weight/fc1/stable_rank": 3.0})
    live.update(_new([], [], scalar_steps=[8], loss=[0.5]))  # appears after step 10 was sent
    live.flush()
    assert live.late == 1 and run.calls[-1][0] == 10
    assert live.rows == len(run.calls) == 9


def test_what_is_not_a_sink_is_refused_by_name(done_run):
    for bad in (3, "wandb", [Run(), object()], []):
        with pytest.raises(ValueError, match=r"Expected `sinks` to be .*log\(dict, step=int\)"):
            LiveLog(bad)
    with pytest.raises(ValueError, match=r"Expected `log_to` to be .*, got 'wandb'"):
        watch(done_run, log_to="wandb", results_dir=None)


# -- the real tools --------------------------------------------------------------------------


def test_tensorboard_reads_the_live_log_back(done_run, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from dimlapse.analyze.exports import TensorBoardLog

    run = Run()  # the same rows, kept: what TensorBoard must show
    with TensorBoardLog(tmp_path) as log:
        result = watch(done_run, log_to=[log, run], results_dir=None, interval=0.01)
    ea = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0, "tensors": 0}).Reload()
    for key, series in _by_key(run.calls).items():
        if key == "alerts":
            events = ea.Tensors("alerts")
            assert [e.step for e in events] == list(series)
            assert [e.tensor_proto.string_val[0].decode() for e in events] == list(series.values())
            continue
        events = ea.Scalars(key)
        assert [e.step for e in events] == list(series), key
        np.testing.assert_array_equal(  # the event file holds float32
            [e.value for e in events], np.float32(list(series.values())), err_msg=key
        )
    assert len(result.alerts) > 0


def _wandb_env(monkeypatch, tmp_path: Path) -> None:
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    monkeypatch.setenv("WANDB_MODE", "offline")  # no network
    monkeypatch.setenv("WANDB_SILENT", "true")


def _wandb_history(folder: Path) -> list[tuple[int, dict]]:
    """``(step, values)`` of every history record in the ``.wandb`` log under `folder`, read
    by W&B's own reader (``wandb leet inspect --json``)."""
    (log,) = folder.rglob("run-*.wandb")
    out = subprocess.run(
        [sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(log)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    records = [json.loads(line) for line in out.splitlines() if line.strip()]
    rows = []
    for r in records:
        if r.get("type") == "history":
            item = {k: v for k, v in r["history"]["item"].items() if not k.startswith("_")}
            rows.append((int(r["history"]["step"]["num"]), item))
    return rows


def test_wandb_offline_run_holds_every_row(done_run, tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    _wandb_env(monkeypatch, tmp_path)
    mine = Run()
    wb = wandb.init(project="dimlapse-test", dir=str(tmp_path), mode="offline")
    try:
        watch(done_run, log_to=[wb, mine], results_dir=None, interval=0.01)
    finally:
        wb.finish()
    got = _wandb_history(tmp_path)
    assert [s for s, _ in got] == [s for s, _ in mine.calls]
    for (_, theirs), (_, ours) in zip(got, mine.calls, strict=True):
        assert theirs.keys() == ours.keys()
        for key, value in ours.items():
            if isinstance(value, str):
                assert theirs[key] == value
            else:  # the JSON writes NaN as a string
                got = (
                    float(theirs[key])
                    if theirs[key] in ("NaN", "Infinity", "-Infinity")
                    else theirs[key]
                )
                np.testing.assert_allclose(got, value, rtol=1e-15, err_msg=key)


def test_the_command_logs_live_and_refuses_a_second_log_in_one_folder(
    done_run, tmp_path, monkeypatch, capsys
):
    pytest.importorskip("tensorboard")
    pytest.importorskip("wandb")
    _wandb_env(monkeypatch, tmp_path)
    monkeypatch.delenv("WANDB_MODE")  # the command chooses offline itself
    results, tb = tmp_path / "results", tmp_path / "tb"
    args = ["watch", "--run", done_run, "--plain", "--no-dashboard", "--interval", "0.01"]
    args += ["--results-dir", str(results), "--tensorboard", str(tb), "--wandb"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"live log: tensorboard --logdir {tb}  (run done)" in out
    assert "live log: W&B run done (offline) in " in out and "wandb sync " in out
    assert len(list((tb / "done").glob("events.out.tfevents.*"))) == 1
    history = _wandb_history(results / "done" / "wandb")
    assert [s for s, _ in history][-1] == STEPS and "scalars/lr" in history[-1][1]
    assert main(args) == 2  # the same --tensorboard folder again: refused, nothing written
    err = capsys.readouterr().err
    assert f"{tb / 'done'} already holds TensorBoard event files" in err
    assert len(list((tb / "done").glob("events.out.tfevents.*"))) == 1


def test_the_command_names_the_missing_package(done_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed
    args = ["watch", "--run", done_run, "--plain", "--no-dashboard", "--wandb", "p"]
    assert main([*args, "--results-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--wandb needs the wandb package" in err and "pip install 'dimlapse[wandb]'" in err
