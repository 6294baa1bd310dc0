"""Weights-only capture + replay gives the activations inline capture gives."""

import numpy as np
import pytest
import torch
from torch import nn

from dimlapse.analyze import open_run
from dimlapse.capture import CaptureOptions, Recorder, RunExistsError, replay


class _ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(4 * 5 * 5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(torch.relu(self.bn(self.conv(x)))).flatten(1))


def _run(store, *, activations: bool) -> None:
    torch.manual_seed(0)
    model = _ConvNet()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    probe = torch.randn(6, 2, 7, 7, generator=torch.Generator().manual_seed(5))
    with Recorder(
        model,
        store,
        every=2,
        probe=probe,
        options=CaptureOptions(
            mode="full" if activations else "weights", flush_every=3, positions=5
        ),
    ) as rec:
        for _ in range(10):
            loss = model(torch.randn(8, 2, 7, 7)).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            rec.step(loss)


def test_replay_equals_inline_capture(tmp_path):
    inline, weights_only = tmp_path / "inline.zarr", tmp_path / "wo.zarr"
    _run(inline, activations=True)
    _run(weights_only, activations=False)
    assert len(open_run(weights_only).activations.data_vars) == 0
    assert open_run(weights_only).attrs["activations"] is False
    torch.manual_seed(99)
    fresh = _ConvNet()  # different values: replay must load every stored tensor
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    assert replay(weights_only, fresh, positions=5) == 6
    for key, value in fresh.state_dict().items():  # the model is left as it was
        assert torch.equal(value, before[key]), key
    assert fresh.training
    expected, got = open_run(inline).activations.load(), open_run(weights_only).activations.load()
    assert set(got.data_vars) == set(expected.data_vars) == {"conv", "fc"}
    np.testing.assert_array_equal(got["step"].values, [0, 2, 4, 6, 8, 10])
    for name in expected.data_vars:
        np.testing.assert_allclose(got[name].values, expected[name].values, rtol=1e-5, atol=1e-6)
        assert got[name].attrs == expected[name].attrs
    with pytest.raises(RunExistsError, match="already holds activations; pass overwrite=True"):
        replay(weights_only, fresh)
    assert replay(weights_only, fresh, overwrite=True, modules=["fc"]) == 6
    assert set(open_run(weights_only).activations.data_vars) == {"fc"}


def test_replay_validates_model_and_store(tmp_path):
    store = tmp_path / "wo.zarr"
    _run(store, activations=False)
    with pytest.raises(ValueError, match="Expected `model` to match the recorded architecture"):
        replay(store, nn.Sequential(nn.Linear(3, 3)))
    with pytest.raises(FileNotFoundError, match="Expected a run store"):
        replay(tmp_path / "missing.zarr", _ConvNet())
    no_probe = tmp_path / "noprobe.zarr"
    Recorder(_ConvNet(), no_probe).close()
    with pytest.raises(ValueError, match="Expected a stored probe"):
        replay(no_probe, _ConvNet())
