"""Spectra mode: stored spectra give the dimensionality of a full capture of the same training."""

import numpy as np
import pytest
import torch
from torch import nn

from dimlapse.analyze import dimensionality, open_run
from dimlapse.capture import CaptureOptions, Recorder, StoreTooSmallError
from dimlapse.pipelines.zoo._data import digits
from dimlapse.pipelines.zoo._models import MLP


def _train(store, mode, steps=40):
    torch.manual_seed(0)
    data = digits()
    model = MLP(data.x_train[0].numel(), 10)  # the study's 784-256-128-10
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    probe = data.x_test[:128]
    with Recorder(
        model, store, every=5, probe=probe, options=CaptureOptions(mode=mode, full_every=20)
    ) as rec:
        for _ in range(steps):
            b = torch.randint(len(data.y_train), (64,), generator=gen)
            loss = nn.functional.cross_entropy(model(data.x_train[b]), data.y_train[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            rec.step(loss.detach())
    return open_run(store)


def test_spectra_mode_dimensionality_equals_full_mode(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # bitwise-identical training in both runs
    try:
        full = _train(tmp_path / "full.zarr", "full")
        spec = _train(tmp_path / "spec.zarr", "spectra")
    finally:
        torch.set_num_threads(threads)
    assert spec.attrs["mode"] == "spectra" and spec.attrs["layout_version"] == 2
    np.testing.assert_array_equal(spec.weights["step"].values, [0, 20, 40])  # sparse, full
    np.testing.assert_array_equal(spec.spectra["weight"]["step"].values, np.arange(0, 41, 5))
    a = dimensionality(full, twonn_stride=0).compute()["dimensionality"]
    b = dimensionality(spec, twonn_stride=0).compute()["dimensionality"]
    assert a.sizes == b.sizes
    np.testing.assert_array_equal(a["layer"].values, b["layer"].values)
    xa, xb = a.values, b.values
    assert np.isfinite(xa).sum() == np.isfinite(xb).sum() > 0
    np.testing.assert_allclose(xb, xa, rtol=1e-6)
    full_bytes = full.attrs["stats"]["bytes_raw"] / full.attrs["stats"]["snapshots"]
    spec_per = sum(
        8 * int(spec.spectra[k][v].shape[1]) for k in spec.spectra for v in spec.spectra[k]
    )
    assert spec_per < 0.01 * full_bytes  # the per-step spectra: under 1 % of a full snapshot


def test_run_that_cannot_fit_the_disk_is_refused_naming_modes_that_fit(tmp_path):
    import shutil

    free = shutil.disk_usage(tmp_path).free
    model = nn.Linear(1000, 1000)  # 4 MB a snapshot
    steps = int(2.5 * free / 4e6)  # full mode would need 2.5x the free space
    with pytest.raises(StoreTooSmallError, match=r"modes that fit: 'spectra'"):
        Recorder(
            model,
            tmp_path / "big.zarr",
            every=1,
            probe=torch.randn(8, 1000),
            options=CaptureOptions(total_steps=steps),
        )
    assert not (tmp_path / "big.zarr").exists()
