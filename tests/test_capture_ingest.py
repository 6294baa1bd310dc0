"""``dimlapse.capture.ingest``: checkpoint series the tests write in every format, into run stores.

The independent answer is always what the test saved: the tensors, their steps, and blake2b
digests computed here of their bytes.
"""

import hashlib
import os
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
import torch
import zarr
from torch import nn

from dimlapse.capture import RunExistsError, ingest
from dimlapse.capture.ingest import open_checkpoint, step_from_name

STEPS = (0, 50, 100, 150)
DUPLICATE = 100  # the series repeats step 50's weights at this step


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 12), nn.BatchNorm1d(12), nn.ReLU(), nn.Linear(12, 3))


def _series():
    """State dicts at STEPS; the one at DUPLICATE equals the previous one byte for byte."""
    model = _model()
    out = []
    for step in STEPS:
        if step and step != DUPLICATE:
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(torch.randn_like(p) * 0.1)
                model[1].running_mean.add_(0.5)
                model[1].num_batches_tracked.add_(1)
        out.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    return out


def _write(fmt, tmp_path, states):
    """Write ``states`` as a series in format ``fmt``; returns (paths, steps to pass or None)."""
    paths = []
    for step, sd in zip(STEPS, states, strict=True):
        if fmt == "torch":  # step in the name
            p = tmp_path / f"step_{step}.pt"
            torch.save(sd, p)
        elif fmt == "torch-wrapped":  # step in the metadata, an optimizer beside the model
            p = tmp_path / f"ckpt-{len(paths)}-final.pt"
            opt = {"state": {0: {"exp_avg": torch.ones(3)}}}
            torch.save({"model": sd, "optimizer": opt, "step": step}, p)
        elif fmt == "safetensors":
            from safetensors.torch import save_file

            p = tmp_path / f"weights-{len(paths)}x.safetensors"
            save_file(sd, str(p), metadata={"step": str(step)})
        elif fmt == "dcp":
            import torch.distributed.checkpoint as dcp

            p = tmp_path / f"dcp-step{step}"
            with warnings.catch_warnings():  # torch says so on every single-process save
                warnings.filterwarnings("ignore", message="torch.distributed is disabled")
                dcp.save({"model": sd, "step": step}, checkpoint_id=str(p), no_dist=True)
        elif fmt == "nameless":  # no step anywhere: given by the caller
            p = tmp_path / f"a{'bcde'[len(paths)]}.pt"
            torch.save(sd, p)
        paths.append(str(p))
    return paths, (list(STEPS) if fmt == "nameless" else None)


def _digest(t):
    return hashlib.blake2b(t.numpy().tobytes(), digest_size=16).hexdigest()


