"""The Hugging Face callback with the real ``transformers.Trainer``: a 2-layer GPT-2 built from
a config (no download), trained as a byte-level language model on the standard library."""

import math

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from dimlapse.analyze import open_run  # noqa: E402
from dimlapse.capture import CaptureOptions  # noqa: E402
from dimlapse.capture.integrations.huggingface import DimlapseCallback  # noqa: E402
from dimlapse.pipelines.zoo._data import stdlib  # noqa: E402

CONTEXT = 16


class _Windows(torch.utils.data.Dataset):
    def __init__(self, x: torch.Tensor) -> None:
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.x[i], "labels": self.x[i]}  # the model shifts the labels


def _data():
    return stdlib(context=CONTEXT, n_train=256, n_test=8)


def _model(seed: int = 0):
    torch.manual_seed(seed)
    config = transformers.GPT2Config(
        vocab_size=256,
        n_positions=CONTEXT,
        n_embd=32,
        n_layer=2,
        n_head=4,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=None,
        eos_token_id=None,
    )
    return transformers.GPT2LMHeadModel(config)


def _trainer(model, out, *, steps, callbacks=(), logging_steps=1, save_steps=None):
    args = transformers.TrainingArguments(
        output_dir=str(out),
        max_steps=steps,
        per_device_train_batch_size=8,
        learning_rate=3e-3,
        lr_scheduler_type="linear",
        logging_steps=logging_steps,
        save_strategy="steps" if save_steps else "no",
        save_steps=save_steps or 500,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
        dataloader_num_workers=0,
    )
    data = _data()
    return transformers.Trainer(
        model=model, args=args, train_dataset=_Windows(data.x_train), callbacks=list(callbacks)
    )


def _train_logs(trainer):
    return {h["step"]: h for h in trainer.state.log_history if "loss" in h}


def _probe() -> dict[str, torch.Tensor]:
    ids = _data().x_test  # (8, CONTEXT) held-out byte windows
    mask = torch.ones_like(ids)
    mask[0, 10:] = 0  # example 0 is right-padded: its last 6 positions are not text
    return {"input_ids": ids, "attention_mask": mask}


def test_callback_records_the_trainers_logs_weights_and_activations(tmp_path):
    probe = _probe()  # as the model takes it: model(**probe)
    model = _model()
    cb = DimlapseCallback(tmp_path / "run.zarr", every=5, probe=probe)
    trainer = _trainer(model, tmp_path / "out", steps=10, callbacks=[cb])
    trainer.train()
    assert cb.recorder is None  # closed with the trainer
    run = open_run(tmp_path / "run.zarr")
    assert run.attrs["status"] == "complete" and run.attrs["integration"] == "transformers.Trainer"
    assert run.weights.step.values.tolist() == [0, 5, 10]
    logs = _train_logs(trainer)  # the trainer's own log history: an independent record
    s = run.scalars
    assert s.step.values.tolist() == list(range(1, 11))
    for name, key in (("loss", "loss"), ("grad_norm", "grad_norm"), ("lr", "learning_rate")):
        expected = [logs[k][key] for k in range(1, 11)]
        np.testing.assert_allclose(s[name].values, expected, rtol=1e-6)
    final = dict(model.named_parameters())
    w = run.weights.isel(step=-1)
    for name in ("transformer.h.1.mlp.c_fc.weight", "transformer.wte.weight"):
        np.testing.assert_array_equal(w[name].values, final[name].detach().numpy())
    assert "lm_head.weight" not in run.weights  # tied to wte: stored once
    model.eval()
    with torch.no_grad():  # block 0's output is the model's own hidden_states[1]
        hidden = model(**probe, output_hidden_states=True).hidden_states[1]  # (8, T, 32)
    stored = run.activations["transformer.h.0"]
    idx = torch.tensor(stored.attrs["tokens"])  # (8, 4): each example's own token sample
    rows = torch.arange(8)[:, None]
    assert bool(probe["attention_mask"][rows, idx].all())  # never a padding position
    np.testing.assert_allclose(
        stored.isel(step=-1).values,
        hidden[rows, idx].reshape(-1, 32).numpy(),
        rtol=1e-5,
        atol=1e-5,
    )


@pytest.mark.slow
def test_callback_with_sparse_logging_records_nan_between_logs(tmp_path):
    model = _model()
    cb = DimlapseCallback(tmp_path / "run.zarr", every=4, options=CaptureOptions(mode="weights"))
    trainer = _trainer(model, tmp_path / "out", steps=8, callbacks=[cb], logging_steps=3)
    trainer.train()
    run = open_run(tmp_path / "run.zarr")
    loss = run.scalars.loss.values
    logged = sorted(_train_logs(trainer))
    assert logged == [3, 6]
    assert [i + 1 for i in np.flatnonzero(np.isfinite(loss))] == logged
    np.testing.assert_allclose(loss[[2, 5]], [_train_logs(trainer)[k]["loss"] for k in logged])
    assert run.weights.step.values.tolist() == [0, 4, 8]
    assert run.attrs["activations"] is False and not run.activations.data_vars  # options apply


@pytest.mark.slow
def test_resume_from_checkpoint_continues_the_run(tmp_path):
    """Kill-free resume: a run resumed from checkpoint 5 equals one trained straight to 10."""
    straight = tmp_path / "straight.zarr"
    trainer = _trainer(
        _model(),
        tmp_path / "a",
        steps=10,
        callbacks=[DimlapseCallback(straight, every=5, probe=_probe())],
    )
    trainer.train()
    resumed = tmp_path / "resumed.zarr"
    first = _trainer(
        _model(),
        tmp_path / "b",
        steps=10,
        save_steps=5,
        callbacks=[DimlapseCallback(resumed, every=5, probe=_probe())],
    )
    first.train()  # ran to 10 (its later snapshots are cut on resume from step 5)
    second = _trainer(
        _model(seed=1),  # weights come from the checkpoint
        tmp_path / "b",
        steps=10,
        save_steps=5,
        callbacks=[DimlapseCallback(resumed, every=5, probe=_probe())],
    )
    second.train(resume_from_checkpoint=str(tmp_path / "b" / "checkpoint-5"))
    a, b = open_run(straight), open_run(resumed)
    assert b.attrs["status"] == "complete" and len(b.attrs["resumed"]) == 1
    assert b.weights.step.values.tolist() == [0, 5, 10]
    for name in a.weights.data_vars:
        np.testing.assert_allclose(b.weights[name].values, a.weights[name].values, atol=1e-6)
    for name in a.activations.data_vars:
        np.testing.assert_allclose(
            b.activations[name].values, a.activations[name].values, rtol=1e-4, atol=1e-5
        )
    np.testing.assert_allclose(b.scalars.loss.values, a.scalars.loss.values, rtol=1e-5)
    assert not math.isnan(float(b.scalars.grad_norm.values[-1]))
