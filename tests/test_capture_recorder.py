"""Recorder behaviour: observer effect, validation, overwrite, status, NaN, codecs, backpressure."""

import dataclasses
import logging
import threading

import numpy as np
import pytest
import torch
import zarr
from torch import nn

from dimlapse.analyze import open_run
from dimlapse.capture import CaptureOptions, Recorder, RunExistsError, every_n, log_then_dense


class _Net(nn.Module):
    def __init__(self, uncopyable: bool = False) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 4)
        )
        if uncopyable:
            self.lock = threading.Lock()  # deepcopy fails -> inline probe forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _options(kwargs: dict) -> CaptureOptions:
    """The CaptureOptions among ``kwargs`` (popped), the Recorder's own keywords left."""
    names = {f.name for f in dataclasses.fields(CaptureOptions)}
    return CaptureOptions(**{k: kwargs.pop(k) for k in list(kwargs) if k in names})


def _train(steps: int, store=None, **kwargs) -> nn.Module:
    """Seeded loop interleaving data RNG with Dropout's RNG: any stray RNG use shows up."""
    torch.manual_seed(123)
    model = _Net(kwargs.pop("uncopyable", False))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    rec = None
    if store is not None:
        options = _options(kwargs)
        probe = torch.linspace(-1, 1, 60).reshape(10, 6)
        rec = Recorder(model, store, probe=probe, options=options, **kwargs)
    for _ in range(steps):
        x, y = torch.randn(16, 6), torch.randn(16, 4)
        loss = (model(x) - y).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if rec is not None:
            rec.step(loss)
    if rec is not None:
        rec.close()
    return model


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("uncopyable", [False, True], ids=["shadow", "inline"])
def test_no_observer_effect_bitwise(tmp_path, uncopyable):
    plain = _state(_train(25))
    recorded_model = _train(25, tmp_path / "r.zarr", every=1, flush_every=4, uncopyable=uncopyable)
    recorded = _state(recorded_model)
    assert recorded_model.training  # mode restored
    assert plain.keys() == recorded.keys()
    for key in plain:
        assert torch.equal(plain[key], recorded[key]), key
    run = open_run(tmp_path / "r.zarr")
    assert run.activations["body.0"].shape == (26, 10, 16)
    assert "body.1.running_mean" in run.state  # buffers are snapshotted too


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"every": 0}, "Expected `every` to be a positive int"),
        ({"every": "5"}, "Expected `every` to be a positive int or a schedule"),
        ({"every": True}, "Expected `every`"),
        ({"positions": 0}, "Expected `positions` to be an int >= 1, got 0"),
        ({"tokens": 1.5}, "Expected `tokens`"),
        ({"flush_every": -2}, "Expected `flush_every`"),
        ({"max_buffer_bytes": 0}, "Expected `max_buffer_bytes`"),
        ({"backpressure": "wait"}, "Expected `backpressure` to be 'block' or 'drop', got 'wait'"),
        ({"codec": "gzip"}, "Expected `codec` to be one of 'lz4'"),
        ({"codec": "bitround-40"}, "bits in 1..23"),
        ({"probe": [[1.0]]}, "Expected `probe` entry .0. to be a tensor"),
        ({"probe_targets": torch.zeros(3)}, "Expected `probe_targets`"),
        ({"overwrite": True, "resume": True}, "at most one of `overwrite`, `resume`"),
        ({"start_step": -1}, "Expected `start_step` to be an int >= 0"),
        ({"attrs": {"seed": object()}}, r"Expected `attrs\['seed'\]` to be JSON"),
        ({"modules": "nomatch*"}, "Expected `modules` globs"),
        ({"modules": 3}, "Expected `modules` to be None"),
        ({"params": 3}, "Expected `params`"),
    ],
)
def test_bad_arguments_fail_at_construction(kwargs, match):
    model = nn.Sequential(nn.Linear(3, 2))
    kwargs.setdefault("probe", torch.zeros(4, 3))
    with pytest.raises(ValueError, match=match):
        Recorder(model, "memory://never-written.zarr", options=_options(kwargs), **kwargs)


