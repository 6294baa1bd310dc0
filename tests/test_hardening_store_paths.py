"""Paths, leases and arguments that must be
refused before anything is touched, on a real disk."""

import json
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import time

import pytest
import torch
from torch import nn

from dimlapse.capture import CaptureOptions, Recorder, RunExistsError, RunLockedError


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))


# -- 1. an empty path (an unset environment variable) never deletes the current folder -------
@pytest.mark.parametrize("store", ["", "  ", ".", "./", "file://", "file://."])
def test_empty_or_current_folder_path_is_refused_before_anything_is_touched(
    tmp_path, monkeypatch, store
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(ValueError, match="`store`"):
        Recorder(_mlp(), store, every=1, overwrite=True)
    assert (tmp_path / "precious.txt").read_text() == "keep me"
    assert sorted(os.listdir(tmp_path)) == ["precious.txt"]
    assert not (tmp_path.parent / f".{tmp_path.name}.lock").exists()


def test_parent_of_the_current_folder_is_refused(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    with pytest.raises(ValueError, match="one above it"):
        Recorder(_mlp(), "..", every=1, overwrite=True)
    assert work.is_dir()


# -- 2. a lease that cannot be parsed is live until proven dead -------------------------------
@pytest.mark.parametrize("content", [b"", b"{not json", b"\x00\x00"])
def test_unreadable_lease_is_never_taken_over(tmp_path, content):
    store = tmp_path / "r.zarr"
    rec = Recorder(_mlp(), store, every=1, options=CaptureOptions(mode="weights"))
    rec.step(loss=1.0)
    rec.close()
    lease = tmp_path / ".r.zarr.lock"
    lease.write_bytes(content)  # a failed write on a full disk, or a half-written lease
    with pytest.raises(RunLockedError, match="cannot be read") as err:
        Recorder(_mlp(), store, every=1, resume=True, options=CaptureOptions(mode="weights"))
    assert str(lease) in str(err.value) and "delete" in str(err.value)
    assert lease.read_bytes() == content  # untouched: not taken over
    with pytest.raises(RunLockedError, match="cannot be read"):
        Recorder(_mlp(), store, every=1, overwrite=True)
    from dimlapse.analyze import open_run

    assert open_run(store).status == "complete"  # the run was not replaced
    lease.unlink()  # the message's advice works
    Recorder(_mlp(), store, every=1, overwrite=True).close()


def test_lease_that_becomes_readable_is_honoured(tmp_path):
    """A reader between the exclusive create and the write sees an empty file: it re-reads."""
    store = tmp_path / "r.zarr"
    lease = tmp_path / ".r.zarr.lock"
    lease.write_bytes(b"")
    live = {"host": socket.gethostname(), "pid": os.getpid(), "pids": [os.getpid()],
            "since": "2026-01-01T00:00:00"}  # fmt: skip
    ctx = mp.get_context("fork")
    writer = ctx.Process(target=_write_later, args=(str(lease), json.dumps(live)))
    writer.start()
    try:
        with pytest.raises(RunLockedError, match=f"pid {os.getpid()}"):
            Recorder(_mlp(), store, every=1)
    finally:
        writer.join(10)


def _write_later(path, text):
    import time

    time.sleep(0.3)
    with open(path, "w") as f:
        f.write(text)


# -- 8. the smaller ones ---------------------------------------------------------------------
def test_file_url_works_for_a_new_run(tmp_path):
    url = f"file://{tmp_path}/r.zarr"
    rec = Recorder(_mlp(), url, every=1, probe=torch.randn(8, 8))
    rec.step(loss=1.0)
    rec.close()
    assert rec.status == "complete"  # degraded (FileNotFoundError) before
    from dimlapse.analyze import open_run

    assert open_run(tmp_path / "r.zarr").weights.sizes["step"] == 2


def test_overlong_scalar_name_is_refused_at_step(tmp_path):
    rec = Recorder(_mlp(), tmp_path / "r.zarr", every=1, options=CaptureOptions(mode="weights"))
    with pytest.raises(ValueError, match="at most 200 characters"):
        rec.step(loss=1.0, **{"x" * 5000: 1.0})
    rec.step(loss=1.0, fine=2.0)
    rec.close()
    assert rec.status == "complete"  # capture was disabled (degraded) before


def test_meta_device_parameters_are_refused_at_construction(tmp_path):
    with torch.device("meta"):
        model = _mlp()
    with pytest.raises(ValueError, match="meta device"):
        Recorder(model, tmp_path / "r.zarr", every=1)
    assert not (tmp_path / "r.zarr").exists()


@pytest.mark.parametrize("overwrite", [False, True])
def test_existing_file_as_store_is_refused(tmp_path, overwrite):
    path = tmp_path / "r.zarr"
    path.write_text("not a run")
    with pytest.raises(RunExistsError, match="not a folder"):
        Recorder(_mlp(), path, every=1, overwrite=overwrite)
    assert path.read_text() == "not a run"


def test_deeply_nested_attr_is_refused_with_a_clear_error(tmp_path):
    value: list = []
    for _ in range(sys.getrecursionlimit() + 10):
        value = [value]
    with pytest.raises(ValueError, match=r"`attrs\['deep'\]`"):
        Recorder(_mlp(), tmp_path / "r.zarr", every=1, attrs={"deep": value})


RACER = """
import sys, time
import torch
from torch import nn
from dimlapse.capture import CaptureOptions, Recorder, RunLockedError

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))  # all start at once
try:
    rec = Recorder(model, sys.argv[1], every=1, overwrite=True,
                   options=CaptureOptions(mode="weights"))
    for _ in range(20):
        rec.step(loss=1.0)
    rec.close()
    print(rec.status)
except RunLockedError:
    print("RunLockedError")
except Exception as exc:  # what a loser got before: a raw FileNotFoundError
    print(type(exc).__name__, exc)
"""


def test_racing_overwrites_leave_one_winner_and_a_locked_error(tmp_path):
    store = tmp_path / "r.zarr"
    Recorder(_mlp(), store, every=1, options=CaptureOptions(mode="weights")).close()
    script = tmp_path / "racer.py"
    script.write_text(RACER)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    at = str(time.time() + 8)  # after every interpreter has imported torch
    procs = [
        subprocess.Popen([sys.executable, str(script), str(store), at], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for _ in range(4)
    ]  # fmt: skip
    results = sorted(p.communicate(timeout=120)[0].strip() for p in procs)
    assert set(results) <= {"complete", "RunLockedError"}, results
    assert "complete" in results
    from dimlapse.analyze import open_run

    assert open_run(store).status == "complete"
