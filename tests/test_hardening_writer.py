"""The writer process dies, stops or hangs; training never does.

Every test kills (SIGKILL) or stops (SIGSTOP) the real writer process, or forks it while
another thread holds a logging lock, and checks that training goes on, every wait ends within
its bound with a message, and the ring's memory follows its byte budget.
"""

import gc
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
import weakref

import pytest
import torch
from torch import nn

from dimlapse.capture import CaptureOptions, Recorder, RunLockedError


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))


def _train(rec, model, steps):
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(steps):
        loss = model(torch.randn(4, 8)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        rec.step(loss)


def _writer_pid(store):
    lease = json.loads((store.parent / f".{store.name}.lock").read_text())
    assert len(lease["pids"]) == 2, lease  # the trainer and its writer process
    return lease["pids"][1]


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie (exited, not yet reaped) is gone too
        return f.read().split(")")[-1].split()[0] != "Z"


def _wait_gone(pid, timeout):
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _alive(pid)


def _errors(caplog):
    return [r for r in caplog.records if r.levelno >= logging.ERROR]


# -- 3. the writer is killed: training continues, the run goes degraded, one error ------------
@pytest.mark.parametrize("backpressure", ["block", "drop"])
def test_killed_writer_degrades_and_training_continues(tmp_path, caplog, backpressure):
    store = tmp_path / "r.zarr"
    model = _mlp()
    opts = CaptureOptions(flush_every=2, backpressure=backpressure)
    rec = Recorder(model, store, every=1, probe=torch.randn(8, 8), options=opts)
    _train(rec, model, 5)
    pid = _writer_pid(store)
    os.kill(pid, signal.SIGKILL)
    assert _wait_gone(pid, 10)
    # the pipe reports the death when the kernel has closed the writer's end, which can come
    # a few steps after the process shows as gone: train on until then (raised before)
    deadline = time.monotonic() + 10
    while rec.status == "running" and time.monotonic() < deadline:
        _train(rec, model, 10)
    assert rec.status == "degraded"
    _train(rec, model, 10)  # and training goes on
    rec.close()
    assert rec.status == "degraded"
    assert len(_errors(caplog)) == 1, [r.getMessage() for r in _errors(caplog)]
    assert "writer" in _errors(caplog)[0].getMessage()
    from dimlapse.analyze import open_run

    run = open_run(store)
    assert run.status == "degraded"
    assert run.attrs["errors"]


# -- 4. a stopped writer: every wait has a bound and a message; "drop" never blocks -----------
def test_stopped_writer_blocks_training_only_for_the_bound(tmp_path, caplog):
    store = tmp_path / "r.zarr"
    model = _mlp()
    opts = CaptureOptions(flush_every=1, max_buffer_bytes=1, writer_timeout=1.0)
    rec = Recorder(model, store, every=1, probe=torch.randn(8, 8), options=opts)
    pid = _writer_pid(store)
    os.kill(pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        _train(rec, model, 20)  # the ring (2 slots) fills at once: a blocked hand-over
        waited = time.monotonic() - t0
        assert rec.status == "degraded"
        assert waited < 10, waited
        t0 = time.monotonic()
        rec.close()  # hung for ever before
        assert time.monotonic() - t0 < 10
    finally:
        if _alive(pid):
            os.kill(pid, signal.SIGCONT)
    assert _wait_gone(pid, 10), "the stopped writer was not ended after the bound"
    msgs = [r.getMessage() for r in _errors(caplog)]
    assert len(msgs) == 1 and "no progress" in msgs[0], msgs


def test_drop_never_blocks_on_a_stopped_writer(tmp_path, caplog):
    store = tmp_path / "r.zarr"
    model = _mlp()
    # every=2: half the hand-overs are scalar-only, which always blocked before
    opts = CaptureOptions(
        flush_every=1, max_buffer_bytes=1, backpressure="drop", writer_timeout=60.0
    )
    rec = Recorder(model, store, every=2, probe=torch.randn(8, 8), options=opts)
    pid = _writer_pid(store)
    os.kill(pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        _train(rec, model, 200)
        assert time.monotonic() - t0 < 10  # far below the 60 s bound: nothing waited
        assert rec.status == "running"
        assert rec.stats["dropped"] > 0
    finally:
        os.kill(pid, signal.SIGCONT)
    rec.close()
    assert rec.status == "complete"


# -- 4. fork while another thread holds a logging lock; an orphaned writer exits --------------
TRAINER = textwrap.dedent(
    """
    import logging, logging.handlers, os, queue, sys, threading, time
    import torch
    from torch import nn
    from dimlapse.capture import CaptureOptions, Recorder

    q = queue.Queue()
    logging.getLogger().addHandler(logging.handlers.QueueHandler(q))
    # no start line here: the trainer would wait on the held queue itself
    logging.getLogger("dimlapse.capture").setLevel(logging.WARNING)
    held, release = threading.Event(), threading.Event()

    def hold():  # a thread in the middle of logging while the writer is forked
        with q.mutex:
            held.set()
            release.wait()

    threading.Thread(target=hold, daemon=True).start()
    held.wait()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    rec = Recorder(model, sys.argv[1], every=1, probe=torch.randn(8, 8),
                   options=CaptureOptions(flush_every=4))
    release.set()
    for _ in range(6):
        rec.step(loss=1.0)
    print("ready", flush=True)
    time.sleep(60)
    """
)


def test_writer_forked_while_a_logging_lock_is_held_exits_after_its_trainer(tmp_path):
    script = tmp_path / "trainer.py"
    script.write_text(TRAINER)
    store = tmp_path / "r.zarr"
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(store)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        pid = _writer_pid(store)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        # the writer logs "the training process ended" on the inherited, held queue lock:
        # before, it deadlocked there, outlived its trainer and kept the lease live for ever
        gone = _wait_gone(pid, 30)
        if not gone:
            os.kill(pid, signal.SIGKILL)
        assert gone, "the writer outlived its trainer"
    finally:
        proc.stdout.close()
        if proc.poll() is None:
            proc.kill()
    from dimlapse.analyze import open_run

    assert open_run(store).status == "crashed"


def test_locked_error_names_the_live_writer_not_the_dead_trainer(tmp_path):
    store = tmp_path / "r.zarr"
    lease = tmp_path / ".r.zarr.lock"
    store.mkdir()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_pid = int(dead.stdout)
    host = __import__("socket").gethostname()
    lease.write_text(
        json.dumps(
            {
                "host": host,
                "pid": dead_pid,
                "pids": [dead_pid, os.getpid()],
                "since": "2026-01-01T00:00:00",
            }
        )
    )
    with pytest.raises(RunLockedError, match=f"pid {os.getpid()}"):
        Recorder(_mlp(), store, every=1, options=CaptureOptions(writer_timeout=1.0), overwrite=True)


# -- 7. the ring's memory follows the byte budget, whatever `every` is ----------------------
@pytest.mark.parametrize("every", [1, 1000, 10**5, 10**12])
def test_ring_memory_follows_the_budget_whatever_every_is(tmp_path, every):
    model = _mlp()
    budget = 4 * 2**20
    opts = CaptureOptions(max_buffer_bytes=budget, mode="weights")
    rec = Recorder(model, tmp_path / "r.zarr", every=every, options=opts)
    try:
        assert rec.status == "running"  # every=10**12 disabled capture before
        ring = rec._session.handle.ring
        assert ring.nbytes <= budget
    finally:
        rec.close()
    assert rec.status == "complete"


def test_close_frees_the_ring_while_the_recorder_is_referenced(tmp_path):
    model = _mlp()
    rec = Recorder(model, tmp_path / "r.zarr", every=1, options=CaptureOptions(mode="weights"))
    memory = weakref.ref(rec._session.handle.ring.memory)
    _train(rec, model, 3)
    rec.close()
    gc.collect()
    assert memory() is None, "the ring's shared memory outlived close()"
    assert rec.stats["snapshots"] == 4
