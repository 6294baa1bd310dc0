"""The gpt2-tiny recipe: the standard library as a byte-level corpus, a short captured run."""

import sysconfig
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from dimlapse.analyze import open_run
from dimlapse.pipelines import DataSpec, Recipe, build_model, train
from dimlapse.pipelines.zoo._data import stdlib


def test_stdlib_windows_come_from_the_source_files_with_a_held_out_split():
    d = stdlib(context=32, n_train=64, n_test=16)
    assert d.spec.kind == "text" and d.spec.vocab_size == 256 and d.spec.input_shape == (32,)
    assert d.x_train.shape == (64, 32) and d.y_test.shape == (16, 32)
    assert d.x_train.dtype == torch.int64 and int(d.x_train.max()) < 256
    torch.testing.assert_close(d.y_train[:, :-1], d.x_train[:, 1:])  # next byte at each position
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
    first_held_out = files[9].read_bytes()[:33]  # every 10th file is held out; window 0 first
    assert bytes(d.x_test[0].tolist()) == first_held_out[:32]
    assert int(d.y_test[0, -1]) == first_held_out[32]
    assert bytes(d.x_train[0].tolist()) == files[0].read_bytes()[:32]
    again = stdlib(context=32, n_train=64, n_test=16)
    assert torch.equal(again.x_train, d.x_train) and torch.equal(again.x_test, d.x_test)


def test_gpt2_tiny_refuses_classification_data_and_ties_embeddings():
    spec = stdlib(context=16, n_train=8, n_test=8).spec
    net = build_model("gpt2-tiny", spec)
    assert net.lm.lm_head.weight is net.lm.transformer.wte.weight
    assert len(net.lm.transformer.h) == 2
    with pytest.raises(ValueError, match="'gpt2-tiny' is a language model"):
        build_model("gpt2-tiny", DataSpec("m", "sequence", (1, 8), 10))
    with pytest.raises(ValueError, match="do not fit"):
        build_model("mlp", spec)


def test_recipe_trains_and_records_blocks_once_per_tied_matrix(tmp_path):
    recipe = Recipe.default("gpt2-tiny", steps=6, every=3, probe_size=8)
    result = train(recipe, tmp_path / "g.zarr", progress=False, threads=1)
    run = open_run(tmp_path / "g.zarr")
    assert run.attrs["status"] == "complete" and run.weights.step.values.tolist() == [0, 3, 6]
    assert "lm.transformer.wte.weight" in run.weights
    assert "lm.lm_head.weight" not in run.weights  # tied: stored once
    block = run.activations["lm.transformer.h.1"]
    assert block.shape == (3, 8 * 4, 64) and block.attrs["module_type"] == "GPT2Block"
    loss = run.scalars.loss.values
    assert np.isfinite(loss).all() and loss[0] > 5.0  # ~ log(256) = 5.55 at initialisation
    acc = run.scalars.test_accuracy.values
    assert np.isfinite(acc[[2, 5]]).all() and 0 <= result.test_accuracy <= 1
