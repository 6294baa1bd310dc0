"""open_run: the reader side of the store layout, on hand-built, live and crashed stores."""

import time

import numpy as np
import pytest
import torch
import xarray as xr
import zarr
from conftest import record_tiny_run

from dimlapse.analyze import Run, open_run
from dimlapse.capture import CaptureOptions, Recorder


def _array(group, name, data, *, chunk, dims, fill):
    arr = group.create_array(
        name,
        shape=data.shape,
        chunks=(chunk, *data.shape[1:]),
        dtype=data.dtype,
        fill_value=fill,
        dimension_names=dims,
    )
    arr[...] = data
    return arr


def _crashed_store(path):
    """A store as a crash leaves it: data rows beyond the step index, a half-written index."""
    # Hand-built: this exact torn layout is what is tested, and no recorded run can leave it.
    root = zarr.open_group(path, mode="w")
    root.attrs.update({"layout_version": 1, "status": "running"})
    w = root.create_group("weights")
    data = np.arange(6 * 3 * 2, dtype=np.float32).reshape(6, 3, 2)  # 6 rows written ...
    _array(
        w, "fc.weight", data, chunk=2, dims=("step", "fc.weight.d0", "fc.weight.d1"), fill=np.nan
    )
    steps = np.array([0, 5, 10, 15, -1, -1], dtype=np.int64)  # ... 4 committed
    _array(w, "step", steps, chunk=2, dims=("step",), fill=-1)
    s = root.create_group("scalars")
    _array(s, "loss", np.linspace(1, 0, 20, dtype=np.float32), chunk=8, dims=("step",), fill=np.nan)
    _array(s, "step", np.r_[np.arange(1, 17), [-1, 7, 8, 9]], chunk=8, dims=("step",), fill=-1)
    a = root.create_group("activations")  # activations: data array shorter than its index
    _array(a, "fc", np.ones((2, 4, 3), np.float32), chunk=2, dims=("step", "s", "f"), fill=np.nan)
    _array(a, "step", np.array([0, 5, 10], dtype=np.int64), chunk=2, dims=("step",), fill=-1)
    return data


def test_open_run_trims_to_last_complete_snapshot(tmp_path):
    data = _crashed_store(tmp_path / "crashed.zarr")
    run = open_run(tmp_path / "crashed.zarr")
    assert isinstance(run, Run) and run.status == "running"
    w = run.weights  # trimmed to the common prefix with activations (2 rows written)
    np.testing.assert_array_equal(w["step"].values, [0, 5])
    np.testing.assert_array_equal(w["fc.weight"].values, data[:2])
    assert w["fc.weight"].dims == ("step", "fc.weight.d0", "fc.weight.d1")
    np.testing.assert_array_equal(run.scalars["step"].values, np.arange(1, 17))
    np.testing.assert_allclose(run.scalars["loss"].values, np.linspace(1, 0, 20)[:16], rtol=1e-6)
    assert run.activations.sizes["step"] == 2  # trimmed to the shortest array of the group
    assert len(run.state.data_vars) == 0 and run.state.sizes["step"] == 0  # missing group
    assert run.probe.sizes == {}  # no probe group


def test_lazy_chunks_are_multiples_of_store_chunks(tmp_path):
    steps, flush = 80, 4  # over 64 snapshots: more than one lazy chunk
    store = record_tiny_run(tmp_path / "run.zarr", steps=steps, flush_every=flush)
    w = open_run(store).weights["0.weight"]
    chunks = w.data.chunks[0]
    assert len(chunks) > 1
    assert all(c % flush == 0 and c <= 64 for c in chunks[:-1])
    assert sum(chunks) == steps + 1


def test_live_run_shows_new_snapshots_on_each_access():
    # Records by hand: the run is read between steps, which a finished fixture run cannot show.
    store = "memory://live-run.zarr"
    model = torch.nn.Linear(3, 2)
    rec = Recorder(
        model, store, every=1, probe=torch.zeros(2, 3), options=CaptureOptions(flush_every=2)
    )
    run = open_run(store)
    assert run.status == "running"
    rec.step(0.0)  # steps 0 and 1: one full chunk
    for _ in range(100):  # the writer thread flushes asynchronously
        if run.weights.sizes["step"] == 2:
            break
        time.sleep(0.02)
    assert run.weights.sizes["step"] == 2
    for _ in range(4):
        rec.step(0.0)
    rec.close()
    assert run.weights.sizes["step"] == 6  # same Run object, re-opened arrays
    assert run.status == "complete"


def test_open_run_validates_path(tmp_path):
    # Hand-built stores that are not runs (no or a future layout), which no Recorder writes.
    with pytest.raises(FileNotFoundError, match="No run store at"):
        open_run(tmp_path / "missing.zarr")
    with pytest.raises(FileNotFoundError, match="No run store at"):
        open_run("memory://nothing-here.zarr")
    zarr.open_group(tmp_path / "plain.zarr", mode="w").attrs["x"] = 1
    with pytest.raises(ValueError, match="without a `layout_version` attr"):
        open_run(tmp_path / "plain.zarr")
    zarr.open_group(tmp_path / "future.zarr", mode="w").attrs["layout_version"] = 99
    with pytest.raises(ValueError, match=r"layout_version in \(1, 2\) .* got 99"):
        open_run(tmp_path / "future.zarr")


def test_open_run_accepts_a_store_object(tiny_run_store):
    run = open_run(zarr.storage.LocalStore(tiny_run_store, read_only=True))
    by_path = open_run(tiny_run_store)
    assert run.weights.sizes["step"] == 41 and run.probe["inputs"].shape == (32, 8)
    for group in ("weights", "activations", "scalars", "probe"):
        xr.testing.assert_identical(getattr(run, group).load(), getattr(by_path, group).load())
