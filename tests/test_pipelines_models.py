"""Model zoo: forward shapes on each default dataset's spec, layouts, errors."""

import pytest
import torch

from dimlapse.pipelines import DEFAULT_DATA, MODELS, DataSpec, ResNet, build_model

SPECS = {
    "mnist1d": DataSpec("mnist1d", "sequence", (1, 40), 10),
    "digits": DataSpec("digits", "image", (1, 28, 28), 10),
    "modadd": DataSpec("modadd", "tokens", (3,), 97, vocab_size=98),
    "stdlib": DataSpec("stdlib", "text", (16,), 256, vocab_size=256),
}


def _inputs(spec: DataSpec, n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    if spec.kind in ("tokens", "text"):
        return torch.randint(spec.vocab_size, (n, *spec.input_shape), generator=g)
    return torch.randn(n, *spec.input_shape, generator=g)


@pytest.mark.parametrize("model", MODELS)
def test_forward_shape_on_default_data(model):
    spec = SPECS[DEFAULT_DATA[model]]
    net = build_model(model, spec)
    out = net(_inputs(spec, 5))
    per_position = spec.input_shape if spec.kind == "text" else ()  # language model: (5, T, V)
    assert out.shape == (5, *per_position, spec.n_classes)
    assert torch.isfinite(out).all()
    out.sum().backward()  # every parameter receives a gradient
    assert all(p.grad is not None for p in net.parameters())


@pytest.mark.parametrize(
    ("model", "data"),
    [
        ("cnn", "digits"),
        ("resnet", "digits"),
        ("transformer", "mnist1d"),
        ("vit", "mnist1d"),
        ("mlp", "digits"),
    ],
)
def test_other_pairings_run(model, data):
    spec = SPECS[data]
    assert build_model(model, spec)(_inputs(spec, 3)).shape == (3, 10)


def test_mlp_is_the_study_784_256_128_10():
    net = build_model("mlp", SPECS["digits"])
    shapes = [tuple(p.shape) for p in net.parameters()]
    assert shapes == [(256, 784), (256,), (128, 256), (128,), (10, 128), (10,)]
    assert [n for n, m in net.named_modules() if isinstance(m, torch.nn.Linear)] == [
        "fc1",
        "fc2",
        "fc3",
    ]


def test_mlp_takes_its_input_width_from_the_data():
    assert build_model("mlp", SPECS["mnist1d"]).fc1.in_features == 40


def test_resnet18_layout_has_the_known_parameter_count():
    # CIFAR ResNet-18 (kuangliu/pytorch-cifar layout): 11,173,962 parameters.
    net = ResNet(3, 10, dim=2, width=64, blocks=(2, 2, 2, 2))
    assert sum(p.numel() for p in net.parameters()) == 11_173_962
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_resnet_has_batchnorm_and_cnn_uses_1d_convs_for_sequences():
    resnet = build_model("resnet", SPECS["mnist1d"])
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in resnet.modules())
    cnn = build_model("cnn", SPECS["mnist1d"])
    assert isinstance(cnn.conv1, torch.nn.Conv1d)
    assert isinstance(build_model("cnn", SPECS["digits"]).conv1, torch.nn.Conv2d)


def test_attention_models_use_torch_multihead_attention():
    for model in ("transformer", "vit"):
        net = build_model(model, SPECS[DEFAULT_DATA[model]])
        kinds = {type(m) for m in net.modules()}
        assert torch.nn.MultiheadAttention in kinds
        assert torch.nn.TransformerEncoderLayer in kinds


def test_same_seed_same_init():
    torch.manual_seed(7)
    a = build_model("vit", SPECS["digits"]).state_dict()
    torch.manual_seed(7)
    b = build_model("vit", SPECS["digits"]).state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


@pytest.mark.parametrize(
    ("model", "data", "match"),
    [
        ("mlp", "modadd", "Model 'mlp' needs real-valued inputs"),
        ("cnn", "modadd", "Model 'cnn' needs sequences or images"),
        ("transformer", "digits", "images suit 'vit'"),
        ("vit", "modadd", "tokens suit 'transformer'"),
        ("gpt", "digits", "Unknown model 'gpt'; expected one of: mlp, cnn, resnet"),
    ],
)
def test_incompatible_pairings_raise(model, data, match):
    with pytest.raises(ValueError, match=match):
        build_model(model, SPECS[data])


def test_vit_patch_must_divide_input():
    with pytest.raises(ValueError, match="multiples of patch=4"):
        build_model("vit", DataSpec("x", "image", (1, 30, 30), 10))
