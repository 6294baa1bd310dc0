"""Recipes: defaults (the study's protocol), validation messages, JSON round trip."""

import dataclasses
import json

import pytest

from dimlapse.pipelines import DEFAULT_DATA, MODELS, Recipe
from dimlapse.pipelines.zoo._recipes import check_codec, check_run_name


@pytest.mark.parametrize("model", MODELS)
def test_default_recipe_round_trips_through_json(model):
    r = Recipe.default(model, seed=3)
    assert r.data == DEFAULT_DATA[model]
    text = r.to_json()
    assert json.loads(text)["model"] == model
    assert Recipe.from_json(text) == r
    assert Recipe.from_dict(json.loads(json.dumps(r.to_dict()))) == r


def test_mlp_default_is_the_study_protocol():
    r = Recipe.default("mlp")
    assert (r.data, r.optimizer, r.lr, r.batch_size, r.steps, r.every, r.probe_size) == (
        "mnist1d",
        "adam",
        1e-3,
        64,
        8000,
        5,
        512,
    )


def test_defaults_per_model():
    assert [DEFAULT_DATA[m] for m in MODELS] == [
        "mnist1d",
        "mnist1d",
        "mnist1d",
        "modadd",
        "digits",
        "stdlib",
    ]
    t = Recipe.default("transformer")
    assert t.optimizer == "adamw" and t.weight_decay == 1.0 and t.betas == (0.9, 0.98)


def test_overrides_and_none_ignored():
    r = Recipe.default("cnn", steps=20, every=None, data="digits")
    assert (r.steps, r.every, r.data) == (20, 5, "digits")
    assert r.run_name == "cnn-digits-s0"


def test_recipe_is_frozen():
    r = Recipe.default("mlp")
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.steps = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"steps": 0}, r"Expected `steps` to be a positive int, got 0"),
        ({"every": -5}, r"Expected `every` to be a positive int, got -5"),
        ({"batch_size": 2.5}, r"Expected `batch_size` to be a positive int, got 2.5"),
        ({"seed": -1}, r"Expected `seed` to be a non-negative int, got -1"),
        ({"lr": 0.0}, r"Expected `lr` to be a positive float, got 0.0"),
        ({"weight_decay": -1.0}, r"Expected `weight_decay` to be a non-negative float"),
        ({"codec": "gzip"}, r"Expected `codec` to be one of .*got 'gzip'"),
        ({"data": "imagenet"}, r"Unknown data 'imagenet'; expected one of: mnist1d, digits"),
        ({"optimizer": "lbfgs"}, r"Unknown optimizer 'lbfgs'"),
        ({"activations": 1}, r"Expected `activations` to be a bool, got 1"),
    ],
)
def test_validation_messages(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Recipe.default("mlp", **kwargs)


def test_unknown_model_and_field():
    with pytest.raises(ValueError, match=r"Unknown model 'gpt'; expected one of: mlp, cnn"):
        Recipe.default("gpt")
    with pytest.raises(TypeError, match=r"Unknown recipe field\(s\) \['width'\]"):
        Recipe.from_dict({**Recipe.default("mlp").to_dict(), "width": 3})


@pytest.mark.parametrize("codec", ["zstd", "none", "float16", "bitround-10", "bitround-1"])
def test_valid_codecs(codec):
    assert check_codec(codec) == codec


@pytest.mark.parametrize("codec", ["bitround-0", "bitround-24", "bitround-x", "float32", ""])
def test_invalid_codecs(codec):
    with pytest.raises(ValueError, match="Expected `codec`"):
        check_codec(codec)


@pytest.mark.parametrize("name", ["../evil", "", "-x", "a/b", "a b"])
def test_invalid_run_names(name):
    with pytest.raises(ValueError, match="Expected `run` to be a name"):
        check_run_name(name)
