"""End to end: `capture` and `replay` through the CLI on tiny runs, read back with zarr."""

import json
import math

import numpy as np
import pytest
import torch
import zarr

from dimlapse.pipelines import Recipe, build_model, digits, model_from_store
from dimlapse.pipelines.cli._main import main
from dimlapse.pipelines.training._loop import batch_indices, probe_indices

ARGS = ["--model", "mlp", "--data", "digits", "--steps", "20", "--every", "5"]
TINY = ["--probe-size", "64", "--threads", "1", "--no-progress"]


def _capture(tmp_path, *extra, run="tiny"):
    argv = ["capture", *ARGS, *TINY, "--out-dir", str(tmp_path), "--run", run, *extra]
    assert main(argv) == 0
    return tmp_path / f"{run}.zarr"


@pytest.fixture(scope="module")
def inline_run(tmp_path_factory):
    return _capture(tmp_path_factory.mktemp("runs"))


def _rows(group, name):
    return np.asarray(group[name][:])


def test_capture_writes_the_contract_store(inline_run, capsys):
    g = zarr.open_group(str(inline_run), mode="r")
    attrs = dict(g.attrs)
    assert attrs["status"] == "complete" and attrs["layout_version"] == 2
    recipe = Recipe.from_dict(attrs["config"])
    assert (recipe.model, recipe.data, recipe.steps, recipe.every, recipe.probe_size) == (
        "mlp",
        "digits",
        20,
        5,
        64,
    )
    assert attrs["dataset"]["input_shape"] == [1, 28, 28] and attrs["seed"] == 0
    json.dumps(attrs)  # all attrs are JSON
    np.testing.assert_array_equal(_rows(g, "weights/step"), [0, 5, 10, 15, 20])
    assert g["weights/fc1.weight"].shape == (5, 256, 784)
    assert g["activations/fc1"].shape == (5, 64, 256)
    assert g["activations/fc3"].shape == (5, 64, 10)
    np.testing.assert_array_equal(_rows(g, "scalars/step"), np.arange(1, 21))
    loss = _rows(g, "scalars/loss")
    assert np.isfinite(loss).all() and loss[-1] < loss[0]
    assert np.isfinite(_rows(g, "scalars/grad_norm")).all()
    np.testing.assert_allclose(_rows(g, "scalars/lr"), 1e-3)
    acc = _rows(g, "scalars/test_accuracy")  # NaN except at capture steps
    steps = _rows(g, "scalars/step")
    assert np.isnan(acc[steps % 5 != 0]).all()
    assert ((acc[steps % 5 == 0] >= 0) & (acc[steps % 5 == 0] <= 1)).all()


def test_probe_is_the_seeded_held_out_batch(inline_run):
    g = zarr.open_group(str(inline_run), mode="r")
    data = digits()
    idx = probe_indices(data, size=64, seed=0)
    np.testing.assert_array_equal(_rows(g, "probe/inputs"), data.x_test[idx].numpy())
    np.testing.assert_array_equal(_rows(g, "probe/targets"), data.y_test[idx].numpy())


