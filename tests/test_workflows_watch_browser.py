"""The dashboard in a real headless browser (Chromium) while a run is being written."""

from __future__ import annotations

import re
import shutil
import subprocess
import threading

import pytest
from _watch_runs import Plant, record

from dimlapse.pipelines.watch._watcher import Watcher
from dimlapse.pipelines.watch.dashboard import Dashboard

BROWSER = next(
    (b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        BROWSER is None,
        reason="no chromium binary on PATH (apt-get install -y --no-install-recommends chromium)",
    ),
]


def dump_dom(url: str) -> str:
    """The page's DOM after its scripts ran (virtual time lets the first poll complete)."""
    assert BROWSER is not None
    out = subprocess.run(
        [
            BROWSER,
            "--headless",
            "--no-sandbox",  # tests may run as root in containers
            "--disable-gpu",
            "--virtual-time-budget=3000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return out.stdout


def field(dom: str, name: str) -> str:
    match = re.search(rf'id="{name}"[^>]*>([^<]*)<', dom)
    assert match, f"no #{name} in the page"
    return match.group(1)


def test_dashboard_shows_new_steps_while_the_run_trains(tmp_path):
    path = tmp_path / "live.zarr"
    writer = threading.Thread(
        target=record, args=(path, Plant(spike=(150, 0.05))), kwargs={"delay": 0.04}
    )
    writer.start()
    try:
        with Dashboard(port=0) as board:
            with Watcher(path, dashboard=board, interval=0.1, results_dir=None) as watcher:
                seen = []
                for _ in range(40):
                    dom = dump_dom(board.url)
                    step = field(dom, "step")
                    if step != "-" and (not seen or int(step) > seen[-1][0]):
                        seen.append((int(step), field(dom, "status")))
                    if len(seen) >= 2 or not writer.is_alive():
                        break
                writer.join()
                result = watcher.join(timeout=60)
                final = dump_dom(board.url)
    finally:
        writer.join()
    # two views of the page while the run was still being written, the later one further on
    assert len(seen) >= 2, seen
    assert seen[0][1] == "running" and seen[0][0] < seen[1][0] < 300
    # the finished run: every layer drawn for both metrics, the alerts marked and listed
    assert result is not None and result.status == "complete"
    assert field(final, "status") == "complete" and field(final, "step") == "300"
    assert final.count('class="trajectory"') == 4 * 2 + 1  # 4 layers x 2 metrics + the loss
    n_alerts = len(result.alerts)
    assert n_alerts > 0 and field(final, "alert-count") == str(n_alerts)
    assert len(re.findall(r'<tr class="alert-row"><td>\d', final)) == n_alerts
    assert final.count('class="alert-mark"') >= n_alerts


def _state(**over) -> dict:
    """A small dashboard state with one layer and one alert, as Monitor.state() makes it."""
    state = {
        "run": "data/runs/x.zarr",
        "status": "complete",
        "kind": "activation",
        "metrics": ["participation_ratio"],
        "diagnosed_metric": "participation_ratio",
        "steps": [0, 5, 10],
        "last_step": 10,
        "snapshots": 3,
        "layers": [{"name": "fc1", "width": 8, "participation_ratio": [1.0, 2.0, 3.0]}],
        "loss": {"steps": [1, 2, 3], "values": [2.0, 1.5, 1.0]},
        "alerts": [],
    }
    return {**state, **over}


def test_store_text_is_shown_as_text_never_run_as_markup():
    evil = '<img src=x id="injected" onerror="document.title=\'pwned\'">'
    alert = {
        "kind": "instability",
        "layer": evil,
        "metric": "participation_ratio",
        "step": 5,
        "window": [0, 5],
        "statistic": 0.1,
        "threshold": 0.05,
        "message": f"<b id='bold'>{evil}</b>",
        "severity": "warning",
        "calibration": {},
        "context": [],
        "time": "",
    }
    state = _state(
        run=f"runs/{evil}.zarr",
        layers=[{"name": evil, "width": 8, "participation_ratio": [1.0, 2.0, 3.0]}],
        alerts=[alert],
    )
    with Dashboard(port=0) as board:
        board.publish(state)
        dom = dump_dom(board.url)
    assert "<img" not in dom and '<b id="bold"' not in dom  # no element was made of the text
    assert "<title>dimlapse watch</title>" in dom  # the onerror never ran
    assert dom.count("&lt;img src=x") >= 4  # run, legend, alert layer, alert message
    assert len(re.findall(r'<tr class="alert-row"><td>5</td>', dom)) == 1


def test_an_ended_run_says_so_on_the_page():
    with Dashboard(port=0) as board:
        board.publish(_state())
        live = dump_dom(board.url)
        board.publish(_state(ended=True, stopped="finished", note=""))
        ended = dump_dom(board.url)
    assert field(live, "ended") == ""
    assert field(ended, "ended") == "The run has ended (complete); this is its final state."
    assert field(ended, "status") == "complete"
