"""train_and_evaluate on tiny generated images: artifacts, determinism,
early stopping, divergence, and the checkpoint round trip."""

import dataclasses
import json

import numpy as np
import pytest

from encoder.config import ModelConfig, TrainConfig
from encoder.encode import Encoder
from encoder.train import (
    TrainingDivergedError,
    split_indices,
    train_and_evaluate,
)

SMALL = ModelConfig(
    image_height=20,
    image_width=14,
    latent_dim=4,
    stem_channels=4,
    block_channels=(8, 16),
    decoder_channels=(16, 8),
)
ONE_EPOCH = TrainConfig(epochs=1, batch_size=16, validation_fraction=0.2)


def _images(n: int, seed: int = 0) -> np.ndarray:
    """Flat-coloured products on white, like catalog photos."""
    rng = np.random.default_rng(seed)
    images = np.full((n, 20, 14, 3), 255, np.uint8)
    for image in images:
        top, left = rng.integers(0, 8, size=2)
        image[top : top + 12, left : left + 6] = rng.integers(0, 256, 3)
    return images


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("trained")
    return train_and_evaluate(_images(40), SMALL, ONE_EPOCH, workdir)


def test_writes_config_json(trained):
    values = json.loads((trained.workdir / "config.json").read_text())
    assert ModelConfig.from_dict(values["model"]) == SMALL
    assert TrainConfig.from_dict(values["train"]) == ONE_EPOCH


def test_writes_history_per_epoch(trained):
    history = json.loads((trained.workdir / "history.json").read_text())
    assert [sorted(entry) for entry in history] == [
        [
            "epoch",
            "images_per_second",
            "seconds",
            "train_contrastive",
            "train_loss",
            "train_reconstruction",
            "val_contrastive",
            "val_loss",
            "val_reconstruction",
        ]
    ]


def test_writes_reconstructions_of_validation_images(trained):
    with np.load(trained.workdir / "reconstructions.npz") as saved:
        shapes = {
            name: (saved[name].shape, saved[name].dtype) for name in saved
        }
    assert shapes == {
        "originals": ((8, 20, 14, 3), np.uint8),
        "epoch_1": ((8, 20, 14, 3), np.uint8),
    }


def test_loaded_encoder_matches_trained_model(trained):
    images = _images(6, seed=7)
    loaded = Encoder.load(trained.workdir)
    assert loaded.fingerprint == trained.encoder.fingerprint
    np.testing.assert_array_equal(
        loaded.encode(images), trained.encoder.encode(images)
    )


def test_same_seed_gives_identical_losses(trained, tmp_path):
    again = train_and_evaluate(_images(40), SMALL, ONE_EPOCH, tmp_path)
    assert again.history[0]["train_loss"] == trained.history[0]["train_loss"]
    assert again.history[0]["val_loss"] == trained.history[0]["val_loss"]


def test_catalog_smaller_than_a_batch_trains(tmp_path):
    config = dataclasses.replace(ONE_EPOCH, batch_size=64)
    result = train_and_evaluate(_images(10), SMALL, config, tmp_path)
    assert np.isfinite(result.best_val_loss)


def test_early_stopping_ends_training(tmp_path):
    # A learning rate this large thrashes, so validation loss stops
    # improving long before the epoch limit.
    config = TrainConfig(
        epochs=30, batch_size=16, learning_rate=3.0, patience=1
    )
    result = train_and_evaluate(_images(20), SMALL, config, tmp_path)
    assert result.epochs_run == result.best_epoch + config.patience < 30


def test_diverging_loss_names_the_step(tmp_path):
    config = dataclasses.replace(ONE_EPOCH, learning_rate=1e30)
    with pytest.raises(TrainingDivergedError, match=r"at step \d+"):
        train_and_evaluate(_images(40), SMALL, config, tmp_path)


def test_split_is_deterministic_and_disjoint():
    train, val = split_indices(50, 0.2, seed=3)
    again_train, again_val = split_indices(50, 0.2, seed=3)
    assert (len(train), len(val)) == (40, 10)
    assert not set(train) & set(val)
    np.testing.assert_array_equal(train, again_train)
    np.testing.assert_array_equal(val, again_val)


@pytest.mark.parametrize(
    ("images", "change", "message"),
    [
        (np.zeros((1, 20, 14, 3), np.uint8), {}, "at least 2 images"),
        (np.zeros((4, 20, 14, 3), np.float32), {}, "uint8"),
        (np.zeros((4, 14, 20, 3), np.uint8), {}, "expects"),
        (_images(4), {"validation_fraction": 1.0}, "validation_fraction"),
        (_images(4), {"learning_rate": 0.0}, "learning_rate"),
        (_images(4), {"lr_schedule": "step"}, "lr_schedule"),
        (_images(4), {"contrastive_weight": -1.0}, "contrastive_weight"),
        (_images(4), {"contrastive_temperature": 0.0}, "temperature"),
        (_images(4), {"label_attribute": "type"}, "contrastive_weight"),
    ],
)
def test_bad_arguments_are_refused(tmp_path, images, change, message):
    config = dataclasses.replace(ONE_EPOCH, **change)
    with pytest.raises(ValueError, match=message):
        train_and_evaluate(images, SMALL, config, tmp_path)


