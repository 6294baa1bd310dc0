"""Shared pytest set-up: headless plotting and quiet BLAS on the 2-core machines we test on."""

import os
import shutil

import pytest

# Figures are written to files only; never open a window.
os.environ.setdefault("MPLBACKEND", "Agg")


def record_tiny_run(
    path, *, steps=40, every=1, flush_every=8, nan_loss_at=(), nan_weight_at=(), seed=0
):
    """Capture a 8-16-4 MLP for `steps` SGD steps (``steps // every + 1`` snapshots).

    ``nan_loss_at``: steps whose recorded loss is NaN; ``nan_weight_at``: steps whose recorded
    first-layer weight holds a NaN (restored after the capture, so training stays finite).
    """
    torch = pytest.importorskip("torch")
    from dimlapse.capture import Recorder

    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(64, 8), torch.randint(4, (64,))
    with Recorder(model, str(path), every=every, probe=x[:32], flush_every=flush_every) as rec:
        for step in range(1, steps + 1):
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            weight = model[0].weight
            saved = weight.detach().clone()
            if step in nan_weight_at:
                with torch.no_grad():
                    weight[0, 0] = float("nan")
            rec.step(torch.tensor(float("nan")) if step in nan_loss_at else loss.detach())
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
