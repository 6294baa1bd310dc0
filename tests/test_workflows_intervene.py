"""Intervention windows: the deep-linear critical period and the disrupted training runs."""

import csv
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from dimlapse.analyze import open_run
from dimlapse.pipelines.cli import main
from dimlapse.pipelines.intervene._critical import run_critical_periods, summarise_critical
from dimlapse.pipelines.intervene._deeplinear import Completion, train_completion
from dimlapse.pipelines.intervene._run import run_interventions
from dimlapse.pipelines.intervene._windows import Disruption, blur, check_kind, parse_windows


@pytest.mark.slow
def test_published_task_switch_hurts_depth_three_not_depth_one():
    # Kleinman, Achille and Soatto (ICLR 2024): rank 10 then rank 5, 100x100, 2,000 entries,
    # lr 0.2, init 1e-3, 30k steps after a 20k-step deficit; 3 seeds (about 5 min here)
    runs = run_critical_periods(Completion(), progress=False)
    gap = summarise_critical(runs)["gap"]
    assert gap[3][20_000]["mean"] > 0.1 and gap[3][20_000]["n"] == 3
    assert max(abs(gap[1][20_000]["min"]), abs(gap[1][20_000]["max"])) < 0.01


def test_small_task_switch_shows_the_critical_period():
    # the published task switch, scaled down (30x30, rank 6 then rank 2, 250 entries) to run in
    # seconds; measured gaps at depth 3 over seeds 0-2: 0.79, 0.28, 0.59; at depth 1: 0.002
    setup = Completion(n=30, rank=2, deficit_rank=6, n_observed=250, continue_steps=3_000)
    runs = run_critical_periods(setup, deficits=(0, 6_000), seeds=(0, 1), progress=False)
    summary = summarise_critical(runs)
    assert summary["gap"][3][6_000]["min"] > 0.1  # every seed
    assert max(abs(summary["gap"][1][6_000]["min"]), abs(summary["gap"][1][6_000]["max"])) < 0.01
    # the gap is paired by seed: recompute seed 1 by hand
    mse = {(r["depth"], r["deficit_steps"], r["seed"]): r["test_mse"] for r in runs}
    np.testing.assert_allclose(
        summary["gap"][3][6_000]["max"],
        max(mse[(3, 6_000, s)] - mse[(3, 0, s)] for s in (0, 1)),
    )


def test_depth_one_task_switch_matches_its_closed_form():
    # depth 1 is a convex per-entry problem: each observed entry moves towards its current
    # target by a factor q = 1 - lr / k per step (k observed entries), first the deficit
    # target's value for t0 steps, then the final target's for c steps; unobserved entries
    # keep their initial value (Gaussian, sd init_scale / sqrt(n), from seed + 1)
    setup = Completion(n=8, rank=1, deficit_rank=3, n_observed=20, continue_steps=150, seed=4)
    m, us, vs = setup.problem()
    m0 = setup.deficit_target()
    assert np.linalg.matrix_rank(m0) == 3 and np.linalg.matrix_rank(m) == 1
    np.testing.assert_allclose(np.sqrt([np.mean(m0**2), np.mean(m**2)]), 1.0)
    t0, c, q = 400, setup.continue_steps, 1 - setup.lr / setup.n_observed
    e = np.random.default_rng(setup.seed + 1).normal(0, setup.init_scale / np.sqrt(8), (8, 8))
    after_deficit = m0[us, vs] + (e[us, vs] - m0[us, vs]) * q**t0
    e[us, vs] = m[us, vs] + (after_deficit - m[us, vs]) * q**c
    r = train_completion(setup, depth=1, deficit_steps=t0)
    np.testing.assert_allclose(r["test_loss"], np.mean((e - m) ** 2), rtol=1e-9)
    np.testing.assert_allclose(r["train_loss"], 0.5 * np.mean((e - m)[us, vs] ** 2), rtol=1e-9)
    # the deficit target is its own draw: the final target and entries do not depend on it
    other = replace(setup, deficit_rank=5).problem()
    np.testing.assert_array_equal(other[0], m)
    np.testing.assert_array_equal(other[1], us)