FORMATS = ["torch", "torch-wrapped", "safetensors", "dcp", "nameless"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_series_becomes_a_run_store(fmt, tmp_path):
    pytest.importorskip("safetensors") if fmt == "safetensors" else None
    states = _series()
    paths, steps = _write(fmt, tmp_path, states)
    store = str(tmp_path / "run.zarr")
    out = ingest(paths, store, steps=steps)
    assert out["steps"] == list(STEPS)
    assert out["duplicate_snapshots"] == [DUPLICATE]
    root = zarr.open_group(store, mode="r")
    attrs = dict(root.attrs)
    assert attrs["status"] == "complete"
    assert attrs["duplicate_snapshots"] == [DUPLICATE]
    assert attrs["layout_version"] == 2 and attrs["mode"] == "weights"
    assert sorted(root["weights"].array_keys()) == ["0.weight", "3.weight", "step"]
    np.testing.assert_array_equal(root["weights/step"][:], STEPS)
    np.testing.assert_array_equal(root["state/step"][:], STEPS)
    for i, sd in enumerate(states):
        for name, t in sd.items():
            group = "weights" if name.endswith("weight") and t.ndim == 2 else "state"
            stored = root[f"{group}/{name}"]
            np.testing.assert_array_equal(stored[i], t.numpy())
            assert stored.attrs["content_hash"][i] == _digest(t)
    assert root["state/1.num_batches_tracked"].dtype == np.int64


def test_open_run_and_analysis_read_it(tmp_path):
    pytest.importorskip("xarray")
    from dimlapse.analyze import open_run

    paths, _ = _write("torch", tmp_path, _series())
    ingest(paths, str(tmp_path / "run.zarr"))
    run = open_run(str(tmp_path / "run.zarr"))
    np.testing.assert_array_equal(run.weights["step"].values, STEPS)
    assert run.weights["0.weight"].shape == (4, 12, 6)


def test_duplicates_need_every_weight_identical(tmp_path):
    states = _series()
    states[3] = {k: v.clone() for k, v in states[2].items()}
    states[3]["3.weight"][0, 0] += 1.0  # one value of one matrix differs: not a duplicate
    paths, _ = _write("torch", tmp_path, states)
    out = ingest(paths, str(tmp_path / "run.zarr"))
    assert out["duplicate_snapshots"] == [DUPLICATE]
    hashes = zarr.open_group(str(tmp_path / "run.zarr"))["weights/0.weight"].attrs["content_hash"]
    assert hashes[3] == hashes[2] and hashes[1] != hashes[0]


@pytest.mark.parametrize("chunk_bytes", [1, 2**30])  # one snapshot per chunk (streamed), all in one
def test_streamed_and_buffered_writes_agree(chunk_bytes, tmp_path, monkeypatch):
    from dimlapse.capture.ingest import _ingest

    monkeypatch.setattr(_ingest, "CHUNK_BYTES", chunk_bytes)
    states = _series()
    paths, _ = _write("torch", tmp_path, states)
    ingest(paths, str(tmp_path / "run.zarr"))
    root = zarr.open_group(str(tmp_path / "run.zarr"), mode="r")
    assert root.attrs["flush_every"] == (1 if chunk_bytes == 1 else 4)
    for i, sd in enumerate(states):
        np.testing.assert_array_equal(root["weights/0.weight"][i], sd["0.weight"].numpy())
        np.testing.assert_array_equal(root["state/0.bias"][i], sd["0.bias"].numpy())


def test_params_select_by_glob(tmp_path):
    paths, _ = _write("torch", tmp_path, _series())
    ingest(paths, str(tmp_path / "run.zarr"), params=["3.*"])
    root = zarr.open_group(str(tmp_path / "run.zarr"), mode="r")
    assert sorted(root["weights"].array_keys()) == ["3.weight", "step"]
    assert sorted(root["state"].array_keys()) == ["3.bias", "step"]
    with pytest.raises(ValueError, match="Expected `params` to match some tensor"):
        ingest(paths, str(tmp_path / "other.zarr"), params="nothing.*")


def test_activations_replayed_with_model_and_probe(tmp_path):
    states = _series()
    paths, _ = _write("torch", tmp_path, states)
    probe = torch.randn(20, 6)
    out = ingest(paths, str(tmp_path / "run.zarr"), model=_model, probe=probe)  # a factory
    assert out["replayed"] == len(STEPS)
    root = zarr.open_group(str(tmp_path / "run.zarr"), mode="r")
    assert root.attrs["mode"] == "full" and root.attrs["activations"] is True
    assert root.attrs["status"] == "complete" and root.attrs["replayed"]["snapshots"] == 4
    for i, sd in enumerate(states):  # independent: the model with each state dict, in eval mode
        m = _model(seed=1).eval()
        m.load_state_dict(sd)
        with torch.no_grad():
            first = m[0](probe)
        np.testing.assert_allclose(root["activations/0"][i], first.numpy(), rtol=1e-6, atol=1e-6)


def test_model_must_match_to_replay(tmp_path):
    paths, _ = _write("torch", tmp_path, _series())
    with pytest.raises(ValueError, match="not read from the checkpoints"):
        ingest(
            paths, str(tmp_path / "r.zarr"), params="3.*", model=_model(), probe=torch.ones(2, 6)
        )
    wide = nn.Sequential(nn.Linear(6, 13))
    with pytest.raises(ValueError, match="shapes differ"):
        ingest(paths, str(tmp_path / "r.zarr"), params="0.*", model=wide, probe=torch.ones(2, 6))


def test_refusals(tmp_path):
    states = _series()
    paths, _ = _write("torch", tmp_path, states)
    with pytest.raises(ValueError, match="increasing step order, got step 50"):
        ingest([paths[0], paths[2], paths[1]], str(tmp_path / "a.zarr"))
    with pytest.raises(ValueError, match="increasing step order"):
        ingest(paths[:2], str(tmp_path / "a.zarr"), steps=[10, 10])
    with pytest.raises(ValueError, match="Expected `steps` to be 2 non-negative ints"):
        ingest(paths[:2], str(tmp_path / "a.zarr"), steps=[1])
    nameless, _ = _write("nameless", tmp_path, states)
    with pytest.raises(ValueError, match=r"pass `steps=\[...\]`"):
        ingest(nameless, str(tmp_path / "a.zarr"))
    with pytest.raises(ValueError, match="non-empty list of checkpoint paths"):
        ingest(paths[0], str(tmp_path / "a.zarr"))
    with pytest.raises(FileNotFoundError, match="Expected a checkpoint at"):
        ingest([str(tmp_path / "missing.pt")], str(tmp_path / "a.zarr"))
    other = {**states[1], "3.weight": torch.zeros(4, 12)}
    torch.save(other, tmp_path / "step_200.pt")
    with pytest.raises(
        ValueError, match=r"step_200.pt' changes \['3.weight \(3, 12\) -> \(4, 12\)"
    ):
        ingest([paths[0], str(tmp_path / "step_200.pt")], str(tmp_path / "a.zarr"))
    torch.save({"lr": 0.1}, tmp_path / "step_300.pt")
    with pytest.raises(ValueError, match="state dict of tensors"):
        ingest([str(tmp_path / "step_300.pt")], str(tmp_path / "a.zarr"))
    (tmp_path / "step_400.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"Could not read .*step_400\.pt.* as a torch\.save state"):
        ingest([str(tmp_path / "step_400.pt")], str(tmp_path / "a.zarr"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="save_pretrained folder"):
        ingest([str(tmp_path / "empty")], str(tmp_path / "a.zarr"))
    ingest(paths, str(tmp_path / "b.zarr"))
    with pytest.raises(RunExistsError, match="overwrite=True"):
        ingest(paths, str(tmp_path / "b.zarr"))
    assert ingest(paths, str(tmp_path / "b.zarr"), overwrite=True)["snapshots"] == 4


@pytest.mark.parametrize(
    ("name", "step"),
    [("step_1000.pt", 1000), ("checkpoint-500", 500), ("model_300.safetensors", 300),
     ("step1000", 1000), ("global_step=20.ckpt", 20), ("model.safetensors", None),
     ("mnist1d-run.pt", None), ("/a/checkpoint-7/", 7)],
)  # fmt: skip
def test_step_from_name(name, step):
    assert step_from_name(name) == step


def test_huggingface_folders_single_and_sharded(tmp_path):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("safetensors")
    config = transformers.GPT2Config(n_embd=16, n_layer=2, n_head=2, n_positions=16, vocab_size=50)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config)
    paths, expected = [], []
    for i, step in enumerate((10, 20, 30)):
        with torch.no_grad():
            model.transformer.h[0].mlp.c_fc.weight.add_(1.0)
        folder = tmp_path / f"checkpoint-{step}"
        shard = "2KB" if i == 1 else "5GB"  # the middle one sharded with an index
        model.save_pretrained(folder, max_shard_size=shard)
        expected.append(model.transformer.h[0].mlp.c_fc.weight.detach().clone())
        paths.append(str(folder))
    assert (tmp_path / "checkpoint-20" / "model.safetensors.index.json").is_file()
    ckpt = open_checkpoint(paths[1])
    assert ckpt.kind == "huggingface" and ckpt.step == 20
    out = ingest(paths, str(tmp_path / "run.zarr"))
    assert out["steps"] == [10, 20, 30] and out["duplicate_snapshots"] == []
    root = zarr.open_group(str(tmp_path / "run.zarr"), mode="r")
    for i, w in enumerate(expected):
        np.testing.assert_array_equal(root["weights/transformer.h.0.mlp.c_fc.weight"][i], w.numpy())
    assert root.attrs["ingested"]["formats"] == ["huggingface"]


def test_dcp_step_from_metadata_and_wrapper(tmp_path):
    states = _series()
    paths, _ = _write("dcp", tmp_path, states)
    ckpt = open_checkpoint(paths[1])
    assert ckpt.kind == "dcp" and ckpt.step == 50
    assert set(ckpt.specs) == set(states[0])  # "model." stripped


def test_cli_ingest(tmp_path, capsys):
    from dimlapse.pipelines.cli import main

    paths, _ = _write("nameless", tmp_path, _series())
    store = str(tmp_path / "run.zarr")
    assert main(["ingest", *paths, "--store", store, "--steps", ",".join(map(str, STEPS))]) == 0
    printed = capsys.readouterr().out
    assert "4 snapshots, steps 0..150" in printed and "[100]" in printed
    assert main(["ingest", *paths, "--store", store]) == 2
    assert "pass `steps=[...]`" in capsys.readouterr().err


_PEAK_SCRIPT = """
import sys, torch
from dimlapse.capture import ingest
print("ready", flush=True)
sys.stdin.readline()
if sys.argv[1] == "control":  # the sampler's check: a whole checkpoint loaded and held
    from safetensors.torch import load_file
    path = sys.argv[3]
    if path.endswith(".safetensors"):  # load_file maps the file: copy to private memory
        held = {k: v.clone() for k, v in load_file(path).items()}
    else:
        held = torch.load(path)
else:
    ingest(sys.argv[3:], sys.argv[2])
"""


def _rss_kb(pid):
    """(private, file-backed) resident kB of a process."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("RssAnon:", "RssFile:")):
                out[line.split(":")[0]] = int(line.split()[1])
    return np.array([out.get("RssAnon", 0), out.get("RssFile", 0)])


def _peak_growth_mb(args):
    """Peak growth (MB) of a child's private and file-backed resident memory, sampled about
    every ms from outside."""
    with subprocess.Popen(
        [sys.executable, "-c", _PEAK_SCRIPT, *args],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=os.getcwd(),
    ) as proc:  # fmt: skip
        assert proc.stdout.readline().strip() == "ready"
        base = peak = _rss_kb(proc.pid)
        proc.stdin.write("\n")
        proc.stdin.flush()
        while proc.poll() is None:
            try:
                peak = np.maximum(peak, _rss_kb(proc.pid))
            except (FileNotFoundError, ProcessLookupError):
                break
            time.sleep(0.001)
        assert proc.wait() == 0
    return (peak - base) / 1024


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc")
@pytest.mark.parametrize("fmt", ["torch", "safetensors"])
def test_peak_memory_is_about_one_tensor(fmt, tmp_path):
    """Peak private (anonymous) memory while ingesting, sampled every ms from outside, against
    the checkpoint's size (8 tensors of 16 MB, 2 checkpoints) and against loading one whole
    checkpoint in the same harness (the control: the sampler sees a whole checkpoint)."""
    tensor_mb, n_tensors = 16, 8
    rows = tensor_mb * 2**20 // 4 // 1024
    paths = []
    for step in (0, 1):
        sd = {
            f"layer{i}.weight": torch.full((rows, 1024), float(step + i)) for i in range(n_tensors)
        }
        if fmt == "torch":
            p = tmp_path / f"step_{step}.pt"
            torch.save(sd, p)
        else:
            from safetensors.torch import save_file

            p = tmp_path / f"step_{step}.safetensors"
            save_file(sd, str(p))
        paths.append(str(p))
        del sd
    control, _ = _peak_growth_mb(["control", "-", paths[0]])
    grown, mapped = _peak_growth_mb(["ingest", str(tmp_path / "run.zarr"), *paths])
    size = tensor_mb * n_tensors
    print(f"{fmt}: checkpoint {size} MB, tensor {tensor_mb} MB; ingesting 2 checkpoints: peak "
          f"private memory +{grown:.0f} MB, file pages mapped +{mapped:.0f} MB; loading one "
          f"checkpoint: +{control:.0f} MB private")  # fmt: skip
    assert control > 0.9 * size  # the sampler sees a whole checkpoint in private memory
    assert grown < 3 * tensor_mb  # far below one checkpoint
    assert mapped < 1.3 * size  # each checkpoint's maps dropped before the next is read
    root = zarr.open_group(str(tmp_path / "run.zarr"), mode="r")
    assert root.attrs["flush_every"] == 1
    assert float(root["weights/layer7.weight"][1, 0, 0]) == 8.0
    assert root.attrs["duplicate_snapshots"] == []


def test_half_precision_is_stored_as_float32(tmp_path):
    states = [{k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in sd.items()}
              for sd in _series()]  # fmt: skip
    paths, _ = _write("torch", tmp_path, states)
    ingest(paths, str(tmp_path / "run.zarr"))
    root = zarr.open_group(str(tmp_path / "run.zarr"), mode="r")
    stored = root["weights/0.weight"]
    assert stored.dtype == np.float32
    np.testing.assert_array_equal(stored[2], states[2]["0.weight"].float().numpy())
    assert stored.attrs["content_hash"][2] == _digest(states[2]["0.weight"].float())
