"""torch.distributed: the same three lines in every rank; one rank records a DDP run."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from dimlapse.analyze import open_run
from dimlapse.capture import CaptureOptions, Recorder

SCRIPT = """
import os, sys, torch
import torch.distributed as dist
from torch import nn
from dimlapse.capture import CaptureOptions, Recorder

STEPS, GLOBAL = 12, 16

def data(step):
    g = torch.Generator().manual_seed(step)
    return torch.randn(GLOBAL, 8, generator=g), torch.randn(GLOBAL, 4, generator=g)

def build():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4))

def main(store, distributed):
    torch.set_num_threads(1)
    rank, world = 0, 1
    if distributed:
        dist.init_process_group("gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
    model = build()
    if distributed:
        model = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    probe = torch.linspace(-1, 1, 48).reshape(6, 8)
    shard = GLOBAL // world
    options = CaptureOptions(flush_every=2, average_scalars=True)
    with Recorder(model, store, every=2, probe=probe, options=options) as rec:
        for step in range(1, STEPS + 1):
            x, y = data(step)
            x, y = x[rank * shard:(rank + 1) * shard], y[rank * shard:(rank + 1) * shard]
            loss = (model(x) - y).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            rec.step(loss, shard_rank=float(rank))
    print("rank", rank, rec.status, flush=True)
    if distributed:
        # DDP's reducer before its process group: freed after it (when main returns), gloo's
        # teardown hung now and then (1 run in 11, traced with faulthandler to that point)
        del model, opt
        dist.destroy_process_group()

if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] == "ddp")
"""


@pytest.mark.slow
def test_ddp_two_ranks_equal_a_single_process_run_of_the_global_batch(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    single, ddp = tmp_path / "single.zarr", tmp_path / "ddp.zarr"
    subprocess.run([sys.executable, str(script), str(single), "single"], check=True, timeout=300)
    out = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         str(script), str(ddp), "ddp"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert "rank 1 other rank" in out.stdout and "rank 0 complete" in out.stdout
    a, b = open_run(single), open_run(ddp)
    assert b.status == "complete"
    np.testing.assert_array_equal(a.weights["step"].values, b.weights["step"].values)
    assert set(a.weights.data_vars) == set(b.weights.data_vars) == {"0.weight", "2.weight"}
    for name in a.weights.data_vars:  # DDP's averaged gradients = the global batch's
        np.testing.assert_allclose(b.weights[name].values, a.weights[name].values, rtol=1e-5,
                                   atol=1e-6)  # fmt: skip
    for name in a.activations.data_vars:
        np.testing.assert_allclose(b.activations[name].values, a.activations[name].values,
                                   rtol=1e-5, atol=1e-6)  # fmt: skip
    # the mean over ranks of each shard's loss is the global batch's loss
    np.testing.assert_allclose(b.scalars["loss"].values, a.scalars["loss"].values, rtol=1e-5)
    np.testing.assert_allclose(b.scalars["shard_rank"].values, 0.5)  # (0 + 1) / 2


def test_outside_a_process_group_rank_must_be_zero(tmp_path):
    with pytest.raises(ValueError, match=r"Expected `rank` to be the rank that records, in 0..0"):
        Recorder(nn.Linear(2, 2), tmp_path / "r.zarr", options=CaptureOptions(rank=1))


def test_ddp_wrapper_is_unwrapped_and_fsdp_refused(tmp_path):
    model = nn.Sequential(nn.Linear(2, 2))
    with Recorder(nn.DataParallel(model), tmp_path / "r.zarr", every=1) as rec:
        rec.step(0.1)
    assert set(open_run(tmp_path / "r.zarr").weights.data_vars) == {"0.weight"}  # no "module."

    class FullyShardedDataParallel(nn.Module):  # the name FSDP wrappers carry
        def __init__(self):
            super().__init__()
            self.w = nn.Linear(2, 2)

    with pytest.raises(ValueError, match="sharded with FSDP2"):
        Recorder(FullyShardedDataParallel(), tmp_path / "f.zarr")
    assert torch.distributed.is_available()
