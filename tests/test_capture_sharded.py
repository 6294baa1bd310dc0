"""Sharded (FSDP2) capture: every rank writes its local shards into one logical run.

The job is a real ``torch.distributed.run`` of gloo processes; the reference is a
single-process run of the same model on the same global batch (FSDP2 averages gradients over
ranks, so the weights agree to float tolerance).
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from dimlapse.analyze import open_run
from dimlapse.capture import last_complete

SCRIPT = """
import os, signal, sys, torch
import torch.distributed as dist
from torch import nn
from dimlapse.capture import CaptureOptions, Recorder

STEPS, GLOBAL = int(os.environ.get("STEPS", 8)), 12

def data(step):
    g = torch.Generator().manual_seed(step)
    return torch.randn(GLOBAL, 8, generator=g), torch.randn(GLOBAL, 3, generator=g)

def build():
    torch.manual_seed(0)
    # 5 and 3 rows: neither divides evenly over 2 or 4 ranks (short and empty shards)
    return nn.Sequential(nn.Linear(8, 5), nn.Tanh(), nn.Linear(5, 3))

def main(store, how):
    torch.set_num_threads(1)
    rank, world = 0, 1
    model = build()
    if how != "single":
        from torch.distributed.fsdp import fully_shard
        dist.init_process_group("gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
        fully_shard(model[0])
        fully_shard(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    probe = torch.linspace(-1, 1, 64).reshape(8, 8)
    per = GLOBAL // world
    options = CaptureOptions(flush_every=2, average_scalars=how != "single")
    resume = how == "resume"
    with Recorder(model, store, every=2, probe=probe, options=options, resume=resume) as rec:
        start = rec.current_step  # resumed: the last snapshot every rank completed
        for step in range(1, STEPS + 1):
            x, y = data(step)
            x, y = x[rank * per:(rank + 1) * per], y[rank * per:(rank + 1) * per]
            loss = (model(x) - y).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step > start:  # before it: what loading the checkpoint of `start` would give
                rec.step(loss)
            if how == "crash" and rank == 1 and step == 5:
                # rank 1 and its writer die once its first chunk (steps 0, 2) is in the
                # store: its snapshot of step 4, still in the writer's buffer, never is
                import time, zarr
                for _ in range(600):
                    index = zarr.open_group(store, mode="r")["shards/r1/weights/step"][:]
                    if (index >= 0).sum() >= 2:
                        break
                    time.sleep(0.05)
                os.kill(rec._session.handle.process.pid, signal.SIGKILL)
                os.kill(os.getpid(), signal.SIGKILL)
    print("rank", rank, rec.status, "from", start, flush=True)
    if how != "single":
        dist.destroy_process_group()

if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
"""


# the subprocesses import this checkout's dimlapse, whatever is installed
ROOT = str(Path(__file__).resolve().parents[1])


def _env(extra=None):
    path = os.pathsep.join([ROOT, *filter(None, [os.environ.get("PYTHONPATH")])])
    return {**os.environ, "PYTHONPATH": path, **(extra or {})}


def _torchrun(script, store, how, n, env=None):
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
         str(n), str(script), str(store), how],
        capture_output=True, text=True, timeout=300, env=_env(env),
    )  # fmt: skip


def _single(tmp_path, steps=8):
    """The reference: the same script's single-process run, in this process."""
    single = tmp_path / "single.zarr"
    namespace = {"__name__": "reference"}
    os.environ["STEPS"] = str(steps)
    try:
        exec(compile(SCRIPT, "train.py", "exec"), namespace)
        namespace["main"](str(single), "single")
    finally:
        del os.environ["STEPS"]
    return open_run(single)


def _assert_same_run(a, b):
    np.testing.assert_array_equal(a.weights["step"].values, b.weights["step"].values)
    assert set(a.weights.data_vars) == set(b.weights.data_vars)
    for name in a.weights.data_vars:
        assert a.weights[name].shape == b.weights[name].shape
        np.testing.assert_allclose(b.weights[name].values, a.weights[name].values, rtol=1e-5,
                                   atol=1e-6)  # fmt: skip
    assert set(a.activations.data_vars) == set(b.activations.data_vars)
    for name in a.activations.data_vars:
        assert a.activations[name].shape == b.activations[name].shape
        np.testing.assert_allclose(b.activations[name].values, a.activations[name].values,
                                   rtol=1e-5, atol=1e-6)  # fmt: skip
    np.testing.assert_allclose(b.scalars["loss"].values, a.scalars["loss"].values, rtol=1e-5)


def test_fsdp2_two_ranks_equal_a_single_process_run_of_the_global_batch(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    out = _torchrun(script, tmp_path / "fsdp.zarr", "fsdp", 2)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "rank 0 complete from 0" in out.stdout and "rank 1 complete from 0" in out.stdout
    b = open_run(tmp_path / "fsdp.zarr")
    assert b.status == "complete"
    _assert_same_run(_single(tmp_path), b)
    root = zarr.open_group(tmp_path / "fsdp.zarr", mode="r")
    sharded = root.attrs["sharded"]
    assert sharded["world_size"] == 2 and sharded["mesh_shape"] == [2]
    assert sharded["placements"]["0.weight"] == ["Shard(dim=0)"]
    # the chunk grid follows the shards: 5 rows -> 3 + 2, 3 rows -> 2 + 1
    assert root["weights/0.weight"].chunks == (2, 3, 8)
    assert root["weights/2.weight"].chunks == (2, 2, 5)
    assert root["activations/0"].chunks == (2, 4, 5)  # 8 probe examples, 4 per rank
    assert [root[f"shards/r{r}"].attrs["status"] for r in range(2)] == ["complete"] * 2


@pytest.mark.slow
def test_fsdp2_a_killed_rank_leaves_a_crashed_run_that_every_rank_resumes(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    store = tmp_path / "fsdp.zarr"
    out = _torchrun(script, store, "crash", 2)
    assert out.returncode != 0  # rank 1 and its writer were killed at step 5
    run = open_run(store)
    assert run.status == "crashed"
    root = zarr.open_group(store, mode="r")
    n, last = last_complete(root)
    # rank 0 flushed snapshots 0, 2, 4 as it went down; rank 1 only the chunk of 0, 2
    assert list(root["weights/step"][:]) == [0, 2, 4]
    assert list(root["shards/r1/weights/step"][:2]) == [0, 2]
    assert (n, last) == (2, 2)
    assert root["shards/r1"].attrs.get("status") != "complete"  # its writer was killed too
    reference = _single(tmp_path)
    assert run.weights.sizes["step"] == n
    for name in reference.weights.data_vars:  # every rank's blocks of the readable prefix
        np.testing.assert_allclose(
            run.weights[name].values, reference.weights[name].values[:n], rtol=1e-5, atol=1e-6
        )
    out = _torchrun(script, store, "resume", 2)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"rank 0 complete from {last}" in out.stdout
    assert f"rank 1 complete from {last}" in out.stdout
    resumed = open_run(store)
    assert resumed.status == "complete"
    _assert_same_run(reference, resumed)
