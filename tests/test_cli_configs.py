"""The command line turns presets and flags into the jobs' configs, and
catalog attributes into training labels."""

import dataclasses

import numpy as np
import pytest

from encoder.catalog import CatalogImages, Product
from encoder.config import PRESETS
from lookalike.cli import _configs, build_parser
from lookalike.jobs import contrastive_labels


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


def test_label_attribute_flag_sets_or_clears_the_presets_setting(monkeypatch):
    labelled = PRESETS["contrastive"]
    labelled = type(labelled)(
        labelled.model,
        dataclasses.replace(labelled.train, label_attribute="articleType"),
    )
    monkeypatch.setitem(PRESETS, "contrastive", labelled)
    chosen = _parsed("--preset", "contrastive", "--label-attribute", "gender")
    assert chosen["train"].label_attribute == "gender"
    cleared = _parsed("--preset", "contrastive", "--label-attribute", "none")
    assert cleared["train"].label_attribute is None
    kept = _parsed("--preset", "contrastive")
    assert kept["train"].label_attribute == "articleType"


def _catalog(*attributes: dict) -> CatalogImages:
    return CatalogImages(
        images=np.zeros((len(attributes), 4, 3, 3), np.uint8),
        products=[
            Product(str(i), f"{i}.jpg", values)
            for i, values in enumerate(attributes)
        ],
    )


def test_contrastive_labels_number_the_values_and_mark_the_missing():
    catalog = _catalog(
        {"articleType": "Shirts"},
        {"articleType": "Jeans"},
        {},
        {"articleType": "Shirts", "year": 2012},
    )
    labels = contrastive_labels(catalog, "articleType")
    assert labels.dtype == np.int32
    assert labels[2] == -1
    assert labels[0] == labels[3] != labels[1]
    assert sorted(set(labels.tolist())) == [-1, 0, 1]


def test_contrastive_labels_name_the_columns_when_the_attribute_is_missing():
    catalog = _catalog({"gender": "Men"}, {"year": 2012})
    with pytest.raises(ValueError, match=r"\['gender', 'year'\]"):
        contrastive_labels(catalog, "articleType")
    with pytest.raises(ValueError, match="no CSV"):
        contrastive_labels(_catalog({}, {}), "articleType")


def test_attribute_labels_warn_when_they_make_few_pairs(caplog):
    names = _catalog(*({"productDisplayName": f"item {i}"} for i in range(6)))
    contrastive_labels(names, "productDisplayName")
    assert "few pairs" in caplog.text
    caplog.clear()
    types = _catalog(*({"articleType": t} for t in "AABBAB"))
    contrastive_labels(types, "articleType")
    assert "few pairs" not in caplog.text


def test_colour_jitter_flag_turns_it_off_and_on():
    assert not _parsed("--preset", "attributes")["train"].colour_jitter
    on = _parsed("--preset", "attributes", "--colour-jitter")
    assert on["train"].colour_jitter
    assert not _parsed("--no-colour-jitter")["train"].colour_jitter
