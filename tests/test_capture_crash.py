"""Crash safety: SIGKILL a training process at a random moment, read the store, resume it."""

import importlib.util
import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from dimlapse.analyze import open_run
from dimlapse.capture import CaptureOptions, Recorder, RunNotFoundError

STEPS = 120

TRAIN = '''
import sys, time
import torch

def build():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4))
    return model, torch.optim.SGD(model.parameters(), lr=0.05)

PROBE = torch.linspace(-2, 2, 48).reshape(6, 8)

def batches():
    gen = torch.Generator().manual_seed(1)
    while True:
        yield torch.randn(8, 8, generator=gen), torch.randn(8, 4, generator=gen)

def train(steps, *, rec=None, model=None, opt=None, data=None, sleep=0.0, record=None):
    """Deterministic SGD; `record(step, model, loss)` sees the state after each step."""
    if model is None:
        model, opt = build()
    data = data or batches()
    for step in range(1, steps + 1):
        x, y = next(data)
        loss = (model(x) - y).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if rec is not None:
            rec.step(loss)
        if record is not None:
            record(step, model, loss.item())
        if sleep:
            time.sleep(sleep)
    return model, opt, data

if __name__ == "__main__":
    torch.set_num_threads(1)
    from dimlapse.capture import CaptureOptions, Recorder
    model, opt = build()
    rec = Recorder(model, sys.argv[1], every=1, probe=PROBE, options=CaptureOptions(flush_every=2))
    print("ready", flush=True)
    train(int(sys.argv[2]), rec=rec, model=model, opt=opt, sleep=0.002)
    print("done", flush=True)
    time.sleep(60)  # never closes: the parent kills us
'''