def test_completion_validation():
    with pytest.raises(ValueError, match="n_deficit <= n_observed"):
        Completion(n_observed=10, n_deficit=20)
    with pytest.raises(ValueError, match="`depth` to be a positive int"):
        train_completion(Completion(), depth=0, deficit_steps=0)
    with pytest.raises(ValueError, match="`deficit_rank` <= n = 10, got 11"):
        Completion(n=10, n_observed=50, deficit_rank=11)
    with pytest.raises(ValueError, match="`lr` to be a positive number, got 0"):
        Completion(lr=0)


CLI_DL = {
    "--n": "12", "--rank": "1", "--deficit-rank": "3", "--observed": "40", "--depths": "1,2",
    "--init-scale": "0.01", "--lr": "0.3", "--deficits": "0,150", "--continue-steps": "200",
    "--seeds": "2",
}  # fmt: skip


def _cli_deeplinear(tmp_path, *extra):
    argv = ["intervene", "--kind", "deeplinear", "--results-dir", str(tmp_path), "--no-progress"]
    return main([*argv, *(x for kv in CLI_DL.items() for x in kv), *extra])


def test_deeplinear_command_runs_the_protocol_it_is_given(tmp_path, capsys):
    assert _cli_deeplinear(tmp_path) == 0
    out = tmp_path / "intervene-deeplinear"
    doc = json.loads((out / "deeplinear.json").read_text())
    expected = Completion(
        n=12, rank=1, deficit_rank=3, n_observed=40, init_scale=0.01, lr=0.3, continue_steps=200
    )
    assert doc["setup"] == {k: v for k, v in expected.to_dict().items() if k != "seed"}
    with (out / "deeplinear.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["depth", "deficit_steps", "seed", "test_mse"]
    keys = [(int(r["depth"]), int(r["deficit_steps"]), int(r["seed"])) for r in rows]
    assert keys == [(d, t, s) for d in (1, 2) for t in (0, 150) for s in (0, 1)]
    for (depth, deficit, seed), row in zip(keys, rows, strict=True):  # recomputed independently
        ref = train_completion(replace(expected, seed=seed), depth=depth, deficit_steps=deficit)
        np.testing.assert_allclose(float(row["test_mse"]), ref["test_loss"], rtol=1e-10)
    text = (out / "report.md").read_text()
    assert "rank-1 12x12 target" in text and "rank-3 target" in text
    assert "over 2 seed(s): not enough seeds to conclude" in text  # 2 seeds < 3
    assert "not enough seeds to conclude" in capsys.readouterr().out
    assert (out / "deeplinear.png").stat().st_size > 10_000


def test_deeplinear_keeps_earlier_results_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "intervene-deeplinear"
    out.mkdir()
    (out / "deeplinear.csv").write_text("earlier")
    assert _cli_deeplinear(tmp_path) == 2
    err = capsys.readouterr().err
    assert str(out) in err and "--overwrite" in err and "--results-dir" in err
    assert (out / "deeplinear.csv").read_text() == "earlier"
    assert _cli_deeplinear(tmp_path, "--overwrite") == 0
    assert (out / "deeplinear.csv").read_text().startswith("depth,deficit_steps,seed,test_mse")


def test_intervene_help_states_every_default(capsys):
    with pytest.raises(SystemExit):
        main(["intervene", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for default in (
        "(default: blur)", "(default: cnn)", "(default: 0-1000,1000-2000,2000-3000)",
        "(default 0)", "(default: 100)", "(default: 5)", "(default: 10)", "(default: 2000)",
        "(default: 1,3)", "(default: 0.001)", "(default: 0.2)", "(default: 0,20000)",
        "(default: 30000)", "(default: 3)",
    ):  # fmt: skip
        assert default in text, default


# --- the disrupted runs ------------------------------------------------------------------------

TINY = {"data": "digits", "steps": 30, "every": 5, "probe_size": 64, "batch_size": 32}


def _train(tmp_path, name, hook, model="mlp"):
    from dimlapse.pipelines import Recipe
    from dimlapse.pipelines.training._loop import train

    recipe = Recipe.default(model, **TINY)
    store = tmp_path / f"{name}.zarr"
    train(recipe, store, progress=False, threads=1, cache_dir=tmp_path / "c", intervention=hook)
    return open_run(store)


def test_freeze_window_holds_the_layer_in_the_real_loop(tmp_path):
    hook = Disruption("freeze", (0, 15), 1.0, "fc1")
    run = _train(tmp_path, "frozen", hook)
    w = run.weights["fc1.weight"].values  # (step, out, in): steps 0, 5, ..., 30
    for i in (1, 2, 3):
        np.testing.assert_array_equal(w[i], w[0])
    assert not np.array_equal(w[4], w[3])  # updates resume after the window
    later = run.weights["fc2.weight"].values
    assert not np.array_equal(later[1], later[0])  # other layers train inside the window
    assert all(p.requires_grad for p in hook.model.parameters())


def test_lr_spike_is_logged_and_undone(tmp_path):
    base = _train(tmp_path, "base", Disruption("lr_spike", None, 10.0))
    spiked = _train(tmp_path, "spike", Disruption("lr_spike", (10, 20), 10.0))
    lr0 = base.scalars["lr"].values
    lr = spiked.scalars["lr"].values  # steps 1..30
    steps = spiked.scalars["step"].values
    inside = (steps > 10) & (steps <= 20)
    np.testing.assert_allclose(lr[inside], 10 * lr0[inside])
    np.testing.assert_allclose(lr[~inside], lr0[~inside])
    # same seed: identical until the window opens, different after
    wb, ws = base.weights["fc1.weight"].values, spiked.weights["fc1.weight"].values
    np.testing.assert_array_equal(wb[:3], ws[:3])
    assert not np.allclose(wb[-1], ws[-1])


def test_label_noise_replaces_the_given_share_inside_the_window():
    hook = Disruption("label_noise", (10, 20), 0.5, n_classes=10)
    x, y = torch.zeros(20_000, 3), torch.zeros(20_000, dtype=torch.long)
    _, y_in = hook(11, torch.nn.Linear(3, 2), None, x, y)
    np.testing.assert_allclose(float((y_in != 0).float().mean()), 0.5 * 9 / 10, atol=0.01)
    _, y_out = hook(21, torch.nn.Linear(3, 2), None, x, y)
    assert torch.equal(y_out, y)


def test_blur_keeps_only_block_means():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1, 12, 12, generator=g)
    # a zero-mean pattern inside each 4x4 block: invisible after the blur
    wiggle = torch.tensor([[1.0, -1.0], [-1.0, 1.0]]).repeat(6, 6)
    np.testing.assert_allclose(blur(x + wiggle, 4), blur(x, 4), atol=1e-5)
    np.testing.assert_allclose(blur(torch.full((1, 1, 40), 3.0), 4), 3.0, atol=1e-6)
    assert not torch.allclose(blur(x, 4), x)


def test_run_interventions_writes_the_report(tmp_path):
    out = run_interventions(
        "mlp",
        [(0, 10), (15, 25)],
        "input_noise",
        runs_dir=str(tmp_path / "runs"),
        results_dir=str(tmp_path / "res"),
        progress=False,
        threads=1,
        cache_dir=str(tmp_path / "c"),
        **{k: v for k, v in TINY.items() if k != "batch_size"},
    )
    summary = json.loads((out / "summary.json").read_text())["windows"]
    assert [s["window"] for s in summary] == ["w0-10", "w15-25"]
    for s in summary:
        np.testing.assert_allclose(
            s["final_accuracy_change"], s["final_accuracy"] - s["baseline_final_accuracy"]
        )
        assert len(s["per_class_change"]) == 10
    assert (out / "intervene.png").stat().st_size > 10_000
    report = (out / "report.md").read_text()
    assert "| w15-25 |" in report
    assert "not enough to conclude" in report and "a short run" in report  # 1 seed, 7 captures
    run = open_run(tmp_path / "runs" / "intervene-mlp-input_noise-w0-10.zarr")
    assert run.attrs["intervention"]["window"] == [0, 10]
    before = (out / "summary.json").read_text()
    with pytest.raises(FileExistsError, match="--overwrite to replace them"):
        run_interventions(
            "mlp",
            [(0, 10)],
            "input_noise",
            runs_dir=str(tmp_path / "runs"),
            results_dir=str(tmp_path / "res"),
            progress=False,
            cache_dir=str(tmp_path / "c"),
            **{k: v for k, v in TINY.items() if k != "batch_size"},
        )
    assert (out / "summary.json").read_text() == before


def test_window_and_kind_validation():
    assert parse_windows("0-500, 1000-1500") == [(0, 500), (1000, 1500)]
    with pytest.raises(ValueError, match="START-END step ranges"):
        parse_windows("500-100")
    with pytest.raises(ValueError, match="Unknown `kind`"):
        check_kind("dropout")
