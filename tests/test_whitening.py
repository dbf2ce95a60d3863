"""PCA whitening of the latent: the fit, the Encoder and training."""

import dataclasses
import hashlib
import json

import jax
import numpy as np
import pytest
from flax import nnx

from encoder.config import ModelConfig, TrainConfig
from encoder.encode import WHITENING_FILE, Encoder
from encoder.model import Autoencoder
from encoder.train import train_and_evaluate
from encoder.whitening import Whitening

SMALL = ModelConfig(
    image_height=20,
    image_width=14,
    latent_dim=4,
    stem_channels=4,
    block_channels=(8, 16),
    decoder_channels=(16, 8),
)
WHITE = dataclasses.replace(SMALL, whiten_latent=True)


def _correlated(n: int = 2000) -> np.ndarray:
    rng = np.random.default_rng(0)
    mixing = np.array([[3.0, 0, 0], [2.0, 0.5, 0], [0, 1.0, 1.0]])
    return rng.normal(size=(n, 3)) @ mixing + np.array([5.0, -1.0, 2.0])


def test_whitened_latents_are_centred_and_decorrelated():
    latents = _correlated()
    white = Whitening.fit(latents, epsilon_ratio=0.0).apply(latents)
    np.testing.assert_allclose(white.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(
        np.cov(white, rowvar=False), np.eye(3), atol=0.01
    )


def test_a_dead_direction_is_not_blown_up():
    latents = _correlated()
    latents[:, 2] = 7.0  # a latent dimension that never varies
    white = Whitening.fit(latents).apply(latents)
    assert np.all(np.isfinite(white))
    assert white.std(axis=0).min() < 1e-3


def test_save_and_load_round_trip(tmp_path):
    whitening = Whitening.fit(_correlated())
    whitening.save(tmp_path / "w.npz")
    loaded = Whitening.load(tmp_path / "w.npz")
    np.testing.assert_array_equal(loaded.matrix, whitening.matrix)
    np.testing.assert_array_equal(loaded.mean, whitening.mean)


def test_fit_refuses_too_few_latents():
    with pytest.raises(ValueError, match="N >= 2"):
        Whitening.fit(np.zeros((1, 4)))


def test_encoder_applies_the_whitening():
    images = np.random.default_rng(1).integers(0, 256, (9, 20, 14, 3), np.uint8)
    model = Autoencoder(SMALL, rngs=nnx.Rngs(0))
    raw = Encoder.from_model(model, SMALL).encode(images)
    whitening = Whitening.fit(raw)
    white = Encoder.from_model(model, WHITE, whitening)
    np.testing.assert_allclose(
        white.encode(images), whitening.apply(raw), rtol=1e-4, atol=1e-4
    )
    assert white.fingerprint != Encoder.from_model(model, SMALL).fingerprint


def test_encoder_needs_whitening_exactly_when_the_config_says_so():
    model = Autoencoder(SMALL, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="whitens"):
        Encoder.from_model(model, WHITE)
    whitening = Whitening(np.zeros(4, np.float32), np.eye(4, dtype=np.float32))
    with pytest.raises(ValueError, match="does not whiten"):
        Encoder.from_model(model, SMALL, whitening)


def test_training_writes_the_whitening_and_load_uses_it(tmp_path):
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (30, 20, 14, 3), np.uint8)
    config = TrainConfig(epochs=1, batch_size=8, validation_fraction=0.2)
    result = train_and_evaluate(images, WHITE, config, tmp_path)
    assert (tmp_path / WHITENING_FILE).is_file()
    loaded = Encoder.load(tmp_path)
    assert loaded.fingerprint == result.encoder.fingerprint
    latents = loaded.encode(images)
    np.testing.assert_array_equal(latents, result.encoder.encode(images))
    (tmp_path / WHITENING_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="whitening"):
        Encoder.load(tmp_path)


def test_whitening_of_another_size_is_refused():
    model = Autoencoder(SMALL, rngs=nnx.Rngs(0))
    whitening = Whitening(np.zeros(3, np.float32), np.eye(3, dtype=np.float32))
    with pytest.raises(ValueError, match="4 dimensions"):
        Encoder.from_model(model, WHITE, whitening)


def test_too_few_training_images_to_whiten_are_trained_with_a_warning(
    tmp_path, caplog
):
    images = np.random.default_rng(3).integers(0, 256, (6, 20, 14, 3), np.uint8)
    config = TrainConfig(epochs=1, batch_size=8, validation_fraction=0.5)
    result = train_and_evaluate(images, WHITE, config, tmp_path)
    assert "from only 3 training images" in caplog.text
    assert np.all(np.isfinite(result.encoder.encode(images)))


def test_fingerprint_of_an_unwhitened_model_ignores_the_options():
    # Models trained before whiten_latent and normalize_latent existed
    # hashed a config without them; their indexes must still match them.
    model = Autoencoder(SMALL, rngs=nnx.Rngs(0))
    encoder = Encoder.from_model(model, SMALL)
    values = SMALL.to_dict()
    del values["whiten_latent"], values["normalize_latent"]
    digest = hashlib.sha256(json.dumps(values, sort_keys=True).encode())
    state = nnx.split(model)[1]
    leaves = jax.tree_util.tree_leaves_with_path(state)
    for path, leaf in sorted(leaves, key=lambda item: str(item[0])):
        array = np.asarray(leaf)
        digest.update(jax.tree_util.keystr(path).encode())
        digest.update(str(array.dtype).encode())
        digest.update(str(array.shape).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    assert encoder.fingerprint == digest.hexdigest()[:16]