@pytest.fixture
def trainer(tmp_path):
    path = tmp_path / "trainer.py"
    path.write_text(TRAIN)
    spec = importlib.util.spec_from_file_location("dimlapse_test_trainer", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return path, module


def _expected(module, steps):
    """Weights, layer-0 activations and losses of a clean re-run, per step."""
    weights, acts, losses = {}, {}, {}

    def record(step, model, loss):
        weights[step] = model[0].weight.detach().clone().numpy()
        with torch.no_grad():
            acts[step] = model[0](module.PROBE).numpy()
        losses[step] = loss

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, opt = module.build()
        record(0, model, float("nan"))
        module.train(steps, model=model, opt=opt, record=record)
    finally:
        torch.set_num_threads(threads)
    return weights, acts, losses


def _kill_at_random(script, store, seed):
    proc = subprocess.Popen(
        [sys.executable, str(script), str(store), str(STEPS)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(random.Random(seed).uniform(0.0, 0.5))
        pids = _writer_pids(store)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
        proc.stdout.close()
    _assert_exits(pids)  # the writer flushes what it holds and exits by itself: no orphan


def _writer_pids(store):
    lease = json.loads((store.parent / f".{store.name}.lock").read_text())
    assert len(lease["pids"]) == 2, lease  # the trainer and its writer process
    return lease["pids"][1:]


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie (exited, not yet reaped) is gone too
        return f.read().split(")")[-1].split()[0] != "Z"


def _assert_exits(pids, timeout=30.0):
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(p) for p in pids), f"writer processes {pids} outlived their trainer"


def _check_consistent(run, module):
    weights = run.weights.load()
    n = weights.sizes["step"]
    assert run.status == "crashed"  # marked by the writer, which outlived the trainer briefly
    np.testing.assert_array_equal(weights["step"].values, np.arange(n))  # every=1, from 0
    exp_w, exp_a, exp_l = _expected(module, STEPS)
    for i in range(n):
        np.testing.assert_allclose(weights["0.weight"].values[i], exp_w[i], rtol=1e-6, atol=1e-7)
    for name in weights.data_vars:  # every array of the group is complete up to n
        assert not np.isnan(weights[name].values).any()
    acts = run.activations.load()
    m = acts.sizes["step"]
    np.testing.assert_array_equal(acts["step"].values, np.arange(m))
    for i in range(m):
        np.testing.assert_allclose(acts["0"].values[i], exp_a[i], rtol=1e-5, atol=1e-6)
    scalars = run.scalars.load()
    k = scalars.sizes["step"]
    np.testing.assert_array_equal(scalars["step"].values, np.arange(1, k + 1))
    np.testing.assert_allclose(
        scalars["loss"].values, [exp_l[s] for s in range(1, k + 1)], rtol=1e-6
    )
    return n


def _resume_and_finish(store, module):
    """Continue the killed run from its last complete snapshot with a re-built model."""
    model, opt = module.build()
    data = module.batches()
    rec = Recorder(model, store, every=1, resume=True, options=CaptureOptions(flush_every=2))
    start = rec.current_step
    if start:
        module.train(start, model=model, opt=opt, data=data)  # stands in for a checkpoint load
    with rec:
        module.train(STEPS - start, rec=rec, model=model, opt=opt, data=data)
    run = open_run(store)
    assert run.status == "complete"
    weights, acts, scalars = run.weights.load(), run.activations.load(), run.scalars.load()
    exp_w, exp_a, exp_l = _expected(module, STEPS)
    np.testing.assert_array_equal(weights["step"].values, np.arange(STEPS + 1))
    np.testing.assert_array_equal(acts["step"].values, np.arange(STEPS + 1))
    np.testing.assert_array_equal(scalars["step"].values, np.arange(1, STEPS + 1))
    for i in range(STEPS + 1):
        np.testing.assert_allclose(weights["0.weight"].values[i], exp_w[i], rtol=1e-6)
        np.testing.assert_allclose(acts["0"].values[i], exp_a[i], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        scalars["loss"].values, [exp_l[s] for s in range(1, STEPS + 1)], rtol=1e-6
    )
    assert run.attrs["resumed"][0]["at_step"] == start


def test_sigkill_then_open_and_resume(tmp_path, trainer):
    script, module = trainer
    store = tmp_path / "killed.zarr"
    _kill_at_random(script, store, seed=0)
    _check_consistent(open_run(store), module)
    _resume_and_finish(store, module)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(1, 7))
def test_sigkill_at_random_points_many_seeds(tmp_path, trainer, seed):
    script, module = trainer
    store = tmp_path / "killed.zarr"
    _kill_at_random(script, store, seed=seed)
    _check_consistent(open_run(store), module)
    _resume_and_finish(store, module)


def test_resume_needs_a_run_and_matching_settings(tmp_path):
    with pytest.raises(RunNotFoundError, match="drop resume=True"):
        Recorder(torch.nn.Linear(2, 2), tmp_path / "none.zarr", resume=True)
    store = tmp_path / "run.zarr"
    with Recorder(torch.nn.Linear(2, 2), store, every=2, probe=torch.zeros(3, 2)) as rec:
        for _ in range(6):
            rec.step(0.0)
    with pytest.raises(ValueError, match="Expected `flush_every` to match the run being resumed"):
        Recorder(torch.nn.Linear(2, 2), store, resume=True, options=CaptureOptions(flush_every=8))
    with pytest.raises(ValueError, match="Expected `probe` to equal the probe stored"):
        Recorder(torch.nn.Linear(2, 2), store, resume=True, probe=torch.ones(3, 2))
    with pytest.raises(ValueError, match=r"Expected `start_step` <= 6"):
        Recorder(torch.nn.Linear(2, 2), store, resume=True, start_step=9)


def test_resume_from_earlier_start_step_between_snapshots(tmp_path):
    store = tmp_path / "run.zarr"
    model = torch.nn.Linear(2, 2)
    with Recorder(model, store, every=2, options=CaptureOptions(flush_every=2)) as rec:
        for _ in range(8):
            rec.step(1.0)
    with Recorder(
        model, store, every=2, resume=True, start_step=3, options=CaptureOptions(flush_every=2)
    ) as rec:
        assert rec.current_step == 3
        for _ in range(3):
            rec.step(2.0)
    run = open_run(store)
    np.testing.assert_array_equal(run.weights["step"].values, [0, 2, 3, 4, 6])
    np.testing.assert_array_equal(run.scalars["step"].values, [1, 2, 3, 4, 5, 6])
    np.testing.assert_array_equal(run.scalars["loss"].values, [1, 1, 1, 2, 2, 2])


UNCLOSED = """
import sys, torch
from dimlapse.capture import CaptureOptions, Recorder
rec = Recorder(torch.nn.Linear(2, 2), sys.argv[1], every=1, options=CaptureOptions(flush_every=8))
for _ in range(5):
    rec.step(0.5)
if sys.argv[2] == "raise":
    raise RuntimeError("training died")
"""


@pytest.mark.parametrize(("mode", "status"), [("exit", "complete"), ("raise", "crashed")])
def test_unclosed_recorder_is_flushed_at_exit(tmp_path, mode, status):
    script = tmp_path / "unclosed.py"
    script.write_text(UNCLOSED)
    store = tmp_path / "run.zarr"
    out = subprocess.run(
        [sys.executable, str(script), str(store), mode], capture_output=True, text=True
    )
    assert (out.returncode == 0) == (mode == "exit"), out.stderr
    run = open_run(store)
    assert run.status == status
    np.testing.assert_array_equal(run.weights["step"].values, np.arange(6))  # partial chunk
    np.testing.assert_array_equal(run.scalars["step"].values, np.arange(1, 6))


EARLY_DEATH = """
import os, sys, torch
from dimlapse.capture import CaptureOptions, Recorder
options = CaptureOptions(flush_every=4, writer=sys.argv[2])
rec = Recorder(torch.nn.Linear(2, 2), sys.argv[1], every=1, options=options)
rec.step(0.5)
os._exit(9)  # dies like a SIGKILL: no close, no exit hooks, nothing flushed
"""


def test_writer_process_keeps_what_a_dead_trainer_handed_over(tmp_path):
    script = tmp_path / "early.py"
    script.write_text(EARLY_DEATH)
    store = tmp_path / "run.zarr"
    out = subprocess.run(
        [sys.executable, str(script), str(store), "process"], capture_output=True, text=True
    )
    assert out.returncode == 9, out.stderr
    _assert_exits(_writer_pids(store))
    run = open_run(store)
    assert run.status == "crashed"
    np.testing.assert_array_equal(run.weights["step"].values, [0, 1])  # a partial chunk kept


def test_resume_with_no_complete_snapshot_starts_over(tmp_path):
    script = tmp_path / "early.py"
    script.write_text(EARLY_DEATH)
    store = tmp_path / "run.zarr"
    out = subprocess.run(  # a writer thread dies with its process: nothing is flushed
        [sys.executable, str(script), str(store), "thread"], capture_output=True, text=True
    )
    assert out.returncode == 9, out.stderr
    run = open_run(store)
    assert run.status == "running" and run.weights.sizes["step"] == 0
    model = torch.nn.Linear(2, 2)
    with Recorder(model, store, every=1, resume=True, options=CaptureOptions(flush_every=4)) as rec:
        assert rec.current_step == 0
        rec.step(1.0)
    run = open_run(store)
    np.testing.assert_array_equal(run.weights["step"].values, [0, 1])
    np.testing.assert_array_equal(run.scalars["step"].values, [1])
    np.testing.assert_array_equal(run.weights["weight"].values[0], model.weight.detach().numpy())
