"""Offline datasets: shapes, dtypes, determinism, caching, no global RNG side effects."""

import numpy as np
import pytest
import torch

from dimlapse.pipelines import digits, load_dataset, mnist1d, modadd
from dimlapse.pipelines.zoo._data import MNIST1D_SAMPLES


def test_mnist1d_generates_offline_with_the_requested_count(tmp_path):
    np.random.seed(123)  # noqa: NPY002  (the legacy global RNG is what mnist1d touches)
    before = np.random.get_state()[1].copy()  # noqa: NPY002
    d = mnist1d(n_samples=100, cache_dir=tmp_path)
    # make_dataset reseeds NumPy's global RNG; we restore it
    np.testing.assert_array_equal(np.random.get_state()[1], before)  # noqa: NPY002
    assert d.x_train.shape == (80, 1, 40) and d.x_test.shape == (20, 1, 40)  # 80/20 split
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    assert set(d.y_train.tolist()) <= set(range(10))
    assert d.spec.input_shape == (1, 40) and d.spec.kind == "sequence"
    assert (tmp_path / "mnist1d-n100-seed42.npz").exists()
    assert MNIST1D_SAMPLES == 10_000


def test_mnist1d_is_deterministic_and_cache_matches_generation(tmp_path):
    a = mnist1d(n_samples=100, cache_dir=tmp_path / "a")
    cached = mnist1d(n_samples=100, cache_dir=tmp_path / "a")  # read back from the cache
    fresh = mnist1d(n_samples=100, cache_dir=None)  # generated again, no cache
    for other in (cached, fresh):
        torch.testing.assert_close(a.x_train, other.x_train, rtol=0, atol=0)
        torch.testing.assert_close(a.y_test, other.y_test, rtol=0, atol=0)
    # standardised over the whole set by the package: mean 0, std 1
    allx = torch.cat([a.x_train, a.x_test])
    assert abs(allx.mean().item()) < 1e-5 and abs(allx.std().item() - 1) < 1e-2


def test_mnist1d_rejects_tiny_counts():
    with pytest.raises(ValueError, match="Expected `n_samples` to be an int >= 10, got 3"):
        mnist1d(n_samples=3, cache_dir=None)


def test_digits_are_real_8x8_digits_upsampled_to_28x28():
    from sklearn.datasets import load_digits

    d = digits()
    assert d.x_train.shape == (1197, 1, 28, 28) and d.x_test.shape == (600, 1, 28, 28)
    assert d.x_train.dtype == torch.float32 and d.y_test.dtype == torch.int64
    assert len(d.x_test) >= 512  # room for the 512-example probe
    # training split standardised
    assert abs(d.x_train.mean().item()) < 1e-4 and abs(d.x_train.std().item() - 1) < 1e-3
    # the label multiset is sklearn's
    counts = np.bincount(torch.cat([d.y_train, d.y_test]).numpy(), minlength=10)
    np.testing.assert_array_equal(counts, np.bincount(load_digits().target, minlength=10))
    # deterministic
    torch.testing.assert_close(digits().x_test, d.x_test, rtol=0, atol=0)


def test_digits_upsampling_preserves_the_image():
    # area-averaging the 28x28 image back to ~8x8 resembles the original (independent check)
    from sklearn.datasets import load_digits

    raw = torch.from_numpy(load_digits().images[:50].astype(np.float32) / 16).unsqueeze(1)
    up = torch.nn.functional.interpolate(raw, size=(28, 28), mode="bilinear", align_corners=False)
    down = torch.nn.functional.adaptive_avg_pool2d(up, (8, 8))
    assert torch.corrcoef(torch.stack([down.flatten(), raw.flatten()]))[0, 1] > 0.95


def test_modadd_is_the_full_table_split_once():
    p = 11
    d = modadd(p=p, train_fraction=0.4)
    x = torch.cat([d.x_train, d.x_test])
    y = torch.cat([d.y_train, d.y_test])
    assert x.shape == (p * p, 3) and x.dtype == torch.int64
    assert len(d.y_train) == round(0.4 * p * p)
    pairs = {(int(a), int(b)) for a, b, _ in x}
    assert len(pairs) == p * p  # every pair exactly once, no leakage
    assert (x[:, 2] == p).all()  # the '=' token
    for (a, b, _), t in zip(x.tolist(), y.tolist(), strict=True):
        assert t == (a + b) % p
    assert d.spec.vocab_size == p + 1 and d.spec.n_classes == p


def test_modadd_default_and_validation():
    d = modadd()
    assert d.spec.n_classes == 97 and len(d.y_train) + len(d.y_test) == 97 * 97
    with pytest.raises(ValueError, match="Expected `train_fraction` in"):
        modadd(train_fraction=1.5)
    with pytest.raises(ValueError, match="Expected `p` to be an int >= 2"):
        modadd(p=1)


def test_load_dataset_dispatch_and_unknown_name(tmp_path):
    assert load_dataset("modadd").spec.name == "modadd"
    with pytest.raises(ValueError, match="Unknown data 'imagenet'; expected one of: mnist1d"):
        load_dataset("imagenet", cache_dir=tmp_path)
