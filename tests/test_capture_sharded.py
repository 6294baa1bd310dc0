"""Sharded (FSDP2) capture: every rank writes its local shards into one logical run.

The job is a real ``torch.distributed.run`` of gloo processes; the reference is a
single-process run of the same model on the same global batch (FSDP2 averages gradients over
ranks, so the weights agree to float tolerance).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from torch import nn

from dimlapse.analyze import StoreIntegrityError, dimensionality, open_run
from dimlapse.capture import Recorder, last_complete
from dimlapse.capture.writer import ShardSpec, SnapshotSink, block_of, declare_sharded

SCRIPT = """
import os, signal, sys, torch
import torch.distributed as dist
from torch import nn
from dimlapse.capture import CaptureOptions, Recorder

STEPS, GLOBAL = int(os.environ.get("STEPS", 8)), 12
MODEL = os.environ.get("MODEL", "mlp")
KIND = os.environ.get("KIND", "fsdp")  # fsdp | hsdp (HSDP="RxS") | tp

def data(step):
    g = torch.Generator().manual_seed(step)
    if MODEL == "transformer":  # modular-addition-like tokens: a b =
        return torch.randint(0, 12, (GLOBAL, 3), generator=g), torch.randint(0, 11, (GLOBAL,),
                                                                             generator=g)
    return torch.randn(GLOBAL, 8, generator=g), torch.randn(GLOBAL, 3, generator=g)

def build():
    torch.manual_seed(0)
    if MODEL == "transformer":
        from dimlapse.pipelines.zoo import DataSpec, Transformer
        spec = DataSpec("modadd", "tokens", (3,), 11, vocab_size=12)
        return Transformer(spec, d=16, heads=2, depth=2, ff=24)
    if MODEL == "tp":  # tensor parallelism's local outputs must divide evenly (DTensor's
        # from_local assumes even shards of a row-wise layer's input)
        return nn.Sequential(nn.Linear(8, 6), nn.Tanh(), nn.Linear(6, 3))
    # 5 and 3 rows: neither divides evenly over 2 or 4 ranks (short and empty shards)
    return nn.Sequential(nn.Linear(8, 5), nn.Tanh(), nn.Linear(5, 3))

def shard(model, world):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    if KIND == "tp":  # tensor parallelism: column-wise then row-wise (Megatron's MLP)
        from torch.distributed.tensor.parallel import (
            ColwiseParallel, RowwiseParallel, parallelize_module)
        mesh = init_device_mesh("cpu", (world,), mesh_dim_names=("tp",))
        # LOCAL=0: the column-wise layer returns a DTensor (placed Shard(-1)), not its local part
        local = os.environ.get("LOCAL", "1") == "1"
        parallelize_module(model, mesh, {"0": ColwiseParallel(use_local_output=local),
                                         "2": RowwiseParallel()})
        return
    mesh = None
    if KIND == "hsdp":  # replicate x shard
        shape = tuple(int(k) for k in os.environ["HSDP"].split("x"))
        mesh = init_device_mesh("cpu", shape, mesh_dim_names=("replicate", "shard"))
    for block in (model.blocks if MODEL == "transformer" else [model[0]]):
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)

def objective(out, y):
    if MODEL == "transformer":
        return torch.nn.functional.cross_entropy(out, y)
    return (out - y).pow(2).mean()

def the_probe():
    if MODEL == "transformer":
        return torch.arange(24).reshape(8, 3) % 12
    return torch.linspace(-1, 1, 64).reshape(8, 8)

