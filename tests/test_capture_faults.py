"""Store failures never stop training: unwritable path, full disk; strict=True raises."""

import errno
import logging

import numpy as np
import pytest
import torch
import zarr
from fsspec.implementations.asyn_wrapper import AsyncFileSystemWrapper
from fsspec.implementations.memory import MemoryFileSystem
from torch import nn

from dimlapse.analyze import open_run
from dimlapse.capture import CaptureError, CaptureOptions, Recorder


class FullDiskFS(MemoryFileSystem):
    """An in-memory filesystem that runs out of space: a fault injector, not a mock.

    Writes larger than the space left fail with ENOSPC; files under 16 kB still fit (like the
    blocks a filesystem reserves), so a full disk stops chunk writes while small metadata
    files, such as the root attrs that record the failure, can still be written.
    """

    protocol = "fulldisk"
    space_left = 10**9

    def pipe_file(self, path, value, mode="overwrite", **kwargs):
        if len(value) > type(self).space_left and len(value) > 16_384:
            raise OSError(errno.ENOSPC, "No space left on device", path)
        type(self).space_left -= len(value)
        return super().pipe_file(path, value, mode=mode, **kwargs)


def _full_disk_store(name: str) -> zarr.storage.FsspecStore:
    FullDiskFS.space_left = 10**9
    fs = AsyncFileSystemWrapper(FullDiskFS(), asynchronous=True)
    return zarr.storage.FsspecStore(fs, path=f"/fulldisk/{name}.zarr")


def _train(rec: Recorder, model: nn.Module, steps: int) -> int:
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    done = 0
    for _ in range(steps):
        loss = model(torch.randn(4, 32)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        rec.step(loss)
        done += 1
    return done


def test_disk_full_degrades_and_training_continues(caplog):
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 8))
    store = _full_disk_store("degrade")
    with caplog.at_level(logging.ERROR, logger="dimlapse.capture"):
        rec = Recorder(
            model, store, every=1, probe=torch.randn(256, 32), options=CaptureOptions(flush_every=2)
        )
        FullDiskFS.space_left = 300_000  # the next few chunks fit, then the disk is full
        assert _train(rec, model, 40) == 40
        rec.close()
    assert rec.status == "degraded"
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1  # one clear error, not one per step
    assert "No space left on device" in errors[0].getMessage()
    assert "Training continues" in errors[0].getMessage()
    run = open_run(store)
    assert run.status == "degraded"
    assert "No space left on device" in run.attrs["errors"][0]
    weights = run.weights.load()  # what was written before the failure stays readable
    n = weights.sizes["step"]
    assert 1 <= n < 41
    np.testing.assert_array_equal(weights["step"].values, np.arange(n))
    assert not np.isnan(weights["0.weight"].values).any()


def test_disk_full_strict_raises_on_training_thread():
    model = nn.Sequential(nn.Linear(32, 64))
    store = _full_disk_store("strict")
    rec = Recorder(
        model,
        store,
        every=1,
        probe=torch.randn(256, 32),
        options=CaptureOptions(flush_every=2, strict=True),
    )
    FullDiskFS.space_left = 100_000
    with pytest.raises(CaptureError, match="No space left on device"):
        _train(rec, model, 40)
        rec.close()


def test_unwritable_path_training_continues(tmp_path, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    model = nn.Linear(32, 4)
    with caplog.at_level(logging.ERROR, logger="dimlapse.capture"):
        with Recorder(model, blocker / "run.zarr", probe=torch.randn(3, 32)) as rec:
            assert _train(rec, model, 5) == 5
    assert rec.status == "degraded"
    assert rec.stats["snapshots"] == 0
    assert "capture disabled" in caplog.text and "Training continues" in caplog.text
    with pytest.raises(NotADirectoryError):
        Recorder(model, blocker / "run.zarr", options=CaptureOptions(strict=True))
