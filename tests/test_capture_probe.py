"""Probe structures (tensor, dict, tuple): batch size, device moves, store arrays, round trips."""

import numpy as np
import pytest
import torch

from dimlapse.capture._probe import (
    probe_arrays,
    probe_batch_size,
    probe_call,
    probe_equal,
    probe_from_arrays,
    probe_mask,
    probe_summary,
    probe_to,
)


def _probes():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 50, (4, 6), generator=g)
    mask = torch.ones(4, 6, dtype=torch.long)
    mask[1, 4:] = 0
    return {
        "tensor": torch.randn(4, 3, generator=g),
        "dict": {"input_ids": ids, "attention_mask": mask},
        "tuple": (torch.randn(4, 2, generator=g), ids),
    }


@pytest.mark.parametrize("kind", ["tensor", "dict", "tuple"])
def test_arrays_round_trip_keeps_structure_and_values(kind):
    probe = _probes()[kind]
    arrays = probe_arrays(probe)
    back = probe_from_arrays({**arrays, "targets": np.zeros(4)})  # targets are ignored
    assert type(back) is type(probe) or (kind == "dict" and isinstance(back, dict))
    if kind == "tensor":
        assert list(arrays) == ["inputs"]
        torch.testing.assert_close(back, probe, rtol=0, atol=0)
    elif kind == "dict":
        assert sorted(arrays) == ["inputs.attention_mask", "inputs.input_ids"]
        assert back.keys() == probe.keys()
        for k in probe:
            torch.testing.assert_close(back[k], probe[k], rtol=0, atol=0)
    else:
        assert list(arrays) == ["inputs.0", "inputs.1"]
        assert len(back) == 2
        for a, b in zip(back, probe, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert probe_equal(back, probe)
    assert probe_batch_size(probe) == probe_batch_size(back) == 4


def test_tuple_positions_come_back_in_numeric_order():
    probe = tuple(torch.full((2, 1), float(i)) for i in range(12))
    arrays = probe_arrays(probe)
    shuffled = {k: arrays[k] for k in sorted(arrays)}  # 'inputs.10' sorts before 'inputs.2'
    back = probe_from_arrays(shuffled)
    assert [float(t[0, 0]) for t in back] == [float(i) for i in range(12)]


def test_low_precision_floats_stored_exactly_as_float32():
    x = torch.randn(3, 5).to(torch.bfloat16)
    arr = probe_arrays({"pixel_values": x})["inputs.pixel_values"]
    assert arr.dtype == np.float32
    np.testing.assert_array_equal(arr, x.float().numpy())
    assert probe_summary({"pixel_values": x}) == {
        "n": 3,
        "structure": "mapping",
        "arrays": {"inputs.pixel_values": {"shape": [3, 5], "dtype": "bfloat16"}},
    }


def test_probe_to_moves_every_tensor_and_keeps_structure():
    for probe in _probes().values():
        moved = probe_to(probe, "meta")
        parts = moved.values() if isinstance(moved, dict) else moved
        parts = [moved] if isinstance(moved, torch.Tensor) else list(parts)
        assert all(t.device.type == "meta" for t in parts)
        assert type(moved) is type(probe) or isinstance(moved, dict)


def test_probe_call_passes_the_structure_to_forward():
    class Three(torch.nn.Module):
        def forward(self, a, b=None, *, attention_mask=None):
            return a, b, attention_mask

    m, probes = Three(), _probes()
    assert probe_call(m, probes["tensor"])[0] is probes["tensor"]
    a, b, _ = probe_call(m, probes["tuple"])
    assert a is probes["tuple"][0] and b is probes["tuple"][1]
    a, _, mask = probe_call(m, {"a": probes["tensor"], "attention_mask": probes["tensor"]})
    assert a is probes["tensor"] and mask is probes["tensor"]


def test_mask_is_bool_and_refuses_examples_without_real_tokens():
    probes = _probes()
    mask = probe_mask(probes["dict"])
    assert mask is not None and mask.dtype == torch.bool
    assert mask.sum(1).tolist() == [6, 4, 6, 6]
    assert probe_mask(probes["tensor"]) is None and probe_mask(probes["tuple"]) is None
    bad = dict(probes["dict"], attention_mask=probes["dict"]["attention_mask"].clone())
    bad["attention_mask"][2] = 0
    with pytest.raises(ValueError, match=r"at least one real token.*examples \[2\]"):
        probe_mask(bad)


@pytest.mark.parametrize(
    ("probe", "match"),
    [
        ({"input_ids": torch.zeros(3, 2), "attention_mask": torch.ones(4, 2)}, "same number"),
        ((torch.zeros(2, 1), torch.zeros(3, 1)), "same number of examples"),
        ({"0": torch.zeros(2)}, "keys to be keyword-argument names"),
        ({"x": [1, 2]}, "entry 'x' to be a tensor"),
        ((torch.zeros(2), torch.tensor(1.0)), "entry '1' to be a tensor"),
        ({}, "at least one tensor"),
        ("text", "Expected `probe` to be a tensor"),
        (3, "Expected `probe` to be a tensor"),
    ],
)
def test_invalid_probes_name_what_would_work(probe, match):
    with pytest.raises(ValueError, match=match):
        probe_batch_size(probe)
    with pytest.raises(ValueError, match=match):
        probe_arrays(probe)


def test_from_arrays_refuses_mixed_names():
    with pytest.raises(ValueError, match="of one kind"):
        probe_from_arrays({"inputs.0": np.zeros(2), "inputs.ids": np.zeros(2)})
    with pytest.raises(ValueError, match=r"positions 0\.\.1"):
        probe_from_arrays({"inputs.0": np.zeros(2), "inputs.2": np.zeros(2)})
    with pytest.raises(ValueError, match="either 'inputs' alone"):
        probe_from_arrays({"inputs": np.zeros(2), "inputs.0": np.zeros(2)})