def test_stored_activations_match_a_forward_from_stored_weights(inline_run):
    # independent check: rebuild the MLP from the stored rows and run the probe by hand
    g = zarr.open_group(str(inline_run), mode="r")
    x = torch.from_numpy(_rows(g, "probe/inputs")).flatten(1)
    for row in (0, 4):
        w = {n: torch.from_numpy(np.asarray(g[f"weights/{n}.weight"][row])) for n in ("fc1", "fc2")}
        b = {n: torch.from_numpy(np.asarray(g[f"state/{n}.bias"][row])) for n in ("fc1", "fc2")}
        h1 = x @ w["fc1"].T + b["fc1"]
        h2 = torch.relu(h1) @ w["fc2"].T + b["fc2"]
        np.testing.assert_allclose(g["activations/fc1"][row], h1.numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(g["activations/fc2"][row], h2.numpy(), rtol=1e-5, atol=1e-5)


def test_training_is_what_the_recipe_says(inline_run):
    # replay the protocol by hand (Adam, batch 64, seeded batches) without a Recorder
    data = digits()
    torch.manual_seed(0)
    model = build_model("mlp", data.spec)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for step in range(1, 21):
        b = batch_indices(step, n=len(data.y_train), batch_size=64, seed=0)
        loss = torch.nn.functional.cross_entropy(model(data.x_train[b]), data.y_train[b])
        opt.zero_grad()
        loss.backward()
        opt.step()
    g = zarr.open_group(str(inline_run), mode="r")
    np.testing.assert_array_equal(g["weights/fc2.weight"][4], model.fc2.weight.detach().numpy())
    assert math.isclose(float(g["scalars/loss"][19]), loss.item(), rel_tol=1e-6)


def test_summary_line_and_second_capture_refused(tmp_path, capsys):
    store = _capture(tmp_path, run="r")
    out = capsys.readouterr().out
    final_loss = float(zarr.open_group(str(store), mode="r")["scalars/loss"][-1])
    assert "20 steps, 5 snapshots" in out and f"final loss {final_loss:.4f}" in out
    assert main(["capture", *ARGS, *TINY, "--out-dir", str(tmp_path), "--run", "r"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert store.exists()


def test_weights_only_then_replay_matches_inline(inline_run, tmp_path, capsys):
    store = _capture(tmp_path, "--weights-only", run="w")
    g = zarr.open_group(str(store), mode="r")
    assert "fc1" not in g.get("activations", {})
    # determinism: same weights as the inline run
    inline = zarr.open_group(str(inline_run), mode="r")
    np.testing.assert_array_equal(g["weights/fc1.weight"][:], inline["weights/fc1.weight"][:])
    assert main(["replay", "--run", "w", "--out-dir", str(tmp_path)]) == 0
    assert "replayed activations for 5 snapshots" in capsys.readouterr().out
    g = zarr.open_group(str(store), mode="r")
    for name in ("fc1", "fc2", "fc3"):
        np.testing.assert_allclose(
            g[f"activations/{name}"][:], inline[f"activations/{name}"][:], rtol=1e-5, atol=1e-6
        )


def test_model_from_store_rebuilds_the_recipe_model(inline_run):
    model, recipe = model_from_store(inline_run)
    assert recipe.model == "mlp" and model.fc1.in_features == 784


def test_resume_continues_a_run(tmp_path, capsys):
    store = _capture(tmp_path, run="res")
    argv = ["capture", "--model", "mlp", "--data", "digits", "--steps", "30", "--every", "5"]
    assert main([*argv, *TINY, "--out-dir", str(tmp_path), "--run", "res", "--resume"]) == 0
    g = zarr.open_group(str(store), mode="r")
    np.testing.assert_array_equal(_rows(g, "weights/step"), [0, 5, 10, 15, 20, 25, 30])
    np.testing.assert_array_equal(_rows(g, "scalars/step"), np.arange(1, 31))


@pytest.mark.parametrize(("model", "data"), [("transformer", "modadd"), ("vit", "digits")])
def test_capture_other_models(tmp_path, model, data):
    store = _capture_model(tmp_path, model, data)
    g = zarr.open_group(str(store), mode="r")
    assert dict(g.attrs)["status"] == "complete"
    assert len(g["activations"]) > 1 and len(_rows(g, "weights/step")) == 3


def _capture_model(tmp_path, model, data, cache=None):
    argv = ["capture", "--model", model, "--data", data, "--steps", "10", "--every", "5"]
    extra = ["--batch-size", "32", "--out-dir", str(tmp_path), "--run", model]
    extra += ["--cache-dir", str(cache or tmp_path / "cache")]
    assert main([*argv, *TINY, *extra]) == 0
    return tmp_path / f"{model}.zarr"


@pytest.fixture(scope="module")
def mnist1d_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.mark.slow
@pytest.mark.parametrize("model", ["cnn", "resnet", "mlp"])
def test_capture_on_mnist1d(tmp_path, model, mnist1d_cache):
    store = _capture_model(tmp_path, model, "mnist1d", cache=mnist1d_cache)
    assert (mnist1d_cache / "mnist1d-n10000-seed42.npz").exists()
    g = zarr.open_group(str(store), mode="r")
    assert dict(g.attrs)["dataset"]["input_shape"] == [1, 40]


def test_replay_refuses_to_replace_inline_activations(inline_run, capsys):
    assert main(["replay", "--store", str(inline_run)]) == 2
    assert "already holds activations" in capsys.readouterr().err


def test_replay_of_a_store_without_recipe_explains(tmp_path, capsys):
    from dimlapse.capture import CaptureOptions, Recorder

    store = tmp_path / "plain.zarr"
    with Recorder(
        torch.nn.Linear(3, 2),
        str(store),
        probe=torch.randn(4, 3),
        options=CaptureOptions(mode="weights"),
    ):
        pass
    assert main(["replay", "--store", str(store)]) == 2
    assert "has no recipe" in capsys.readouterr().err


def test_store_opens_with_the_analysis_reader(inline_run):
    from dimlapse.analyze import open_run

    run = open_run(str(inline_run))
    assert run.status == "complete"
    np.testing.assert_array_equal(run.weights["step"].values, [0, 5, 10, 15, 20])
    assert run.activations["fc2"].sizes["step"] == 5
    acc = run.scalars["test_accuracy"].sel(step=[5, 10, 15, 20]).values
    assert np.isfinite(acc).all()
    assert run.attrs["config"]["model"] == "mlp"


@pytest.mark.parametrize(
    ("capture_log", "start", "close"),
    [("all", True, True), ("start", True, False), ("none", False, False)],
)
def test_workflows_choose_which_recorder_lines_they_show(
    tmp_path, caplog, capture_log, start, close
):
    import logging

    from dimlapse.pipelines.training import train

    logger = logging.getLogger("dimlapse.capture")
    recipe = Recipe.default("mlp", data="digits", steps=10, every=5, probe_size=16)
    with caplog.at_level(logging.INFO, logger="dimlapse.capture"):
        result = train(
            recipe, tmp_path / "r.zarr", progress=False, threads=1, capture_log=capture_log
        )
        assert logger.level == logging.INFO  # the level the caller had, restored
    said = [r.getMessage() for r in caplog.records if r.name == "dimlapse.capture"]
    assert any("recording into" in m for m in said) is start, said
    assert any(" complete: 10 steps" in m for m in said) is close, said
    assert result.snapshots == 3


def test_capture_log_is_validated(tmp_path):
    from dimlapse.pipelines.training import train

    recipe = Recipe.default("mlp", data="digits", steps=5, every=5)
    with pytest.raises(ValueError, match="Expected `capture_log` to be one of all, start, none"):
        train(recipe, tmp_path / "x.zarr", progress=False, capture_log="some")


def test_capture_command_shows_the_start_line_and_its_own_summary_once(tmp_path, capsys, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="dimlapse.capture"):
        _capture(tmp_path, run="once")
    said = [r.getMessage() for r in caplog.records if r.name == "dimlapse.capture"]
    assert len(said) == 1 and "recording into" in said[0]  # no close line beside the summary
    assert capsys.readouterr().out.count("5 snapshots") == 1