def main(store, how):
    torch.set_num_threads(1)
    rank, world = 0, 1
    model = build()
    if how != "single":
        dist.init_process_group("gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
        shard(model, world)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    probe = the_probe()
    part, per = rank, GLOBAL // world
    if KIND == "tp":  # every rank trains on (and probes with) the whole batch
        part, per = 0, GLOBAL
    options = CaptureOptions(flush_every=2, average_scalars=how != "single",
                             mode=os.environ.get("MODE", "full"))
    resume = how == "resume"
    with Recorder(model, store, every=2, probe=probe, options=options, resume=resume) as rec:
        start = rec.current_step  # resumed: the last snapshot every rank completed
        for step in range(1, STEPS + 1):
            x, y = data(step)
            x, y = x[part * per:(part + 1) * per], y[part * per:(part + 1) * per]
            loss = objective(model(x), y)
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
                    index = zarr.open_group(store, mode="r")["shards/r1/activations/step"][:]
                    if (index >= 0).sum() >= 2:
                        break
                    time.sleep(0.05)
                os.kill(rec._session.handle.process.pid, signal.SIGKILL)
                os.kill(os.getpid(), signal.SIGKILL)
    # one write: torchrun's children run unbuffered (-u), and print's pieces would interleave
    print(f"rank {rank} {rec.status} from {start}", flush=True)
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


def _single(tmp_path, env=None):
    """The reference: the same script's single-process run, in this process."""
    single = tmp_path / "single.zarr"
    namespace = {"__name__": "reference"}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in (env or {}).items():
            mp.setenv(key, value)
        exec(compile(SCRIPT, "train.py", "exec"), namespace)
        namespace["main"](str(single), "single")
    return open_run(single)


def _assert_same_run(a, b):
    np.testing.assert_array_equal(a.weights["step"].values, b.weights["step"].values)
    assert set(a.weights.data_vars) == set(b.weights.data_vars)
    for name in a.weights.data_vars:
        assert a.weights[name].shape == b.weights[name].shape
        np.testing.assert_allclose(b.weights[name].values, a.weights[name].values, rtol=1e-5,
                                   atol=1e-6)  # fmt: skip
    assert set(a.activations.data_vars) == set(b.activations.data_vars) != set()
    for name in a.activations.data_vars:
        assert a.activations[name].shape == b.activations[name].shape
        np.testing.assert_allclose(b.activations[name].values, a.activations[name].values,
                                   rtol=1e-5, atol=1e-6)  # fmt: skip
    np.testing.assert_allclose(b.scalars["loss"].values, a.scalars["loss"].values, rtol=1e-5)
    # biases and the rest: state/ as in a single-process run (sharded ones written as blocks)
    assert set(a.state.data_vars) == set(b.state.data_vars) != set()
    for name in a.state.data_vars:
        assert a.state[name].shape == b.state[name].shape, name
        assert a.state[name].dtype == b.state[name].dtype, name
        np.testing.assert_allclose(b.state[name].values, a.state[name].values, rtol=1e-5,
                                   atol=1e-6)  # fmt: skip


def _assert_same_analysis(a, b):
    """The analysis reads a sharded run like any other: the same spectral dimensionality of
    every weight and activation (the column- and feature-blocked arrays included)."""
    da, db = (dimensionality(r, twonn_stride=0).compute() for r in (a, b))
    assert int(np.isfinite(da["dimensionality"]).sum()) > 0
    np.testing.assert_allclose(db["dimensionality"].values, da["dimensionality"].values,
                               rtol=1e-4, atol=1e-6)  # fmt: skip


def _store_of(tmp_path, n, env):
    """A sharded job of ``n`` gloo ranks (``env``: KIND, HSDP, MODEL), its store and root."""
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    out = _torchrun(script, tmp_path / "job.zarr", "run", n, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert all(f"rank {r} complete from 0" in out.stdout for r in range(n)), out.stdout
    assert "unwaited collective" not in out.stderr
    run = open_run(tmp_path / "job.zarr")
    assert run.status == "complete"
    return run, zarr.open_group(tmp_path / "job.zarr", mode="r")


@pytest.mark.parametrize("local", ["1", pytest.param("0", marks=pytest.mark.slow)])
def test_tensor_parallel_two_ranks_equal_a_single_process_run(tmp_path, local):
    # Linear(8, 6) column-wise, Tanh, Linear(6, 3) row-wise; LOCAL=0: a DTensor output
    env = {"KIND": "tp", "MODEL": "tp", "LOCAL": local}
    run, root = _store_of(tmp_path, 2, env)
    reference = _single(tmp_path, env)
    _assert_same_run(reference, run)
    _assert_same_analysis(reference, run)
    sharded = root.attrs["sharded"]
    assert sharded["parallelism"] == "tp" and sharded["mesh_dim_names"] == ["tp"]
    assert sharded["placements"]["0.weight"] == ["Shard(dim=0)"]
    assert sharded["placements"]["2.weight"] == ["Shard(dim=1)"]
    assert sharded["placements"]["2.bias"] == ["Replicate()"]
    assert root["weights/0.weight"].chunks == (2, 3, 8)  # row blocks
    assert root["weights/2.weight"].chunks == (2, 3, 3)  # column blocks
    # the column-wise layer's local output: feature blocks; the row-wise one's: whole (rank 0)
    assert root["activations/0"].chunks == (2, 8, 3)
    assert root["activations/2"].chunks == (2, 8, 3) and root["activations/2"].shape[2] == 3
    assert sharded["activation_blocks"] == {"0": {"dim": "feature", "size": 3}, "2": "whole"}
    assert sharded["probe_examples_per_rank"] == 8  # every rank feeds the whole probe


def test_hsdp_replica_zero_writes_the_weights_and_every_rank_its_probe_rows(tmp_path):
    env = {"KIND": "hsdp", "HSDP": "2x1"}  # two replicas of one shard each
    run, root = _store_of(tmp_path, 2, env)
    reference = _single(tmp_path, env)
    _assert_same_run(reference, run)
    _assert_same_analysis(reference, run)
    sharded = root.attrs["sharded"]
    assert sharded["parallelism"] == "hsdp" and sharded["mesh_shape"] == [2, 1]
    assert sharded["mesh_dim_names"] == ["replicate", "shard"]
    assert sharded["placements"]["0.weight"] == ["Replicate()", "Shard(dim=0)"]
    assert root["weights/0.weight"].chunks == (2, 5, 8)  # one shard: the whole matrix
    assert root["activations/0"].chunks == (2, 4, 5)  # 8 probe examples, 4 per rank
    assert sharded["activation_blocks"]["0"] == {"dim": "sample", "size": 4}
    assert "weights" not in root["shards/r1"] and "activations" in root["shards/r1"]


def test_hsdp_weights_only_a_rank_that_copies_nothing_closes_cleanly(tmp_path):
    env = {"KIND": "hsdp", "HSDP": "2x1", "MODE": "weights"}  # rank 1 writes nothing at all
    run, root = _store_of(tmp_path, 2, env)
    reference = _single(tmp_path, env)
    assert set(run.weights.data_vars) == set(reference.weights.data_vars) != set()
    for name in reference.weights.data_vars:
        np.testing.assert_allclose(run.weights[name].values, reference.weights[name].values,
                                   rtol=1e-5, atol=1e-6)  # fmt: skip
    assert list(root["shards/r1"].group_keys()) == []  # no step index holds the readers back
    assert root["shards/r1"].attrs["status"] == "complete"


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
    # planted: rank 1's index loses its last 3 rows -> every reader shows the first 2 only
    index = zarr.open_array(tmp_path / "fsdp.zarr", path="shards/r1/activations/step", mode="r+")
    index[2:] = -1
    root = zarr.open_group(tmp_path / "fsdp.zarr", mode="r+", use_consolidated=False)
    assert last_complete(root) == (2, 2)
    with pytest.raises(StoreIntegrityError, match="activations/step holds 2 complete rows, but"):
        _ = open_run(tmp_path / "fsdp.zarr").activations  # a complete run lost rank 1's rows
    contents = dict(root.attrs["contents"])
    del contents["rows"]
    root.update_attributes({"status": "crashed", "contents": contents})  # as a crash leaves it
    assert open_run(tmp_path / "fsdp.zarr").activations.sizes["step"] == 2


@pytest.mark.parametrize("world", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("length", [1, 3, 5, 8, 13])
def test_blocks_are_fsdp2s_shards(length, world):
    # the independent answer: FSDP2 shards dim 0 with torch.chunk, padding with empty shards
    chunks = torch.arange(length).chunk(world)
    expected = [c.tolist() for c in chunks] + [[]] * (world - len(chunks))
    blocks = [block_of(length, rank=r, world=world) for r in range(world)]
    assert [list(range(b.start, b.start + b.local)) for b in blocks] == expected
    assert len({b.size for b in blocks}) == 1 and blocks[0].size == len(expected[0])


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize(("shape", "dim"), [((5, 3), 0), ((3, 7), 1), ((2, 3, 5), 2)])
def test_blocks_are_dtensors_shards_along_any_dim(shape, dim, world):
    # the independent answer: DTensor's own split of a tensor placed Shard(dim)
    from torch.distributed.tensor import Shard

    full = torch.arange(int(np.prod(shape))).reshape(shape)
    pieces, _ = Shard(dim)._split_tensor(full, world, with_padding=False)
    for rank, piece in enumerate(pieces):
        block = block_of(shape[dim], rank=rank, world=world, axis=dim)
        taken = [slice(None)] * len(shape)
        taken[dim] = slice(block.start, block.start + block.local)
        torch.testing.assert_close(full[tuple(taken)], piece)
        assert block.chunks(shape)[dim] == pieces[0].shape[dim]
        assert block.coords(len(shape)) == tuple(rank if i == dim else 0 for i in range(len(shape)))


def _column_sinks(root, world, blocks):
    """One SnapshotSink per rank writing its blocks of ``weights`` (as each rank's writer)."""
    return [
        SnapshotSink(root, chunk=2, scalar_chunk=4, codec="lz4", probe_examples=0,
                     groups=("weights",), shard=ShardSpec(rank=r, world=world,
                                                          blocks={"weights": blocks(r)}))
        for r in range(world)
    ]  # fmt: skip


def test_ranks_write_and_reload_column_blocks_no_rank_touching_anothers_chunks(tmp_path):
    # a row-wise layer's weight (Shard(1)): 3 ranks hold 3, 3 and 1 of its 7 columns
    world, steps = 3, 5
    full = np.arange(steps * 4 * 7, dtype=np.float32).reshape(steps, 4, 7)  # (step, d0, d1)
    root = zarr.open_group(tmp_path / "cols.zarr", mode="w")

    def blocks(r):
        return {"w": block_of(7, rank=r, world=world, axis=1)}

    declare_sharded(root.require_group("weights"), {"w": ((4, 7), blocks(0)["w"])}, chunk=2,
                    codec="lz4", attrs={}, dims={"w": ("step", "w.d0", "w.d1")})  # fmt: skip
    for r in range(1, world):
        root.require_group(f"shards/r{r}")

    def write(sinks, stop, start=0):
        for sink, r in zip(sinks, range(world), strict=True):
            b = blocks(r)["w"]
            for step in range(start, stop):
                sink.snapshot(step, weights={"w": full[step, :, b.start : b.start + b.local]},
                              state=None, activations=None)  # fmt: skip
            sink.flush()

    write(_column_sinks(root, world, blocks), 3)  # steps 0-2: one whole chunk and a partial one
    arr = zarr.open_array(tmp_path / "cols.zarr", path="weights/w", mode="r")
    assert arr.chunks == (2, 4, 3)
    np.testing.assert_array_equal(arr[:], full[:3])
    keys = sorted(k for k in os.listdir(tmp_path / "cols.zarr/weights/w/c/0/0"))
    assert keys == ["0", "1", "2"]  # one chunk column per rank
    # resume: every rank reloads its partial last chunk (step 2), then writes steps 3-4
    sinks = _column_sinks(root, world, blocks)
    for sink in sinks:
        sink.reload()
    write(sinks, steps, start=3)
    np.testing.assert_array_equal(zarr.open_array(arr.store_path.store, path="weights/w")[:], full)


# A gloo process group of one rank, in a fresh interpreter: a process group's threads must
# not outlive it in the test process, whose later tests fork writers.
GROUP_OF_ONE = """
import json, sys, torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import fully_shard
from dimlapse.capture import CaptureOptions, Recorder

out = sys.argv[1]
dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)

from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor.parallel import (
    ColwiseParallel, RowwiseParallel, parallelize_module)

def mlp(how):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3))
    if how in ("plain-bn", "sharded-bn"):  # buffers, an integer one among them
        model = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.Tanh(), nn.Linear(5, 3))
    plan = {"0": ColwiseParallel(), "2": RowwiseParallel()}
    if how in ("sharded", "sharded-bn", True):
        fully_shard(model)
    elif how == "hsdp":
        fully_shard(model, mesh=init_device_mesh("cpu", (1, 1), mesh_dim_names=("r", "s")))
    elif how == "tp":
        parallelize_module(model, init_device_mesh("cpu", (1,)), plan)
    elif how == "fsdp+tp":  # 2-D: tensor parallel inside, FSDP2 over it
        mesh = init_device_mesh("cpu", (1, 1), mesh_dim_names=("dp", "tp"))
        parallelize_module(model, mesh["tp"], plan)
        fully_shard(model, mesh=mesh["dp"])
    return model

probe = torch.linspace(-1, 1, 24).reshape(6, 4)
for name in ("plain", "sharded", "hsdp", "tp", "plain-bn", "sharded-bn"):
    model = mlp(name)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with Recorder(model, f"{out}/{name}.zarr", every=2, probe=probe,
                  options=CaptureOptions(flush_every=2)) as rec:
        for step in range(1, 6):
            x = torch.randn(8, 4, generator=torch.Generator().manual_seed(step))
            loss = model(x).pow(2).mean()
            opt.zero_grad(); loss.backward(); opt.step()
            rec.step(loss)
    assert rec.status == "complete", rec.status

cases = {
    "drop": dict(options=CaptureOptions(backpressure="drop")),
    "spectra": dict(options=CaptureOptions(mode="spectra")),
    "bitround": dict(options=CaptureOptions(codec="bitround-10")),
    "mask": dict(probe={"input": torch.zeros(4, 4), "attention_mask": torch.ones(4, 4)}),
    "memory": dict(store="memory://sharded.zarr"),
    "fsdp+tp": dict(model="fsdp+tp"),
    "tp-tanh": dict(model="tp", probe=probe, options=CaptureOptions(modules=["1"])),
}
refused = {}
for key, kwargs in cases.items():
    store = kwargs.pop("store", f"{out}/refused-{key}.zarr")
    try:
        Recorder(mlp(kwargs.pop("model", True)), store, **kwargs)
        refused[key] = None
    except Exception as exc:
        refused[key] = [type(exc).__name__, str(exc)]
with open(f"{out}/refused.json", "w") as f:
    json.dump(refused, f)
dist.destroy_process_group()
"""


@pytest.fixture(scope="module")
def group_of_one(tmp_path_factory):
    """Stores and refusals of sharded models in a gloo group of one (FSDP2 over one rank)."""
    out = tmp_path_factory.mktemp("group-of-one")
    subprocess.run([sys.executable, "-c", GROUP_OF_ONE, str(out)], check=True, timeout=300,
                   env=_env())  # fmt: skip
    return out


@pytest.mark.parametrize("how", ["sharded", "hsdp", "tp"])
def test_a_sharded_model_records_like_a_plain_one_in_a_group_of_one(group_of_one, how):
    sharded = open_run(group_of_one / f"{how}.zarr")
    _assert_same_run(open_run(group_of_one / "plain.zarr"), sharded)
    assert sharded.attrs["sharded"]["world_size"] == 1
    kind = {"sharded": "fsdp"}.get(how, how)
    assert sharded.attrs["sharded"]["parallelism"] == kind


def test_state_holds_sharded_biases_as_blocks_and_buffers_whole_like_a_plain_run(group_of_one):
    plain, sharded = (open_run(group_of_one / f"{k}-bn.zarr") for k in ("plain", "sharded"))
    _assert_same_run(plain, sharded)  # state/ included
    assert {"0.bias", "1.weight", "1.running_var", "1.num_batches_tracked"} <= set(
        sharded.state.data_vars
    )
    counts = sharded.state["1.num_batches_tracked"].values
    assert counts.dtype == np.int64 and counts.tolist() == [0, 2, 4]  # every 2 of 5 steps
    root = zarr.open_group(group_of_one / "sharded-bn.zarr", mode="r")
    assert root.attrs["sharded"]["placements"]["0.bias"] == ["Shard(dim=0)"]


@pytest.mark.parametrize(
    ("case", "error", "match"),
    [
        ("drop", "ValueError", "Expected backpressure='block' for a sharded model, got 'drop'"),
        ("spectra", "ValueError",
         "Expected mode 'full' or 'weights' for a sharded model, got 'spectra'"),
        ("bitround", "ValueError",
         "Expected a codec without filters for a sharded model, got 'bitround-10'"),
        ("mask", "ProbeError", "Expected a probe without `attention_mask` for a sharded model"),
        ("memory", "ValueError", "Expected a store path or URL every rank can open"),
        ("fsdp+tp", "ValueError", "placed (Shard(dim=0), Shard(dim=0)) on a mesh of shape "
         "(1, 1) (FSDP2 with tensor parallelism, world size 1); record the model sharded one of "
         "those ways"),
        ("tp-tanh", "ValueError", "got '1' (Tanh, [5] output features on the ranks); select those "
         "layers with CaptureOptions(modules=[...]), or record weights only with "
         "CaptureOptions(mode='weights')"),
    ],
)  # fmt: skip
def test_sharded_models_refuse_what_cannot_stay_aligned(group_of_one, case, error, match):
    refused = json.loads((group_of_one / "refused.json").read_text())
    assert refused[case] is not None, f"{case} was not refused"
    assert refused[case][0] == error
    assert match in refused[case][1]
    assert not (group_of_one / f"refused-{case}.zarr").exists()


def test_fsdp1_is_refused_pointing_to_fully_shard(tmp_path):
    class FullyShardedDataParallel(nn.Module):  # FSDP1's wrapper, by name
        def __init__(self):
            super().__init__()
            self.inner = nn.Linear(2, 2)

    with pytest.raises(ValueError, match=r"sharded with FSDP2 .*fully_shard.* got an FSDP1"):
        Recorder(nn.Sequential(FullyShardedDataParallel()), tmp_path / "r.zarr")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["fsdp", "hsdp", "tp"])
def test_a_killed_rank_leaves_a_crashed_run_that_every_rank_resumes(tmp_path, kind):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    store = tmp_path / "fsdp.zarr"
    # HSDP: rank 1, which writes no weights, is killed; TP: column blocks are reloaded
    env = {"KIND": kind, "HSDP": "2x1", **({"MODEL": "tp"} if kind == "tp" else {})}
    out = _torchrun(script, store, "crash", 2, env=env)
    assert out.returncode != 0  # rank 1 and its writer were killed at step 5
    run = open_run(store)
    assert run.status == "crashed"
    root = zarr.open_group(store, mode="r")
    n, last = last_complete(root)
    # rank 0 flushed snapshots 0, 2, 4 as it went down; rank 1 only the chunk of 0, 2
    assert list(root["weights/step"][:]) == [0, 2, 4]
    assert list(root["shards/r1/activations/step"][:2]) == [0, 2]
    assert (n, last) == (2, 2)
    assert root["shards/r1"].attrs.get("status") != "complete"  # its writer was killed too
    reference = _single(tmp_path, env)
    assert run.weights.sizes["step"] == n
    for name in reference.weights.data_vars:  # every rank's blocks of the readable prefix
        np.testing.assert_allclose(
            run.weights[name].values, reference.weights[name].values[:n], rtol=1e-5, atol=1e-6
        )
    out = _torchrun(script, store, "fsdp", 2, env=env)  # not resuming: refused on every rank
    assert out.returncode != 0
    assert "RunExistsError" in out.stderr
    assert "rank 0 could not start the sharded run: RunExistsError" in out.stderr
    assert last_complete(zarr.open_group(store, mode="r")) == (n, last)  # untouched
    other = {"fsdp": "hsdp", "hsdp": "fsdp", "tp": "fsdp"}[kind]
    out = _torchrun(script, store, "resume", 2, env={**env, "KIND": other})  # another layout
    assert out.returncode != 0
    assert (f"Expected the job to have the parallelism of the run being resumed ({kind}), got "
            f"{other}") in out.stderr  # fmt: skip
    assert last_complete(zarr.open_group(store, mode="r")) == (n, last)  # untouched
    out = _torchrun(script, store, "resume", 2, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"rank 0 complete from {last}" in out.stdout
    assert f"rank 1 complete from {last}" in out.stdout
    resumed = open_run(store)
    assert resumed.status == "complete"
    _assert_same_run(reference, resumed)


@pytest.mark.slow
def test_fsdp2_four_ranks_record_a_small_transformer_like_one_process(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    env = {"MODEL": "transformer", "STEPS": "6"}
    out = _torchrun(script, tmp_path / "fsdp.zarr", "fsdp", 4, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert all(f"rank {r} complete from 0" in out.stdout for r in range(4))
    run = open_run(tmp_path / "fsdp.zarr")
    assert run.status == "complete"
    _assert_same_run(_single(tmp_path, env), run)
    root = zarr.open_group(tmp_path / "fsdp.zarr", mode="r")
    assert root.attrs["sharded"]["world_size"] == 4
    assert root["weights/pos"].chunks[1] == 1  # (1, 3, 16) over 4 ranks: ranks 1-3 hold none
    assert root["weights/embed.weight"].chunks[1] == 3  # 12 rows, 3 per rank


@pytest.mark.slow
def test_hsdp_two_by_two_records_a_small_transformer_like_one_process(tmp_path):
    env = {"KIND": "hsdp", "HSDP": "2x2", "MODEL": "transformer", "STEPS": "6"}
    run, root = _store_of(tmp_path, 4, env)
    reference = _single(tmp_path, env)
    _assert_same_run(reference, run)
    _assert_same_analysis(reference, run)
    sharded = root.attrs["sharded"]
    assert sharded["mesh_shape"] == [2, 2] and sharded["world_size"] == 4
    assert root["weights/embed.weight"].chunks[1] == 6  # 12 rows over the 2 shards
    assert root["activations/embed"].chunks[1] == 2 * 3  # 2 examples per rank, 3 tokens each
    for r in (2, 3):  # replica 1 writes activations only
        assert "weights" not in root[f"shards/r{r}"] and "activations" in root[f"shards/r{r}"]
