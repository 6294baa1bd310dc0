"""Shared pytest set-up: headless plotting and quiet BLAS on the 2-core machines we test on."""

import contextlib
import itertools
import os
import shutil

import pytest

# Figures are written to files only; never open a window.
os.environ.setdefault("MPLBACKEND", "Agg")


@contextlib.contextmanager
def _one_torch_thread(torch):
    """Layers this small train fastest on one thread: more only contend for the 2 cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def record_tiny_run(
    path,
    *,
    steps=40,
    every=1,
    flush_every=8,
    widths=(8, 16, 4),
    examples=64,
    batch_size=None,
    grad_norm=False,
    nan_loss_at=(),
    nan_weight_at=(),
    seed=0,
):
    """Capture an MLP for `steps` SGD steps: ``steps // every + 1`` snapshots.

    Layer sizes are `widths` (ReLU between). It learns random labels of `examples` Gaussian
    inputs, full batch unless `batch_size` is given; the first 32 inputs are the probe.
    ``grad_norm``: record the gradient norm beside the loss. ``nan_loss_at``: steps whose
    recorded loss is NaN; ``nan_weight_at``: steps whose recorded first-layer weight holds a
    NaN (restored after the capture, so training stays finite).
    """
    torch = pytest.importorskip("torch")
    from dimlapse.capture import CaptureOptions, Recorder

    torch.manual_seed(seed)
    layers = []
    for n_in, n_out in itertools.pairwise(widths):
        layers += [torch.nn.Linear(n_in, n_out), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers[:-1])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(examples, widths[0]), torch.randint(widths[-1], (examples,))
    with (
        _one_torch_thread(torch),
        Recorder(
            model,
            str(path),
            every=every,
            probe=x[:32],
            options=CaptureOptions(flush_every=flush_every),
        ) as rec,
    ):
        for step in range(1, steps + 1):
            idx = slice(None) if batch_size is None else torch.randint(examples, (batch_size,))
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            scalars = {}
            if grad_norm:
                params = model.parameters()
                scalars["grad_norm"] = torch.nn.utils.clip_grad_norm_(params, float("inf"))
            opt.step()
            weight = model[0].weight
            saved = weight.detach().clone()
            if step in nan_weight_at:
                with torch.no_grad():
                    weight[0, 0] = float("nan")
            loss = torch.tensor(float("nan")) if step in nan_loss_at else loss.detach()
            rec.step(loss, **scalars)
            with torch.no_grad():
                weight.copy_(saved)
    return path


@pytest.fixture(scope="session")
def tiny_run_store(tmp_path_factory):
    """A complete captured run (41 snapshots, chunks of 8 steps); copy it before changing it."""
    return record_tiny_run(tmp_path_factory.mktemp("tiny") / "tiny.zarr")


@pytest.fixture
def tiny_run_copy(tiny_run_store, tmp_path):
    """A private copy of :func:`tiny_run_store` that a test may damage."""
    return shutil.copytree(tiny_run_store, tmp_path / "tiny.zarr")


@pytest.fixture(scope="session")
def small_run_store(tmp_path_factory):
    """A run long enough for every analysis job to have data: a 16-32-16-4 MLP on minibatches,
    loss and gradient norm recorded, 300 steps captured every 5 (61 snapshots, chunks of 4)."""
    return record_tiny_run(
        tmp_path_factory.mktemp("small") / "small-run.zarr",
        steps=300,
        every=5,
        flush_every=4,
        widths=(16, 32, 16, 4),
        examples=1024,
        batch_size=32,
        grad_norm=True,
    )