def test_plain_training_has_no_contrastive_loss(trained):
    entry = trained.history[0]
    assert entry["train_contrastive"] == entry["val_contrastive"] == 0.0
    assert entry["train_loss"] == entry["train_reconstruction"]
    assert entry["val_loss"] == entry["val_reconstruction"]


def test_contrastive_training_adds_the_weighted_term(tmp_path):
    config = dataclasses.replace(
        ONE_EPOCH,
        augment=True,
        contrastive_weight=0.5,
        lr_schedule="cosine",
    )
    result = train_and_evaluate(_images(40), SMALL, config, tmp_path)
    entry = result.history[0]
    # 2 x 16 views: a random guess costs about log(31) = 3.4.
    assert 0.0 < entry["train_contrastive"] < 10.0
    assert entry["val_loss"] == pytest.approx(
        entry["val_reconstruction"] + 0.5 * entry["val_contrastive"]
    )
    again = train_and_evaluate(_images(40), SMALL, config, tmp_path / "2")
    assert again.history[0]["train_loss"] == entry["train_loss"]


def test_contrastive_view_leaves_batch_statistics_to_the_photos():
    # Without augmentation the first pass sees the photos themselves; the
    # colour-jittered second view must not move the running averages.
    import jax
    import optax
    from flax import nnx

    from encoder.model import Autoencoder
    from encoder.train import create_state, make_steps

    images = _images(16)
    weights = np.ones(16, np.float32)
    stats = {}
    for weight in (0.0, 1.0):
        model = Autoencoder(SMALL, rngs=nnx.Rngs(0))
        tx = optax.adam(1e-3)
        config = dataclasses.replace(ONE_EPOCH, contrastive_weight=weight)
        train_step, _, _ = make_steps(model, tx, config)
        state, losses = train_step(
            create_state(model, tx), images, weights, jax.random.key(0)
        )
        stats[weight] = jax.tree.leaves(state.batch_stats)
        assert (float(losses["contrastive"]) > 0) == (weight > 0)
    for plain, contrastive in zip(stats[0.0], stats[1.0], strict=True):
        np.testing.assert_allclose(plain, contrastive, rtol=1e-6)


def test_labels_come_exactly_with_a_label_attribute(tmp_path):
    labelled = dataclasses.replace(
        ONE_EPOCH, contrastive_weight=0.5, label_attribute="type"
    )
    with pytest.raises(ValueError, match="exactly when"):
        train_and_evaluate(_images(8), SMALL, labelled, tmp_path)
    with pytest.raises(ValueError, match="exactly when"):
        train_and_evaluate(
            _images(8), SMALL, ONE_EPOCH, tmp_path, labels=np.zeros(8, int)
        )
    with pytest.raises(ValueError, match="one per image"):
        train_and_evaluate(
            _images(8), SMALL, labelled, tmp_path, labels=np.zeros(7, int)
        )


def test_labelled_training_uses_known_labels_only(tmp_path):
    images = _images(40)
    plain = dataclasses.replace(ONE_EPOCH, contrastive_weight=0.5)
    labelled = dataclasses.replace(plain, label_attribute="type")
    self_supervised = train_and_evaluate(images, SMALL, plain, tmp_path / "a")
    unknown = train_and_evaluate(
        images, SMALL, labelled, tmp_path / "b", labels=np.full(40, -1)
    )
    two_kinds = train_and_evaluate(
        images, SMALL, labelled, tmp_path / "c", labels=np.arange(40) % 2
    )
    # Unknown labels add no pairs: the same run as without labels.
    assert unknown.history[0]["train_loss"] == pytest.approx(
        self_supervised.history[0]["train_loss"], rel=1e-6
    )
    # Known ones pull same-label images together: another objective.
    assert two_kinds.history[0]["train_contrastive"] != pytest.approx(
        self_supervised.history[0]["train_contrastive"], rel=1e-3
    )


def test_colour_jitter_changes_the_second_view_only():
    import jax
    import optax
    from flax import nnx

    from encoder.model import Autoencoder
    from encoder.train import create_state, make_steps

    images, weights = _images(16), np.ones(16, np.float32)
    losses = {}
    for jitter in (True, False):
        model = Autoencoder(SMALL, rngs=nnx.Rngs(0))
        tx = optax.adam(1e-3)
        config = dataclasses.replace(
            ONE_EPOCH, contrastive_weight=1.0, colour_jitter=jitter
        )
        train_step, _, _ = make_steps(model, tx, config)
        _, losses[jitter] = train_step(
            create_state(model, tx), images, weights, jax.random.key(0)
        )
    # The same photos and keys: the reconstruction is the same, the
    # contrastive term sees another second view.
    assert float(losses[True]["reconstruction"]) == pytest.approx(
        float(losses[False]["reconstruction"]), rel=1e-6
    )
    assert float(losses[True]["contrastive"]) != pytest.approx(
        float(losses[False]["contrastive"]), rel=1e-4
    )
