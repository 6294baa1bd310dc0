"""Module selection and the (row, feature) reductions, against hand-computed outputs."""

import numpy as np
import pytest
import torch
from torch import nn

from dimlapse.analyze import open_run
from dimlapse.capture import CaptureOptions, Recorder
from dimlapse.capture._select import sampled_indices, select_modules, select_params


class _Attn(nn.Module):
    def __init__(self, batch_first: bool) -> None:
        super().__init__()
        self.embed = nn.Embedding(11, 8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=batch_first)
        self.head = nn.Linear(8, 3)
        self.batch_first = batch_first

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # tokens (N, T)
        x = self.embed(tokens)  # (N, T, E)
        if not self.batch_first:
            x = x.transpose(0, 1)  # (T, N, E)
        y, _ = self.attn(x, x, x)
        return self.head(y)


@pytest.mark.parametrize("batch_first", [True, False])
def test_mha_hooked_at_module_output_with_token_sample(batch_first):
    torch.manual_seed(0)
    model = _Attn(batch_first)
    probe = torch.randint(0, 11, (5, 9))  # (N, T)
    store = f"memory://mha-{batch_first}.zarr"
    Recorder(model, store, probe=probe, options=CaptureOptions(tokens=3)).close()
    run = open_run(store)
    assert "attn" in run.activations and "attn.out_proj" not in run.activations
    with torch.no_grad():
        x = model.embed(probe)
        xin = x if batch_first else x.transpose(0, 1)
        y = model.attn(xin, xin, xin)[0]
        y = y if batch_first else y.transpose(0, 1)  # (N, T, E)
    idx = sampled_indices("attn", 9, 3)
    expected = y[:, idx].reshape(-1, 8).numpy()  # rows (example, token), example-major
    stored = run.activations["attn"]
    np.testing.assert_allclose(stored.values[0], expected, rtol=1e-5, atol=1e-6)
    assert stored.attrs["reduction"] == "tokens"
    assert stored.attrs["tokens"] == idx.tolist()
    assert stored.attrs["rows_per_example"] == 3
    np.testing.assert_allclose(
        run.activations["embed"].values[0], x[:, sampled_indices("embed", 9, 3)].reshape(-1, 8)
    )


def test_transformer_layer_sequence_first_and_no_fast_path():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.1)  # (T, N, E)
    model = nn.Sequential(layer)
    probe = torch.randn(7, 4, 8)  # (T=7, N=4, E=8)
    Recorder(model, "memory://tel.zarr", probe=probe, options=CaptureOptions(tokens=2)).close()
    run = open_run("memory://tel.zarr")
    layer.eval()
    with torch.no_grad():
        out = layer(probe).transpose(0, 1)  # (N, T, E)
        ff_in = layer.norm1(probe + layer.self_attn(probe, probe, probe)[0])
        lin1 = layer.linear1(ff_in).transpose(0, 1)  # (N, T, 16)
    np.testing.assert_allclose(
        run.activations["0"].values[0],
        out[:, sampled_indices("0", 7, 2)].reshape(-1, 8),
        rtol=1e-5,
        atol=1e-5,
    )
    np.testing.assert_allclose(  # inner Linear hooks fire: the fused fast path was avoided
        run.activations["0.linear1"].values[0],
        lin1[:, sampled_indices("0.linear1", 7, 2)].reshape(-1, 16),
        rtol=1e-5,
        atol=1e-5,
    )
    assert set(run.activations.data_vars) == {"0", "0.self_attn", "0.linear1", "0.linear2"}


@pytest.mark.parametrize("dims", [1, 2])
def test_conv_channels_over_sampled_positions(dims):
    torch.manual_seed(0)
    conv = nn.Conv1d(3, 5, 3) if dims == 1 else nn.Conv2d(3, 5, 3)
    model = nn.Sequential(conv, nn.ReLU(), nn.Flatten())
    probe = torch.randn(4, 3, 10) if dims == 1 else torch.randn(4, 3, 6, 7)
    store = f"memory://conv{dims}.zarr"
    Recorder(model, store, probe=probe, options=CaptureOptions(positions=6)).close()
    run = open_run(store)
    with torch.no_grad():
        out = conv(probe).reshape(4, 5, -1)  # (N, C, S)
    idx = sampled_indices("0", out.shape[2], 6)
    expected = out[:, :, idx].transpose(1, 2).reshape(-1, 5)  # (N * P, C)
    stored = run.activations["0"]
    assert stored.shape == (1, 4 * 6, 5)
    np.testing.assert_allclose(stored.values[0], expected, rtol=1e-5, atol=1e-6)
    assert stored.attrs["reduction"] == "positions" and stored.attrs["positions"] == idx.tolist()
    assert run.weights["0.weight"].shape == (1, 5, 3, 3) if dims == 1 else (1, 5, 3, 3, 3)


def test_fewer_positions_than_requested_keeps_all():
    np.testing.assert_array_equal(sampled_indices("x", 4, 16), np.arange(4))
    a, b = sampled_indices("layer", 100, 10), sampled_indices("layer", 100, 10)
    np.testing.assert_array_equal(a, b)  # fixed, seeded by name
    assert len(set(a.tolist())) == 10 and np.all(np.diff(a) > 0)
    assert not np.array_equal(a, sampled_indices("other", 100, 10))


def test_selection_by_type_glob_callable():
    model = _Attn(True)
    default = [n for n, _ in select_modules(model, None)]
    assert default == ["embed", "attn", "head"]
    assert [n for n, _ in select_modules(model, [nn.Linear])] == ["head"]  # never out_proj
    assert [n for n, _ in select_modules(model, "he*")] == ["head"]
    assert [n for n, _ in select_modules(model, ["embed", "attn"])] == ["embed", "attn"]
    assert [n for n, _ in select_modules(model, lambda n, m: n.startswith("e"))] == ["embed"]
    with pytest.raises(ValueError, match=r"never calls its `out_proj` forward.*select 'attn'"):
        select_modules(model, "attn.out_proj")
    with pytest.raises(ValueError, match=r"Expected `modules` types to be nn\.Module subclasses"):
        select_modules(model, [nn.Linear, int])


def test_param_selection():
    model = _Attn(True)
    assert select_params(model, "*") == [
        "embed.weight",
        "attn.in_proj_weight",
        "attn.out_proj.weight",
        "head.weight",
    ]
    assert select_params(model, ["head.*"]) == ["head.weight"]  # ndim >= 2 only
    assert select_params(model, lambda n, p: n.endswith("bias")) == [
        "attn.in_proj_bias",
        "attn.out_proj.bias",
        "head.bias",
    ]
    assert select_params(model, None) == []
