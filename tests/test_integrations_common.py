"""What both callbacks share: the options object and opening (or resuming) the Recorder."""

import numpy as np
import pytest
import torch

from dimlapse.analyze import open_run
from dimlapse.capture import CaptureOptions
from dimlapse.capture._options import check_options
from dimlapse.capture.integrations._common import as_float, open_recorder


def test_callbacks_take_capture_options_or_none():
    assert check_options(None) == CaptureOptions()
    opts = CaptureOptions(modules=["fc*"], mode="weights", total_steps=100)
    assert check_options(opts) is opts
    with pytest.raises(ValueError, match=r"Expected `options` to be a .*CaptureOptions or None"):
        check_options({"modules": "fc*"})


def test_as_float_reads_logged_numbers():
    assert as_float(torch.tensor(2.5)) == 2.5 and as_float(3) == 3.0
    assert np.isnan(as_float(None))


def _open(store, step, **kw):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    return model, open_recorder(
        model,
        store,
        step=step,
        every=2,
        probe=torch.randn(5, 3),
        probe_targets=None,
        overwrite=False,
        options=CaptureOptions(),
        attrs={"who": "test"},
        integration="test.Trainer",
        **kw,
    )


def test_open_at_zero_then_resume_at_the_trainers_step(tmp_path):
    store = tmp_path / "run.zarr"
    _, rec = _open(store, 0, total_steps=6)
    for _ in range(6):
        rec.step(1.0)
    rec.close()
    run = open_run(store)
    assert run.weights.step.values.tolist() == [0, 2, 4, 6]
    assert run.attrs["integration"] == "test.Trainer" and run.attrs["who"] == "test"
    _, rec = _open(store, 4)  # the trainer restored its step-4 checkpoint
    rec.step(1.0)
    rec.step(1.0)
    rec.close()
    run = open_run(store)
    assert run.weights.step.values.tolist() == [0, 2, 4, 6] and len(run.attrs["resumed"]) == 1
    assert run.scalars.step.values.tolist() == list(range(1, 7))


def test_joining_a_run_in_progress_starts_a_new_store_at_the_step(tmp_path):
    store = tmp_path / "late.zarr"
    _, rec = _open(store, 10)  # a trainer at step 10, no run yet: a new one from there
    rec.step(1.0)
    rec.step(1.0)
    rec.close()
    run = open_run(store)
    assert run.weights.step.values.tolist() == [10, 12]
    assert run.scalars.step.values.tolist() == [11, 12]
