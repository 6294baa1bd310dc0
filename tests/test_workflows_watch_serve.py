"""``watch`` that behaves: a dashboard that outlives the run it shows, bounded waits with a
word on what is awaited, a store whose status no writer sets, the Host check of the
dashboard, the per-snapshot hook and a readable terminal."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from _watch_runs import Plant, record

from dimlapse.analyze.watch import Trajectories
from dimlapse.pipelines.cli._main import main
from dimlapse.pipelines.watch import Dashboard, TerminalView, watch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def done_run(tmp_path_factory) -> str:
    """A complete 100-step run (21 snapshots)."""
    path = tmp_path_factory.mktemp("serve") / "done.zarr"
    record(path, Plant(), steps=100)
    return str(path)


def _get(port: int, path: str, host: str | None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.putrequest("GET", path, skip_host=True)
    if host is not None:
        conn.putheader("Host", host)
    conn.endheaders()
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, body


@pytest.mark.slow  # a real `dimlapse watch` process that lingers its 30 s timeout
def test_the_dashboard_keeps_serving_an_ended_run_until_the_timeout(done_run, tmp_path):
    cmd = [sys.executable, "-m", "dimlapse", "watch", "--run", done_run, "--port", "0"]
    cmd += ["--plain", "--timeout", "30", "--results-dir", str(tmp_path)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            lines = []
            for line in proc.stdout:
                lines.append(line)
                if line.startswith("run ended"):
                    break
            ended = time.monotonic()
            url = next(x for x in lines if x.startswith("dashboard: ")).split()[1]
            port = int(url.rstrip("/").rsplit(":", 1)[1])
            match = re.search(r"until Ctrl-C or the end of --timeout \((\d+) s left\)", lines[-1])
            assert match, lines
            left = int(match.group(1))
            assert left >= 5, "the machine is too slow for this test's 30 s timeout"
            time.sleep(1.5)  # the former watch closed the dashboard about 1 s after the run ended
            code, body = _get(port, "/state.json", f"127.0.0.1:{port}")
            state = json.loads(body)
            assert code == 200 and state["ended"] is True and state["stopped"] == "finished"
            assert state["status"] == "complete" and state["last_step"] == 100
            assert proc.wait(timeout=left + 60) == 0  # it ends by itself at the timeout
            assert time.monotonic() - ended >= left - 1  # not before (exit takes seconds here)
        finally:
            proc.kill()
    assert "finished (complete), 21 snapshots to step 100" in "".join(lines)


def test_a_missing_run_is_awaited_within_the_timeout_saying_so(tmp_path, capsys):
    start = time.monotonic()
    args = ["--timeout", "2", "--plain", "--no-dashboard", "--results-dir", str(tmp_path)]
    code = main(["watch", "--run", str(tmp_path / "nothere.zarr"), *args])
    took = time.monotonic() - start
    out, err = capsys.readouterr()
    assert code == 2 and 2 <= took < 10  # the former watch waited its 120 s --wait, silent
    assert f"waiting for {tmp_path / 'nothere.zarr'} ... (not a run yet; up to 2 s" in out
    assert "running" not in out
    assert "No run store" in err and "(waited 2 s)" in err


def test_a_status_no_writer_sets_ends_the_watch_saying_why(done_run, tmp_path):
    bogus = tmp_path / "bogus.zarr"
    shutil.copytree(done_run, bogus)
    zarr.open_group(str(bogus), mode="r+").attrs["status"] = "rebooting"
    start = time.monotonic()
    result = watch(bogus, results_dir=None, interval=0.05, timeout=60)
    assert time.monotonic() - start < 30  # not the timeout: it stopped on its own
    assert result.stopped == "unknown-status" and result.snapshots == 21
    assert "'rebooting' is not one a Recorder writes" in result.note


def test_the_dashboard_answers_only_requests_addressed_to_it():
    with Dashboard(port=0) as board:
        port = board.port
        for host in (
            f"127.0.0.1:{port}",
            f"localhost:{port}",
            f"[::1]:{port}",
            f"LOCALHOST:{port}",
        ):
            assert _get(port, "/state.json", host)[0] == 200, host
        # DNS rebinding: another site's name resolved to 127.0.0.1; or no Host, or another port
        for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1:{port + 1}", None, ""):
            code, body = _get(port, "/state.json", host)
            assert code == 421 and b"layers" not in body, host
        assert _get(port, "/", f"attacker.test:{port}")[0] == 421


def test_on_snapshot_gets_every_new_snapshot_once(done_run):
    got = []
    watch(done_run, on_snapshot=got.append, results_dir=None, interval=0.01)
    steps = np.concatenate([g.steps for g in got])
    offline = Trajectories(done_run)
    offline.poll()
    np.testing.assert_array_equal(steps, offline.steps)
    for layer in offline.layers:
        pr = np.concatenate([g.metrics[layer]["participation_ratio"] for g in got])
        np.testing.assert_array_equal(pr, offline.values[layer]["participation_ratio"])
    with pytest.raises(ValueError, match="`on_snapshot` to be callable"):
        watch(done_run, on_snapshot=3)


def test_terminal_headers_are_whole_and_store_text_cannot_drive_it(done_run):
    from dimlapse.analyze.watch import Monitor

    mon = Monitor(done_run)
    mon.poll()
    state = mon.state()
    state["layers"][0]["name"] = "evil\x1b[2Jname"
    panel = TerminalView.panel(state)
    assert "participation_ratio" in panel and "stable_rank" in panel
    assert "\x1b[2J" not in panel and "evil?[2Jname" in panel
    empty = {**state, "status": "running", "snapshots": 0, "last_step": None, "layers": []}
    assert TerminalView.line(empty) == "[running] no snapshot yet; alerts: 0"
