"""Intervention windows: the deep-linear critical period and the disrupted training runs."""

import json

import numpy as np
import pytest
import torch

from dimlapse.analyze import open_run
from dimlapse.pipelines.intervene._deeplinear import (
    Completion,
    critical_period_curve,
    train_completion,
)
from dimlapse.pipelines.intervene._run import run_interventions
from dimlapse.pipelines.intervene._windows import Disruption, blur, check_kind, parse_windows


@pytest.mark.slow
def test_long_early_deficit_hurts_depth_three_not_depth_one():
    # Kleinman, Achille and Soatto (ICLR 2024): matrix completion with an early deficit
    setup = Completion()
    curve = critical_period_curve(setup, depths=(1, 3), deficits=(0, 2_000, 10_000))
    base1, short1, long1 = curve[1]
    base3, short3, long3 = curve[3]
    # depth 1: a convex problem, each entry alone; the deficit changes nothing that lasts
    np.testing.assert_allclose([short1, long1], base1, rtol=1e-3)
    # depth 3 recovers the target without a deficit or after a short one ...
    assert base3 < 0.05 and short3 < 0.05
    # ... and a long deficit leaves a lasting error many times the baseline
    assert long3 > 10 * base3


def test_small_completion_shows_the_critical_period():
    # 100 deficit entries are fewer than the 2 * (60 - 2) = 116 degrees of freedom of the target
    setup = Completion(n=30, rank=2, n_observed=260, n_deficit=100, continue_steps=8_000)
    base, short, late = (
        train_completion(setup, depth=3, deficit_steps=t)["test_loss"] for t in (0, 1_000, 6_000)
    )
    assert base < 0.01 and short < 0.01
    assert late > 10 * base
    d1 = [train_completion(setup, depth=1, deficit_steps=t)["test_loss"] for t in (0, 6_000)]
    np.testing.assert_allclose(d1[1], d1[0], rtol=1e-3)
    assert d1[0] > 0.3  # depth 1 never completes the matrix: unobserved entries stay at init


def test_completion_validation():
    with pytest.raises(ValueError, match="n_deficit <= n_observed"):
        Completion(n_observed=10, n_deficit=20)
    with pytest.raises(ValueError, match="`depth` to be a positive int"):
        train_completion(Completion(), depth=0, deficit_steps=0)


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
    assert "| w15-25 |" in (out / "report.md").read_text()
    run = open_run(tmp_path / "runs" / "intervene-mlp-input_noise-w0-10.zarr")
    assert run.attrs["intervention"]["window"] == [0, 10]


def test_window_and_kind_validation():
    assert parse_windows("0-500, 1000-1500") == [(0, 500), (1000, 1500)]
    with pytest.raises(ValueError, match="START-END step ranges"):
        parse_windows("500-100")
    with pytest.raises(ValueError, match="Unknown `kind`"):
        check_kind("dropout")
