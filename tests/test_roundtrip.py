"""Capture with dimlapse.capture, read with dimlapse.analyze: values equal the model's own."""

import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn

from dimlapse.analyze import open_run
from dimlapse.capture import CaptureOptions, Recorder


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 8), nn.Tanh(), nn.Linear(8, 3))


def _manual_activations(model: nn.Module, probe: torch.Tensor) -> dict[str, np.ndarray]:
    """Layer outputs computed by hand (functional ops, no hooks)."""
    w = {n: p.detach() for n, p in model.named_parameters()}
    h0 = probe @ w["0.weight"].T + w["0.bias"]
    h2 = torch.relu(h0) @ w["2.weight"].T + w["2.bias"]
    h4 = torch.tanh(h2) @ w["4.weight"].T + w["4.bias"]
    return {"0": h0.cpu().numpy(), "2": h2.cpu().numpy(), "4": h4.cpu().numpy()}


@pytest.mark.parametrize("where", ["local", "memory"])
def test_roundtrip_values_equal_model_at_capture_steps(tmp_path, where):
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    probe = torch.randn(20, 6)
    targets = torch.arange(20) % 3
    store = str(tmp_path / "run.zarr") if where == "local" else f"memory://rt-{tmp_path.name}.zarr"
    expected_w, expected_a, losses = {}, {}, []
    with Recorder(
        model,
        store,
        every=3,
        probe=probe,
        probe_targets=targets,
        attrs={"seed": 0},
        options=CaptureOptions(flush_every=2),
    ) as rec:
        expected_w[0] = {n: p.detach().clone().numpy() for n, p in model.named_parameters()}
        expected_a[0] = _manual_activations(model, probe)
        for step in range(1, 17):
            x = torch.randn(8, 6)
            loss = model(x).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            captured = rec.step(loss, grad_norm=torch.tensor(float(step)))
            assert captured == (step % 3 == 0)
            if captured:
                expected_w[step] = {
                    n: p.detach().clone().numpy() for n, p in model.named_parameters()
                }
                expected_a[step] = _manual_activations(model, probe)
    run = open_run(store)
    assert run.attrs["status"] == "complete"
    assert run.attrs["seed"] == 0
    assert run.attrs["every"] == 3
    steps = sorted(expected_w)
    np.testing.assert_array_equal(run.weights["step"].values, steps)
    np.testing.assert_array_equal(run.activations["step"].values, steps)
    for i, step in enumerate(steps):
        for name in ("0.weight", "2.weight", "4.weight"):
            np.testing.assert_array_equal(run.weights[name].values[i], expected_w[step][name])
        for name in ("0.bias", "2.bias", "4.bias"):  # stored under state/ for replay
            np.testing.assert_array_equal(run.state[name].values[i], expected_w[step][name])
        for layer, value in expected_a[step].items():
            np.testing.assert_allclose(
                run.activations[layer].values[i], value, rtol=1e-5, atol=1e-6
            )
    np.testing.assert_array_equal(run.scalars["step"].values, np.arange(1, 17))
    np.testing.assert_allclose(run.scalars["loss"].values, losses, rtol=1e-6)
    np.testing.assert_array_equal(run.scalars["grad_norm"].values, np.arange(1, 17))
    assert np.all(np.diff(run.scalars["wall_time"].values) >= 0)
    np.testing.assert_array_equal(run.probe["inputs"].values, probe.numpy())
    np.testing.assert_array_equal(run.probe["targets"].values, targets.numpy())
    assert set(run.weights.data_vars) == {"0.weight", "2.weight", "4.weight"}
    attrs = run.activations["0"].attrs
    assert attrs["kind"] == "activation" and attrs["module_type"] == "Linear"
    assert attrs["reduction"] == "none" and attrs["probe_examples"] == 20
    assert run.weights["2.weight"].attrs == {"layer": "2", "kind": "weight"}


def test_complete_run_opens_with_xr_open_zarr(tmp_path):
    store = tmp_path / "run.zarr"
    model = _mlp()
    with Recorder(
        model, store, every=1, probe=torch.randn(5, 6), options=CaptureOptions(flush_every=2)
    ) as rec:
        for _ in range(3):
            rec.step(0.0)
    ds = xr.open_zarr(store, group="weights")  # consolidated at close: opens without warnings
    assert ds["0.weight"].dims == ("step", "0.weight.d0", "0.weight.d1")
    np.testing.assert_array_equal(ds["step"].values, [0, 1, 2, 3])
    acts = xr.open_zarr(store, group="activations")
    assert acts["2"].shape == (4, 5, 8)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("activations", [True, False])
def test_roundtrip_on_cuda(tmp_path, activations):
    """Device-side snapshots, side-stream probe forward, pinned non-blocking host copies."""
    model = _mlp().cuda()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    probe = torch.randn(64, 6, device="cuda")
    expected_w, expected_a = {}, {}
    store = tmp_path / "cuda.zarr"
    with Recorder(
        model,
        store,
        every=2,
        probe=probe,
        options=CaptureOptions(mode="full" if activations else "weights", flush_every=2),
    ) as rec:
        for step in range(1, 21):
            loss = model(torch.randn(32, 6, device="cuda")).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            if rec.step(loss, grad_norm=loss * 2):
                expected_w[step] = model.get_parameter("0.weight").detach().cpu().numpy().copy()
                expected_a[step] = _manual_activations(model, probe)
    run = open_run(store)
    weights = run.weights.load()
    np.testing.assert_array_equal(weights["step"].values, np.arange(0, 21, 2))
    for i, step in enumerate(range(2, 21, 2), start=1):
        np.testing.assert_array_equal(weights["0.weight"].values[i], expected_w[step])
        if activations:
            np.testing.assert_allclose(
                run.activations["2"].values[i], expected_a[step]["2"], rtol=1e-4, atol=1e-5
            )
    scalars = run.scalars.load()
    np.testing.assert_allclose(scalars["grad_norm"].values, 2 * scalars["loss"].values, rtol=1e-6)
