"""The random views used in training and the contrastive loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from encoder import augment
from encoder.train import contrastive_loss


def _products(n: int = 8) -> jax.Array:
    """Dark rectangles on white, float in [0, 1]."""
    images = np.ones((n, 40, 30, 3), np.float32)
    for i, image in enumerate(images):
        image[10:30, 8 + i % 4 : 20 + i % 4] = (0.8, 0.1 * i, 0.2)
    return jnp.asarray(images)


@pytest.mark.parametrize(
    "view", [augment.geometric_view, augment.photometric_view]
)
def test_views_keep_shape_range_and_white_background(view):
    images = _products()
    out = view(jax.random.key(0), images)
    assert out.shape == images.shape
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    # A corner far from the product stays white under every change.
    np.testing.assert_allclose(out[:, :2, :2], 1.0, atol=1e-5)
    # ... while the product itself changes in at least one image.
    assert not np.allclose(out, images, atol=1e-3)


@pytest.mark.parametrize(
    "view", [augment.geometric_view, augment.photometric_view]
)
def test_views_depend_only_on_the_key(view):
    images = _products()
    first = view(jax.random.key(1), images)
    np.testing.assert_array_equal(first, view(jax.random.key(1), images))
    assert not np.array_equal(first, view(jax.random.key(2), images))


def test_photometric_view_keeps_the_silhouette():
    images = _products()
    out = np.asarray(augment.photometric_view(jax.random.key(3), images))
    # Colour changes only: white stays white, the product stays non-white.
    white = np.all(np.asarray(images) == 1.0, axis=-1)
    assert np.all(np.isclose(out, 1.0).all(axis=-1)[white])
    assert not np.isclose(out, 1.0).all(axis=-1)[~white].any()


def test_contrastive_loss_is_low_for_matching_pairs_and_high_otherwise():
    rng = np.random.default_rng(0)
    z = jnp.asarray(rng.normal(size=(16, 8)), jnp.float32)
    weights = jnp.ones(16)
    matched = contrastive_loss(z, z, weights, temperature=0.1)
    shuffled = contrastive_loss(z, z[::-1], weights, temperature=0.1)
    assert float(matched) < 0.5 < float(shuffled)


def test_contrastive_loss_ignores_padding():
    rng = np.random.default_rng(1)
    z1 = jnp.asarray(rng.normal(size=(6, 4)), jnp.float32)
    z2 = jnp.asarray(rng.normal(size=(6, 4)), jnp.float32)
    real = contrastive_loss(z1[:4], z2[:4], jnp.ones(4), temperature=0.5)
    # Two padded rows of arbitrary (even huge) values change nothing.
    pad = jnp.full((2, 4), 1e6)
    padded = contrastive_loss(
        jnp.concatenate([z1[:4], pad]),
        jnp.concatenate([z2[:4], -pad]),
        jnp.array([1, 1, 1, 1, 0, 0], jnp.float32),
        temperature=0.5,
    )
    assert np.isfinite(float(padded))
    np.testing.assert_allclose(float(padded), float(real), rtol=1e-5)


def test_unknown_labels_leave_the_contrastive_loss_self_supervised():
    rng = np.random.default_rng(2)
    z1 = jnp.asarray(rng.normal(size=(8, 4)), jnp.float32)
    z2 = jnp.asarray(rng.normal(size=(8, 4)), jnp.float32)
    weights = jnp.ones(8)
    plain = contrastive_loss(z1, z2, weights, temperature=0.3)
    unknown = contrastive_loss(
        z1, z2, weights, temperature=0.3, labels=jnp.full(8, -1)
    )
    # Every label distinct: each view's only positive is still its partner.
    distinct = contrastive_loss(
        z1, z2, weights, temperature=0.3, labels=jnp.arange(8)
    )
    np.testing.assert_allclose(float(unknown), float(plain), rtol=1e-6)
    np.testing.assert_allclose(float(distinct), float(plain), rtol=1e-6)


def test_labels_reward_latents_that_group_by_label():
    # Two labels; latents that point one way per label score better than
    # latents that mix the labels, although each pair matches in both.
    labels = jnp.array([0, 0, 0, 0, 1, 1, 1, 1])
    rng = np.random.default_rng(3)
    noise = rng.normal(scale=0.1, size=(8, 4))
    grouped = np.where(labels[:, None] == 0, 1.0, -1.0) * np.eye(4)[0]
    mixed = np.where((np.arange(8) % 2)[:, None] == 0, 1.0, -1.0) * np.eye(4)[0]
    losses = {}
    for name, base in (("grouped", grouped), ("mixed", mixed)):
        z = jnp.asarray(base + noise, jnp.float32)
        losses[name] = float(
            contrastive_loss(z, z, jnp.ones(8), 0.2, labels=labels)
        )
    assert losses["grouped"] < losses["mixed"]


def test_labels_of_padding_are_ignored():
    rng = np.random.default_rng(4)
    z1 = jnp.asarray(rng.normal(size=(6, 4)), jnp.float32)
    z2 = jnp.asarray(rng.normal(size=(6, 4)), jnp.float32)
    labels = jnp.array([0, 1, 0, 1, 0, 1])
    real = contrastive_loss(z1[:4], z2[:4], jnp.ones(4), 0.5, labels[:4])
    padded = contrastive_loss(
        z1, z2, jnp.array([1, 1, 1, 1, 0, 0], jnp.float32), 0.5, labels
    )
    np.testing.assert_allclose(float(padded), float(real), rtol=1e-5)
