"""Taps on models as they come: dict/tuple probes, structured outputs, masked token samples."""

from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from dimlapse.capture._select import (
    Tap,
    make_taps,
    output_tensor,
    probe_forward,
    sampled_indices,
    select_modules,
)


class _Tagger(nn.Module):
    """Token model taking keyword inputs; pad token 0 embeds to a marker value."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 6)
        self.proj = nn.Linear(6, 5)
        with torch.no_grad():
            self.embed.weight[0] = 1e4  # padding marker

    def forward(self, input_ids, attention_mask=None):
        return self.proj(self.embed(input_ids))  # (N, T, 5)


def _run(model, probe, *, tokens=4, modules=None):
    taps = make_taps(model, select_modules(model, modules), positions=16, tokens=tokens)
    model.eval()
    with torch.no_grad():
        return probe_forward(model, probe, taps), taps


@pytest.mark.parametrize("side", ["right", "left"])
def test_masked_token_sample_takes_only_real_tokens(side):
    torch.manual_seed(0)
    lengths = [9, 5, 7]
    ids = torch.zeros(3, 9, dtype=torch.long)
    mask = torch.zeros(3, 9, dtype=torch.long)
    for i, n in enumerate(lengths):
        span = slice(0, n) if side == "right" else slice(9 - n, 9)
        ids[i, span] = torch.randint(1, 20, (n,))
        mask[i, span] = 1
    model = _Tagger()
    acts, taps = _run(model, {"input_ids": ids, "attention_mask": mask}, tokens=4)
    with torch.no_grad():
        emb = model.embed(ids)  # (3, 9, 6)
    # independent answer: per example, the seeded sample of its own real positions
    expected = []
    for i, n in enumerate(lengths):
        real = np.flatnonzero(mask[i].numpy())
        expected.append(real[sampled_indices("embed", n, 4)])
    expected = np.stack(expected)  # (3, 4)
    rows = emb[torch.arange(3)[:, None], torch.from_numpy(expected)].reshape(-1, 6)
    torch.testing.assert_close(acts["embed"], rows, rtol=0, atol=0)
    assert acts["embed"].abs().max() < 1e4  # no padding row recorded
    assert taps["embed"].meta == {
        "module_type": "Embedding",
        "reduction": "tokens",
        "rows_per_example": 4,
        "tokens": expected.tolist(),
        "token_mask": True,
    }
    assert acts["proj"].shape == (12, 5)


def test_masked_sample_shrinks_to_the_shortest_example():
    ids = torch.ones(2, 8, dtype=torch.long)
    mask = torch.ones(2, 8, dtype=torch.long)
    mask[1, 2:] = 0  # two real tokens
    acts, taps = _run(_Tagger(), {"input_ids": ids, "attention_mask": mask}, tokens=4)
    assert acts["embed"].shape == (4, 6) and taps["embed"].meta["rows_per_example"] == 2
    assert taps["embed"].meta["tokens"][1] == [0, 1]


def test_plain_tensor_reductions_unchanged_bit_for_bit():
    torch.manual_seed(0)
    x = torch.randn(5, 11, 7)  # (N, T, E)
    tap = Tap("blk", nn.Linear(7, 7), batch_first=True, positions=16, tokens=3)
    idx = torch.from_numpy(sampled_indices("blk", 11, 3))
    assert torch.equal(tap.reduce(x), x.index_select(1, idx).reshape(-1, 7))
    conv = torch.randn(4, 3, 6, 5)  # (N, C, H, W)
    tap = Tap("c", nn.Conv2d(1, 3, 1), batch_first=True, positions=8, tokens=3)
    idx = torch.from_numpy(sampled_indices("c", 30, 8))
    flat = conv.reshape(4, 3, 30).index_select(2, idx).transpose(1, 2).reshape(-1, 3)
    assert torch.equal(tap.reduce(conv), flat)


def test_structured_outputs_stand_for_their_main_tensor():
    a, b = torch.randn(2, 3), torch.randn(2, 4)
    assert output_tensor(a) is a
    assert output_tensor((a, None)) is a and output_tensor([None, b]) is b
    assert output_tensor((b, (a, a))) is b  # LSTM: (output, (h, c))
    assert output_tensor(OrderedDict(logits=a, last_hidden_state=b)) is b
    assert output_tensor({"logits": a, "hidden": b}) is a
    assert output_tensor({"loss": None, "scores": b}) is b
    assert output_tensor(None) is None and output_tensor(("x",)) is None


class _Pair(nn.Module):
    """Positional inputs (tuple probe), an LSTM (tuple output) and a dict-returning module."""

    class _Dict(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4, 3)

        def forward(self, x):
            return {"pooled": x.mean(1), "last_hidden_state": self.lin(x)}

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(2, 4, batch_first=True)
        self.enc = self._Dict()
        self.pos = nn.Embedding(6, 4)

    def forward(self, x, offset):
        h, _ = self.lstm(x + offset[:, None, None])  # (N, T, 4)
        h = h + self.pos(torch.arange(x.shape[1])[None])  # (1, T, 4) broadcast over N
        return self.enc(h)["last_hidden_state"]


def test_tuple_probe_lstm_dict_output_and_broadcast_embedding():
    torch.manual_seed(0)
    model = _Pair()
    x, off = torch.randn(3, 6, 2), torch.randn(3)
    acts, taps = _run(model, (x, off), tokens=2, modules=["lstm", "enc", "pos"])
    with torch.no_grad():
        h = model.lstm(x + off[:, None, None])[0]
        pos = model.pos(torch.arange(6))  # (T, 4)
        enc = model.enc.lin(h + pos[None])
    take = {n: torch.from_numpy(sampled_indices(n, 6, 2)) for n in ("lstm", "enc", "pos")}
    torch.testing.assert_close(acts["lstm"], h[:, take["lstm"]].reshape(-1, 4))
    torch.testing.assert_close(acts["enc"], enc[:, take["enc"]].reshape(-1, 3))
    expected_pos = pos[take["pos"]].repeat(3, 1)  # the same rows for each of the 3 examples
    torch.testing.assert_close(acts["pos"], expected_pos, rtol=0, atol=0)
    assert taps["pos"].meta["rows_per_example"] == 2


def test_gpt2_defaults_blocks_attention_conv1d_and_masked_hidden_states():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(
        vocab_size=64, n_positions=16, n_embd=32, n_layer=2, n_head=4, resid_pdrop=0.0
    )
    model = transformers.GPT2LMHeadModel(cfg)
    names = [n for n, _ in select_modules(model, None)]
    per_layer = ["", ".attn", ".attn.c_attn", ".attn.c_proj", ".mlp.c_fc", ".mlp.c_proj"]
    assert names == [
        "transformer.wte",
        "transformer.wpe",
        *[f"transformer.h.{i}{s}" for i in range(2) for s in per_layer],
        "lm_head",
    ]
    ids = torch.randint(0, 64, (3, 10))
    mask = torch.ones(3, 10, dtype=torch.long)
    mask[0, 7:] = 0  # right padding
    acts, taps = _run(model, {"input_ids": ids, "attention_mask": mask}, tokens=4)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    rows = torch.arange(3)[:, None]
    for layer in range(2):  # block outputs are the model's own hidden states (last: before ln_f)
        name = f"transformer.h.{layer}"
        idx = torch.tensor(taps[name].meta["tokens"])  # (3, 4), real tokens only
        assert bool(mask[rows, idx].all())
        expected = out.hidden_states[layer + 1][rows, idx].reshape(-1, 32)
        got = acts[name] if layer == 0 else model.transformer.ln_f(acts[name])
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    idx = torch.tensor(taps["lm_head"].meta["tokens"])
    logits = out.logits[rows, idx].reshape(-1, 64)
    torch.testing.assert_close(acts["lm_head"], logits, rtol=1e-5, atol=1e-5)
    assert acts["transformer.h.0.attn"].shape == (12, 32)  # tuple output: attn_output
    assert acts["transformer.wpe"].shape == (12, 32)  # (1, T, E) broadcast to the 3 examples
