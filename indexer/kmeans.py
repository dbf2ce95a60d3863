"""k-means clustering of latent vectors, in JAX.

Initialisation is k-means++ (Arthur & Vassilvitskii, "k-means++: The
Advantages of Careful Seeding", SODA 2007); refinement is Lloyd's
algorithm, run inside one jitted ``lax.while_loop`` that stops after
``max_iters`` steps or once the inertia improves by less than ``tol``
(relative).
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class KMeans(NamedTuple):
    centroids: np.ndarray  # float32 [k, dim]
    labels: np.ndarray  # int32 [n], index of each point's nearest centroid
    inertia: float  # sum of squared distances to the nearest centroid


def fit_kmeans(
    x: np.ndarray,
    k: int,
    *,
    seed: int,
    max_iters: int = 100,
    tol: float = 1e-6,
) -> KMeans:
    """Clusters the rows of ``x`` [n, dim] into ``k`` groups.

    The same ``x``, ``k`` and ``seed`` always give the same result.
    """
    x = _check_points(x)
    if not 1 <= k <= len(x):
        raise ValueError(
            f"k must be between 1 and the number of points ({len(x)}), got {k}"
        )
    if max_iters < 1:
        raise ValueError(f"max_iters must be at least 1, got {max_iters}")

    x = jnp.asarray(x)
    centroids = _kmeans_plus_plus(jax.random.key(seed), x, k)
    centroids = _lloyd(x, centroids, max_iters, tol)
    labels, d2 = _assign(x, centroids)
    return KMeans(
        centroids=np.asarray(centroids),
        labels=np.asarray(labels),
        inertia=float(jnp.sum(d2)),
    )


def assign_clusters(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """The index of the nearest centroid for each row of ``x``; int32 [n]."""
    x = _check_points(x)
    centroids = np.asarray(centroids, dtype=np.float32)
    if centroids.ndim != 2 or centroids.shape[1] != x.shape[1]:
        raise ValueError(
            f"centroids must be [k, {x.shape[1]}] to match the points, got "
            f"shape {centroids.shape}"
        )
    labels, _ = _assign(jnp.asarray(x), jnp.asarray(centroids))
    return np.asarray(labels)


def _check_points(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or not len(x):
        raise ValueError(
            f"points must be a non-empty 2-D array [n, dim], got {x.shape}"
        )
    if not np.isfinite(x).all():
        raise ValueError("points must be finite (no NaN or inf)")
    return x


def _squared_distances(x: jax.Array, centroids: jax.Array) -> jax.Array:
    """[n, k]; expanded form, clipped at 0 against rounding."""
    d2 = (
        jnp.sum(x * x, axis=1, keepdims=True)
        - 2.0 * x @ centroids.T
        + jnp.sum(centroids * centroids, axis=1)
    )
    return jnp.maximum(d2, 0.0)


@jax.jit
def _assign(x: jax.Array, centroids: jax.Array) -> tuple[jax.Array, jax.Array]:
    d2 = _squared_distances(x, centroids)
    labels = jnp.argmin(d2, axis=1).astype(jnp.int32)
    return labels, jnp.take_along_axis(d2, labels[:, None], axis=1)[:, 0]


@functools.partial(jax.jit, static_argnums=2)
def _kmeans_plus_plus(rng: jax.Array, x: jax.Array, k: int) -> jax.Array:
    n = x.shape[0]
    rng, first_rng = jax.random.split(rng)
    first = jax.random.randint(first_rng, (), 0, n)
    centroids = jnp.zeros((k, x.shape[1]), x.dtype).at[0].set(x[first])
    min_d2 = jnp.sum((x - x[first]) ** 2, axis=1)

    def add_centroid(i, carry):
        centroids, min_d2, rng = carry
        rng, pick_rng = jax.random.split(rng)
        # Sample proportionally to the squared distance to the nearest
        # chosen centroid; when every point coincides with one, uniformly.
        total = jnp.sum(min_d2)
        p = jnp.where(total > 0, min_d2 / total, jnp.full((n,), 1.0 / n))
        pick = jax.random.choice(pick_rng, n, p=p)
        centroids = centroids.at[i].set(x[pick])
        min_d2 = jnp.minimum(min_d2, jnp.sum((x - x[pick]) ** 2, axis=1))
        return centroids, min_d2, rng

    centroids, _, _ = jax.lax.fori_loop(
        1, k, add_centroid, (centroids, min_d2, rng)
    )
    return centroids


@jax.jit
def _lloyd(
    x: jax.Array, centroids: jax.Array, max_iters: int, tol: float
) -> jax.Array:
    k = centroids.shape[0]

    def step(centroids):
        labels, d2 = _assign(x, centroids)
        sums = jax.ops.segment_sum(x, labels, num_segments=k)
        counts = jax.ops.segment_sum(jnp.ones_like(d2), labels, num_segments=k)
        means = sums / jnp.maximum(counts, 1.0)[:, None]
        # An empty cluster restarts at one of the points farthest from their
        # centroid (a different one per empty cluster), which lowers the
        # inertia instead of leaving a dead centroid behind.
        empty = counts == 0
        farthest = jnp.argsort(-d2)
        rank = jnp.clip(jnp.cumsum(empty) - 1, 0, x.shape[0] - 1)
        centroids = jnp.where(empty[:, None], x[farthest[rank]], means)
        return centroids, jnp.sum(d2)

    def cond(state):
        i, _, inertia, previous = state
        improving = previous - inertia > tol * jnp.maximum(previous, 1e-30)
        return (i < max_iters) & ((i < 2) | improving)

    def body(state):
        i, centroids, inertia, _ = state
        centroids, new_inertia = step(centroids)
        return i + 1, centroids, new_inertia, inertia

    inf = jnp.array(jnp.inf, x.dtype)
    _, centroids, _, _ = jax.lax.while_loop(
        cond, body, (jnp.array(0), centroids, inf, inf)
    )
    return centroids
