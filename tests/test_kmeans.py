import itertools

import numpy as np
import pytest

from indexer.kmeans import assign_clusters, fit_kmeans

CENTERS = np.array(
    [[0, 0, 0], [10, 0, 0], [0, 10, 0], [0, 0, 10], [10, 10, 10]],
    np.float32,
)


def _blobs(per_blob: int = 60, seed: int = 0):
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.arange(len(CENTERS)), per_blob)
    x = CENTERS[truth] + rng.normal(scale=0.3, size=(len(truth), 3))
    return x.astype(np.float32), truth


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recovers_well_separated_blobs(seed):
    x, truth = _blobs()

    result = fit_kmeans(x, len(CENTERS), seed=seed)

    # Same partition up to renaming: each found cluster is one true blob.
    pairs = set(zip(result.labels.tolist(), truth.tolist(), strict=True))
    assert len(pairs) == len(CENTERS)


def test_centroids_land_on_blob_centers():
    x, _ = _blobs()

    result = fit_kmeans(x, len(CENTERS), seed=0)

    nearest = np.linalg.norm(
        result.centroids[:, None] - CENTERS[None], axis=2
    ).min(axis=1)
    assert nearest.max() < 0.2


def test_labels_are_the_nearest_centroids():
    x, _ = _blobs(seed=3)

    result = fit_kmeans(x, 4, seed=0)

    np.testing.assert_array_equal(
        result.labels, assign_clusters(x, result.centroids)
    )


def test_inertia_is_the_sum_of_squared_distances():
    x, _ = _blobs(seed=4)

    result = fit_kmeans(x, 3, seed=0)

    d2 = np.sum((x - result.centroids[result.labels]) ** 2, axis=1)
    np.testing.assert_allclose(result.inertia, d2.sum(), rtol=1e-4)


def test_same_seed_gives_the_same_result():
    x = np.random.default_rng(5).normal(size=(300, 6)).astype(np.float32)

    first = fit_kmeans(x, 6, seed=7)
    second = fit_kmeans(x, 6, seed=7)

    np.testing.assert_array_equal(first.centroids, second.centroids)
    np.testing.assert_array_equal(first.labels, second.labels)


def test_outputs_are_float32_and_int32():
    x, _ = _blobs()

    result = fit_kmeans(x.astype(np.float64), 2, seed=0)

    assert (result.centroids.dtype, result.labels.dtype) == (
        np.float32,
        np.int32,
    )


def test_every_cluster_is_used_when_points_allow():
    # Many duplicates invite empty clusters; distinct points remain for all.
    x = np.concatenate(
        [np.zeros((200, 2)), np.eye(2) * 5, [[9.0, 9.0], [-7.0, 3.0]]]
    ).astype(np.float32)

    result = fit_kmeans(x, 5, seed=0)

    assert len(np.unique(result.labels)) == 5


def test_k_equal_to_n_puts_each_point_in_its_own_cluster():
    x = np.arange(12, dtype=np.float32).reshape(6, 2) ** 2

    result = fit_kmeans(x, 6, seed=0)

    assert (len(np.unique(result.labels)), result.inertia) == (6, 0.0)


def test_one_cluster_is_the_mean():
    x, _ = _blobs()

    result = fit_kmeans(x, 1, seed=0)

    np.testing.assert_allclose(result.centroids[0], x.mean(axis=0), atol=1e-4)


@pytest.mark.parametrize(
    ("k", "message"), [(0, "between 1 and"), (11, "between 1 and")]
)
def test_bad_k_is_refused(k, message):
    x = np.zeros((10, 2), np.float32)

    with pytest.raises(ValueError, match=message):
        fit_kmeans(x, k, seed=0)


@pytest.mark.parametrize(
    "x",
    [
        np.zeros((0, 3), np.float32),
        np.zeros(5, np.float32),
        np.array([[0.0, np.nan]], np.float32),
    ],
    ids=["empty", "1-d", "nan"],
)
def test_bad_points_are_refused(x):
    with pytest.raises(ValueError, match="points must"):
        fit_kmeans(x, 1, seed=0)


def test_assign_refuses_centroids_of_another_size():
    with pytest.raises(ValueError, match="centroids must be"):
        assign_clusters(np.zeros((4, 3)), np.zeros((2, 5)))


def test_assign_picks_the_nearest_centroid():
    centroids = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = np.array(list(itertools.product([1.0, 9.0], [1.0, 8.0])))

    labels = assign_clusters(x, centroids)

    assert labels.tolist() == [0, 2, 1, 1]
