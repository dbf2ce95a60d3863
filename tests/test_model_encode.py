"""Batch encoding with Encoder: shapes, padding, compilations, threads."""

import dataclasses
import threading

import numpy as np
import pytest
from flax import nnx

from encoder.config import ModelConfig
from encoder.encode import Encoder, bucket_size
from encoder.model import Autoencoder

SMALL = ModelConfig(
    image_height=20,
    image_width=14,
    latent_dim=4,
    stem_channels=4,
    block_channels=(8, 16),
    decoder_channels=(16, 8),
)


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    model = Autoencoder(SMALL, rngs=nnx.Rngs(0))
    return Encoder.from_model(model, SMALL)


def _images(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 20, 14, 3), dtype=np.uint8)


def test_encode_returns_float32_latents(encoder):
    z = encoder.encode(_images(5))
    assert (z.shape, z.dtype) == ((5, 4), np.float32)


def test_encode_of_no_images_is_empty(encoder):
    assert encoder.encode(_images(0)).shape == (0, 4)


def test_latent_does_not_depend_on_batch_neighbours(encoder):
    images = _images(37)
    alone = encoder.encode(images[:3])
    in_batches = encoder.encode(images, batch_size=16)
    np.testing.assert_allclose(alone, in_batches[:3], rtol=1e-5, atol=1e-6)


def test_encode_accepts_a_read_only_memmap(encoder, tmp_path):
    images = _images(9)
    path = tmp_path / "images.u8"
    images.tofile(path)
    mapped = np.memmap(path, np.uint8, mode="r", shape=images.shape)
    np.testing.assert_array_equal(
        encoder.encode(mapped), encoder.encode(images)
    )


@pytest.mark.parametrize(
    ("n", "batch_size", "expected"),
    [(1, 256, 1), (3, 256, 4), (200, 256, 256), (5, 6, 6), (70, 64, 64)],
)
def test_bucket_size(n, batch_size, expected):
    assert bucket_size(n, batch_size) == expected


def test_same_padded_size_does_not_recompile():
    # A fresh encoder: compilations are counted per instance.
    encoder = Encoder.from_model(Autoencoder(SMALL, rngs=nnx.Rngs(0)), SMALL)
    encoder.encode(_images(3))
    compiled = encoder.trace_count
    encoder.encode(_images(4, seed=1))
    encoder.encode(_images(3, seed=2))
    assert encoder.trace_count == compiled


def test_catalog_in_full_batches_compiles_one_shape():
    encoder = Encoder.from_model(Autoencoder(SMALL, rngs=nnx.Rngs(0)), SMALL)
    encoder.encode(_images(40), batch_size=16)
    assert encoder.trace_count == 1


def test_concurrent_encodes_agree(encoder):
    images = _images(8)
    expected = encoder.encode(images)
    results = [None] * 4

    def work(slot):
        results[slot] = encoder.encode(images)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for result in results:
        np.testing.assert_array_equal(result, expected)


def test_reconstruct_returns_uint8_images(encoder):
    x_hat = encoder.reconstruct(_images(3))
    assert (x_hat.shape, x_hat.dtype) == ((3, 20, 14, 3), np.uint8)


def test_fingerprint_identifies_weights(encoder):
    same = Encoder.from_model(Autoencoder(SMALL, rngs=nnx.Rngs(0)), SMALL)
    other = Encoder.from_model(Autoencoder(SMALL, rngs=nnx.Rngs(1)), SMALL)
    assert same.fingerprint == encoder.fingerprint
    assert other.fingerprint != encoder.fingerprint


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (np.zeros((2, 20, 14, 3), np.float32), "uint8"),
        (np.zeros((20, 14, 3), np.uint8), "uint8"),
        (np.zeros((2, 14, 20, 3), np.uint8), "20x14"),
        (np.zeros((2, 20, 14, 4), np.uint8), "20x14"),
    ],
)
def test_bad_images_are_refused(encoder, images, message):
    with pytest.raises(ValueError, match=message):
        encoder.encode(images)


def test_load_without_a_trained_model_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        Encoder.load(tmp_path)


def test_normalized_latents_have_unit_length_and_the_same_direction():
    model = Autoencoder(SMALL, rngs=nnx.Rngs(0))
    unit = dataclasses.replace(SMALL, normalize_latent=True)
    raw = Encoder.from_model(model, SMALL).encode(_images(6))
    normalized = Encoder.from_model(model, unit)
    z = normalized.encode(_images(6))
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(
        z, raw / np.linalg.norm(raw, axis=1, keepdims=True), rtol=1e-5
    )
    assert (
        normalized.fingerprint != Encoder.from_model(model, SMALL).fingerprint
    )
