"""CaptureOptions: validated once, at construction; overrides by dataclasses.replace; JSON."""

import dataclasses

import pytest
from torch import nn

from dimlapse.capture import CaptureOptions


def test_defaults_are_the_recorders():
    opts = CaptureOptions()
    assert (opts.mode, opts.positions, opts.tokens, opts.full_every) == ("full", 16, 4, 500)
    assert opts.codec is None and opts.flush_every is None and opts.total_steps is None
    assert (opts.backpressure, opts.writer, opts.strict) == ("block", "auto", False)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "all"}, r"Expected `mode` to be one of \('full', 'weights', 'spectra'\)"),
        ({"positions": 0}, "Expected `positions` to be an int >= 1, got 0"),
        ({"flush_every": True}, "Expected `flush_every`"),
        ({"full_every": -1}, "Expected `full_every` to be an int >= 0"),
        ({"total_steps": -1}, "Expected `total_steps` to be an int >= 0"),
        ({"backpressure": "wait"}, "Expected `backpressure` to be 'block' or 'drop'"),
        ({"writer": "gpu"}, "Expected `writer` to be 'auto', 'process' or 'thread'"),
        ({"codec": "gzip"}, "Expected `codec` to be one of 'lz4'"),
    ],
)
def test_bad_options_fail_at_construction_and_on_replace(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CaptureOptions(**kwargs)
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(CaptureOptions(), **kwargs)


def test_json_round_trip_and_its_limits():
    opts = CaptureOptions(modules=["fc*", "head"], params="*.weight", codec="bitround-10")
    assert CaptureOptions.from_json(opts.to_json()) == opts
    assert CaptureOptions.from_dict(CaptureOptions().to_dict()) == CaptureOptions()
    with pytest.raises(ValueError, match="Expected `modules` to be None, a glob or a list"):
        CaptureOptions(modules=[nn.Linear]).to_json()
    with pytest.raises(TypeError, match=r"Unknown capture option\(s\) \['activations'\]"):
        CaptureOptions.from_dict({"activations": False})