def test_bad_scalar_and_model():
    with pytest.raises(ValueError, match=r"Expected `model` to be a torch\.nn\.Module"):
        Recorder("model", "memory://x.zarr")
    with Recorder(nn.Linear(3, 2), "memory://bad-scalar.zarr") as rec:
        with pytest.raises(ValueError, match="Expected scalar `acc` to be a number"):
            rec.step(acc="high")
        with pytest.raises(ValueError, match=r"one-element tensor, got a tensor of shape \(2,\)"):
            rec.step(torch.zeros(2))


def test_refuses_to_overwrite(tmp_path):
    store = tmp_path / "run.zarr"
    Recorder(nn.Linear(3, 2), store).close()
    with pytest.raises(RunExistsError, match=r"pass overwrite=True .* or resume=True"):
        Recorder(nn.Linear(3, 2), store)
    (tmp_path / "notzarr").mkdir()
    (tmp_path / "notzarr" / "precious.txt").write_text("keep me")
    with pytest.raises(RunExistsError, match="is not a Zarr store"):
        Recorder(nn.Linear(3, 2), tmp_path / "notzarr", overwrite=True)
    assert (tmp_path / "notzarr" / "precious.txt").read_text() == "keep me"
    with Recorder(nn.Linear(3, 4), store, overwrite=True) as rec:
        rec.step(1.0)
    assert open_run(store).weights["weight"].shape == (1, 4, 3)


def test_status_crashed_when_context_exits_with_exception(tmp_path):
    store = tmp_path / "run.zarr"
    with pytest.raises(RuntimeError, match="boom"), Recorder(nn.Linear(3, 2), store) as rec:
        rec.step(1.0)
        raise RuntimeError("boom")
    run = open_run(store)
    assert run.status == "crashed"
    assert run.attrs["finished"] is not None
    np.testing.assert_array_equal(run.scalars["step"].values, [1])


def test_nan_recorded_as_is_and_flagged(caplog):
    model = nn.Sequential(nn.Linear(3, 2))
    probe = torch.tensor([[1.0, 2.0, 3.0], [float("nan"), 0.0, 0.0]])
    store = "memory://nan-run.zarr"
    with caplog.at_level(logging.WARNING, logger="dimlapse.capture"):
        with Recorder(model, store, every=1, probe=probe) as rec:
            with torch.no_grad():
                model.get_parameter("0.weight")[0, 0] = float("inf")
            rec.step(float("nan"))
    run = open_run(store)
    acts = run.activations["0"].values  # (step, sample, feature)
    assert np.isnan(acts[0, 1]).all() and np.isfinite(acts[0, 0]).all()
    assert np.isinf(run.weights["0.weight"].values[1, 0, 0])
    assert np.isnan(run.scalars["loss"].values[0])
    assert run.attrs["nonfinite"] == {
        "activations/0": [0, 1],
        "weights/0.weight": [1],
        "scalars/loss": [1],
    }
    assert "non-finite" in caplog.text


def test_codecs_float16_and_bitround(tmp_path, capfd):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 16))
    exact = model.get_parameter("0.weight").detach().numpy().copy()
    for codec, rtol in (("float16", 1e-3), ("bitround-7", 2**-7), ("none", 0.0)):
        store = tmp_path / f"{codec}.zarr"
        with Recorder(
            model,
            store,
            probe=torch.randn(4, 32),
            options=CaptureOptions(codec=codec, flush_every=2),
        ) as rec:
            for _ in range(5):  # several flushes and resizes: no codec warning may escape
                rec.step(0.0)
        run = open_run(store)
        assert run.attrs["codec"] == codec
        stored = run.weights["0.weight"].values[0]
        assert stored.dtype == (np.float16 if codec == "float16" else np.float32)
        np.testing.assert_allclose(stored.astype(np.float32), exact, rtol=rtol, atol=0)
        if codec != "none":
            assert not np.array_equal(stored.astype(np.float32), exact)  # really lossy
    # the writer process's warnings reach its stderr, not pytest's filter: read the fd
    assert "Numcodecs codecs are not in the Zarr" not in capfd.readouterr().err


