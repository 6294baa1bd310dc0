"""The Lightning callback with the real ``lightning.Trainer`` on the zoo's CNN (MNIST-1D)."""

import numpy as np
import pytest
import torch

pl = pytest.importorskip("lightning.pytorch")

from dimlapse.analyze import open_run  # noqa: E402
from dimlapse.capture.integrations.lightning import DimlapseCallback  # noqa: E402
from dimlapse.pipelines.zoo._data import mnist1d  # noqa: E402
from dimlapse.pipelines.zoo._models import CNN  # noqa: E402


class _LitCNN(pl.LightningModule):
    """The zoo's CNN as a LightningModule; it keeps its own record of every optimizer step."""

    def __init__(self, *, fail_at: int | None = None) -> None:
        super().__init__()
        self.net = CNN(1, 10, dim=1, width=8)
        self.fail_at = fail_at
        self.seen: dict[str, list[float]] = {"loss": [], "grad_norm": [], "lr": []}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        if self.fail_at is not None and self.global_step == self.fail_at:
            raise RuntimeError("planted failure")
        x, y = batch
        loss = torch.nn.functional.cross_entropy(self(x), y)
        self.seen["loss"].append(float(loss.detach()))
        self.seen["lr"].append(self.optimizers().param_groups[0]["lr"])
        return loss

    def on_before_optimizer_step(self, optimizer):  # an independent norm: cat, then one norm
        flat = torch.cat([p.grad.flatten() for p in self.parameters() if p.grad is not None])
        self.seen["grad_norm"].append(float(torch.linalg.vector_norm(flat)))

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.parameters(), lr=1e-2)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class _EpochSampler(torch.utils.data.Sampler):
    """A shuffle seeded by the epoch (Lightning calls ``set_epoch``), so a run resumed at an
    epoch boundary sees the same batches as one that never stopped."""

    def __init__(self, n: int) -> None:
        self.n, self.epoch = n, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        return iter(torch.randperm(self.n, generator=torch.Generator().manual_seed(self.epoch)))


def _loader():
    d = mnist1d(n_samples=100, cache_dir=None)  # 80 training examples: 5 batches per epoch
    ds = torch.utils.data.TensorDataset(d.x_train, d.y_train)
    sampler = _EpochSampler(len(ds))
    return torch.utils.data.DataLoader(ds, batch_size=16, sampler=sampler), d.x_test[:8]


def _fit(module, *, steps, callbacks=(), ckpt_path=None, root=None, checkpoint_every=None):
    callbacks = list(callbacks)
    if checkpoint_every:
        callbacks.append(
            pl.callbacks.ModelCheckpoint(
                dirpath=root, every_n_train_steps=checkpoint_every, save_top_k=-1
            )
        )
    trainer = pl.Trainer(
        max_steps=steps,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=bool(checkpoint_every),
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
        default_root_dir=root,
        num_sanity_val_steps=0,
    )
    loader, _ = _loader()
    torch.manual_seed(0)
    trainer.fit(module, loader, ckpt_path=ckpt_path)
    return trainer


pytestmark = pytest.mark.filterwarnings(
    # a 2-core CPU test: Lightning's advice to use more dataloader workers does not apply
    "ignore:The '.*dataloader' does not have many workers:UserWarning",
    # Lightning 2.6 builds torch's deprecated LeafSpec (torch >= 2.10 warns); not our code
    "ignore:.isinstance.treespec, LeafSpec.. is deprecated:FutureWarning",
)


def test_callback_records_steps_scalars_and_weights_without_changing_training(tmp_path):
    torch.manual_seed(0)
    plain = _LitCNN()
    _fit(plain, steps=10, root=tmp_path / "plain")
    torch.manual_seed(0)
    module = _LitCNN()
    _, probe = _loader()
    cb = DimlapseCallback(tmp_path / "run.zarr", every=5, probe=probe)
    _fit(module, steps=10, callbacks=[cb], root=tmp_path / "rec")
    for a, b in zip(plain.parameters(), module.parameters(), strict=True):
        assert torch.equal(a, b)  # no observer effect
    run = open_run(tmp_path / "run.zarr")
    assert run.attrs["status"] == "complete" and run.attrs["integration"] == "lightning.Trainer"
    assert run.weights.step.values.tolist() == [0, 5, 10]
    assert run.scalars.step.values.tolist() == list(range(1, 11))
    np.testing.assert_allclose(run.scalars.loss.values, module.seen["loss"], rtol=1e-6)
    np.testing.assert_allclose(run.scalars.grad_norm.values, module.seen["grad_norm"], rtol=1e-5)
    np.testing.assert_allclose(run.scalars.lr.values, module.seen["lr"])
    assert run.scalars.lr.values.tolist()[:4] == [1e-2, 1e-2, 1e-2, 5e-3]  # StepLR per step
    final = dict(module.named_parameters())
    np.testing.assert_array_equal(
        run.weights["net.conv2.weight"].isel(step=-1).values,
        final["net.conv2.weight"].detach().numpy(),
    )
    module.eval()
    with torch.no_grad():
        expected = module.net.fc(
            torch.relu(
                module.net.conv3(torch.relu(module.net.conv2(torch.relu(module.net.conv1(probe)))))
            )
            .flatten(2)
            .mean(-1)
        )
    np.testing.assert_allclose(
        run.activations["net.fc"].isel(step=-1).values, expected.numpy(), rtol=1e-5, atol=1e-6
    )


def test_exception_in_training_marks_the_run_crashed(tmp_path):
    cb = DimlapseCallback(tmp_path / "run.zarr", every=2)
    with pytest.raises(RuntimeError, match="planted failure"):
        _fit(_LitCNN(fail_at=5), steps=10, callbacks=[cb], root=tmp_path)
    run = open_run(tmp_path / "run.zarr")
    assert run.attrs["status"] == "crashed"
    assert run.weights.step.values.tolist() == [0, 2, 4]
    assert cb.recorder is None


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Checkpoint directory .* exists and is not empty:UserWarning")
def test_resume_from_checkpoint_continues_the_run(tmp_path):
    straight = tmp_path / "straight.zarr"
    torch.manual_seed(0)
    _fit(_LitCNN(), steps=10, callbacks=[DimlapseCallback(straight, every=5)], root=tmp_path / "a")
    resumed = tmp_path / "resumed.zarr"
    torch.manual_seed(0)
    root = tmp_path / "b"
    _fit(
        _LitCNN(),
        steps=10,
        callbacks=[DimlapseCallback(resumed, every=5)],
        root=root,
        checkpoint_every=5,
    )
    ckpt = next(p for p in root.iterdir() if "step=5" in p.name)
    _fit(
        _LitCNN(),
        steps=10,
        callbacks=[DimlapseCallback(resumed, every=5)],
        ckpt_path=str(ckpt),
        root=root,
        checkpoint_every=5,  # the checkpoint's callbacks must be there on resume
    )
    a, b = open_run(straight), open_run(resumed)
    assert b.attrs["status"] == "complete" and len(b.attrs["resumed"]) == 1
    assert b.weights.step.values.tolist() == [0, 5, 10]
    for name in ("loss", "grad_norm", "lr"):
        np.testing.assert_allclose(b.scalars[name].values, a.scalars[name].values, rtol=1e-6)
    for name in a.weights.data_vars:
        np.testing.assert_allclose(b.weights[name].values, a.weights[name].values, atol=1e-6)
