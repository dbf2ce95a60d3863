"""The command line turns presets and flags into the jobs' configs."""

import dataclasses

import pytest

from encoder.config import PRESETS
from lookalike.cli import _configs, build_parser


def _parsed(*argv: str) -> dict:
    return _configs(build_parser().parse_args(["train", *argv]))


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_a_preset_sets_model_and_training(name):
    configs = _parsed("--preset", name, "--epochs", "3")
    preset = PRESETS[name]
    assert configs["model"] == preset.model
    assert configs["train"].epochs == 3
    assert configs["train"].augment == preset.train.augment
    assert (
        configs["train"].contrastive_weight == preset.train.contrastive_weight
    )


def test_flags_replace_the_preset_settings():
    configs = _parsed(
        "--preset",
        "research",
        "--latent-dim",
        "32",
        "--contrastive-weight",
        "0.25",
        "--learning-rate",
        "0.01",
    )
    assert configs["model"].latent_dim == 32
    assert configs["model"].latent_activation == "sigmoid"
    assert configs["train"].contrastive_weight == 0.25
    assert configs["train"].learning_rate == 0.01


def test_flags_left_out_keep_the_preset_training_settings(monkeypatch):
    custom = PRESETS["default"]
    custom = type(custom)(
        custom.model,
        dataclasses.replace(
            custom.train, learning_rate=3e-4, batch_size=32, seed=7
        ),
    )
    monkeypatch.setitem(PRESETS, "default", custom)
    train = _parsed("--epochs", "2")["train"]
    assert (train.learning_rate, train.batch_size, train.seed) == (3e-4, 32, 7)