def test_bfloat16_model_is_cast_to_float32():
    model = nn.Sequential(nn.Linear(4, 3)).to(torch.bfloat16)
    probe = torch.randn(5, 4, dtype=torch.bfloat16)
    Recorder(model, "memory://bf16.zarr", probe=probe).close()
    run = open_run("memory://bf16.zarr")
    np.testing.assert_array_equal(
        run.weights["0.weight"].values[0], model.get_parameter("0.weight").float().detach().numpy()
    )
    assert run.activations["0"].dtype == np.float32
    assert run.probe["inputs"].dtype == np.float32


def test_backpressure_drop_counts_dropped_snapshots():
    # queue of 1 and a writer that cannot keep up: a large probe forward per snapshot.
    model = nn.Sequential(*[nn.Linear(256, 256) for _ in range(4)])
    probe = torch.randn(2048, 256)
    store = "memory://drop.zarr"
    with Recorder(
        model,
        store,
        every=1,
        probe=probe,
        options=CaptureOptions(max_buffer_bytes=1, backpressure="drop"),
    ) as rec:
        captured = [rec.step(0.0) for _ in range(30)]
    stats = rec.stats
    assert stats["dropped"] > 0
    assert stats["dropped"] == captured.count(False)
    run = open_run(store)
    assert run.attrs["dropped_snapshots"] == stats["dropped"]
    assert run.weights.sizes["step"] == 1 + captured.count(True) == stats["snapshots"]
    np.testing.assert_array_equal(run.scalars["step"].values, np.arange(1, 31))  # none lost


def test_schedule_recorded_and_followed():
    sched = log_then_dense(dense_every=4, log_until=10, points_per_decade=5)
    with Recorder(nn.Linear(2, 2), "memory://sched.zarr", every=sched) as rec:
        flags = [rec.step(0.0) for _ in range(20)]
    expected = [s for s in range(1, 21) if sched(s)]
    assert [s for s, f in zip(range(1, 21), flags, strict=True) if f] == expected
    run = open_run("memory://sched.zarr")
    np.testing.assert_array_equal(run.weights["step"].values, [0, *expected])
    assert run.attrs["schedule"] == sched.describe()
    with Recorder(nn.Linear(2, 2), "memory://sched2.zarr", every=every_n(7)) as rec:
        pass
    assert zarr.open_group("memory://sched2.zarr").attrs["every"] == 7


def test_stats_and_provenance(tmp_path):
    store = tmp_path / "run.zarr"
    with Recorder(nn.Linear(64, 64), store, every=1, attrs={"config": {"lr": 0.1}}) as rec:
        for _ in range(5):
            rec.step(0.5)
    stats = rec.stats
    assert stats["snapshots"] == 6 and stats["dropped"] == 0
    assert stats["bytes_raw"] >= 6 * 64 * 64 * 4
    assert stats["bytes_stored"] > 0
    assert stats["compression_ratio"] == pytest.approx(stats["bytes_raw"] / stats["bytes_stored"])
    attrs = open_run(store).attrs
    assert attrs["config"] == {"lr": 0.1}
    assert attrs["layout_version"] == 2
    assert set(attrs["versions"]) >= {"torch", "zarr", "numpy", "numcodecs", "python", "dimlapse"}
    assert "git_commit" in attrs and attrs["created"] <= attrs["finished"]
    assert attrs["model"]["n_parameters"] == 64 * 64 + 64


def test_auto_flush_every_targets_about_128_mib_per_flush():
    from dimlapse.capture._recorder import auto_flush_every

    small = nn.Sequential(nn.Linear(784, 256), nn.Linear(256, 128), nn.Linear(128, 10))
    assert auto_flush_every(small) == 64  # 0.9 MB a snapshot: capped at 64
    mid = nn.Linear(1024, 1024)  # 4 MiB a snapshot -> 32 fit in 128 MiB
    assert auto_flush_every(mid) == 128 * 2**20 // ((1024 * 1024 + 1024) * 4)
    big = nn.Linear(4096, 4096)  # 64 MiB a snapshot: two fit
    assert auto_flush_every(big) == 1  # 128 MiB // (64 MiB + 16 KiB)
    huge = nn.Linear(8192, 8192)  # 256 MiB a snapshot: one per chunk, written from the ring
    assert auto_flush_every(huge) == 1
