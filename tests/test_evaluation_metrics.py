"""Retrieval and clustering metrics on tiny hand-made cases."""

import numpy as np
import pytest

from evaluation import metrics

# Points on a line: the neighbours of each are obvious by eye.
LINE = np.array([[0.0], [1.0], [3.0], [7.0]], dtype=np.float32)


def test_euclidean_neighbours_leave_one_out():
    found = metrics.nearest_neighbors(LINE, LINE, 2, exclude_self=True)
    np.testing.assert_array_equal(
        found.indices, [[1, 2], [0, 2], [1, 0], [2, 1]]
    )


def test_euclidean_distances_are_not_squared():
    found = metrics.nearest_neighbors(LINE, LINE, 2, exclude_self=True)
    np.testing.assert_allclose(
        found.distances, [[1, 3], [1, 2], [2, 3], [4, 6]], atol=1e-5
    )


def test_without_exclude_self_a_point_is_its_own_nearest():
    found = metrics.nearest_neighbors(LINE, LINE, 1)
    np.testing.assert_array_equal(found.indices[:, 0], [0, 1, 2, 3])


def test_cosine_ignores_length():
    gallery = np.array([[10.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    query = np.array([[1.0, 0.2]])
    found = metrics.nearest_neighbors(query, gallery, 3, metric="cosine")
    np.testing.assert_array_equal(found.indices, [[0, 1, 2]])


def test_blocks_do_not_change_the_answer():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(37, 5)).astype(np.float32)
    whole = metrics.nearest_neighbors(x, x, 6, exclude_self=True)
    blocked = metrics.nearest_neighbors(
        x, x, 6, exclude_self=True, block_size=4
    )
    np.testing.assert_array_equal(whole.indices, blocked.indices)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"k": 4, "exclude_self": True}, "k must be between 1 and 3"),
        ({"k": 0}, "k must be between"),
        ({"k": 1, "metric": "manhattan"}, "metric"),
    ],
)
def test_bad_search_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        metrics.nearest_neighbors(LINE, LINE, **kwargs)


def test_precision_at_k_counts_matching_labels():
    labels = ["a", "a", "b", "b", "a"]
    # The query ("a") ranks items 1 ("a"), 2 ("b"), 4 ("a"), 3, 0.
    ranked = np.array([[1, 2, 4, 3, 0]])
    result = metrics.retrieval_metrics(["a"], labels, ranked, ks=(1, 2, 3))
    assert result.precision == pytest.approx({1: 1.0, 2: 0.5, 3: 2 / 3})


def test_average_precision_of_one_query():
    # Relevant at ranks 1 and 3 of 2 relevant: (1/1 + 2/3) / 2.
    labels = ["a", "b", "a", "b"]
    ranked = np.array([[0, 1, 2, 3]])
    result = metrics.retrieval_metrics(["a"], labels, ranked, ks=(1,))
    assert result.map_at_10 == pytest.approx(5 / 6)


def test_average_precision_is_normalised_by_at_most_ten():
    # 20 relevant items, all 10 retrieved ones relevant: a perfect 1.
    labels = ["a"] * 20
    ranked = np.arange(20)[None, :]
    result = metrics.retrieval_metrics(["a"], labels, ranked)
    assert result.map_at_10 == pytest.approx(1.0)


def test_leave_one_out_does_not_count_the_query_as_relevant():
    # Two "a": each query has exactly one relevant other item, found first.
    vectors = np.array([[0.0], [0.1], [5.0], [5.1]], dtype=np.float32)
    result = metrics.evaluate_retrieval(vectors, ["a", "a", "b", "b"], ks=(1,))
    assert result.map_at_10 == pytest.approx(1.0)


def test_a_singleton_class_query_has_no_relevant_item():
    vectors = np.array([[0.0], [0.1], [5.0]], dtype=np.float32)
    result = metrics.evaluate_retrieval(vectors, ["a", "a", "b"], ks=(1,))
    assert result.num_without_relevant == 1


def test_missing_labels_are_left_out_and_counted():
    # Item 1 sits between the two "a" but has no label: without it, each
    # "a" finds the other first.
    vectors = np.array([[0.0], [0.5], [1.0], [9.0]], dtype=np.float32)
    result = metrics.evaluate_retrieval(vectors, ["a", None, "a", "b"], ks=(1,))
    assert (result.num_queries, result.num_missing_queries) == (3, 1)
    assert result.precision[1] == pytest.approx(2 / 3)


@pytest.mark.parametrize("value", [None, "", "  ", float("nan")])
def test_missing_values(value):
    assert metrics.is_missing(value)


def test_queries_against_a_separate_gallery():
    gallery = np.array([[0.0], [1.0], [10.0], [11.0]], dtype=np.float32)
    queries = np.array([[0.4], [10.4]], dtype=np.float32)
    result = metrics.evaluate_retrieval(
        gallery,
        ["a", "a", "b", "b"],
        queries=queries,
        query_labels=["a", "a"],
        ks=(1, 2),
    )
    assert result.precision == pytest.approx({1: 0.5, 2: 0.5})


def test_labels_compare_as_text():
    vectors = np.array([[0.0], [0.1], [5.0]], dtype=np.float32)
    result = metrics.evaluate_retrieval(vectors, [2012, "2012", 2013], ks=(1,))
    assert result.precision[1] == pytest.approx(2 / 3)


def test_chance_precision_leave_one_out():
    # Each query: 1 relevant among 3 others.
    chance = metrics.chance_level(["a", "a", "b", "b"], ks=(1, 3))
    assert chance["p@1"] == pytest.approx(1 / 3)


def test_chance_precision_against_a_gallery():
    chance = metrics.chance_level(
        ["a", "b", "b", "b"], query_labels=["a", "b"], ks=(1,)
    )
    assert chance["p@1"] == pytest.approx((1 / 4 + 3 / 4) / 2)


def test_chance_map_matches_random_rankings():
    rng = np.random.default_rng(0)
    labels = list("aaaaabbbbbbbbcccdddddddddddddd")
    n = len(labels)
    maps = []
    for _ in range(2000):
        ranked = np.stack(
            [rng.permutation(np.delete(np.arange(n), i))[:10] for i in range(n)]
        )
        maps.append(
            metrics.retrieval_metrics(
                labels, labels, ranked, leave_one_out=True
            ).map_at_10
        )
    expected = metrics.chance_level(labels)["map@10"]
    assert np.mean(maps) == pytest.approx(expected, abs=0.005)


def test_purity_of_mixed_clusters():
    # Cluster 0 holds 2 "x" and 1 "y"; cluster 1 holds 3 "y".
    quality = metrics.cluster_quality(
        [0, 0, 0, 1, 1, 1], ["x", "x", "y", "y", "y", "y"]
    )
    assert quality.purity == pytest.approx(5 / 6)


@pytest.mark.parametrize(
    "clusters, labels, nmi",
    [
        ([0, 0, 1, 1], ["x", "x", "y", "y"], 1.0),
        ([5, 5, 2, 2], ["x", "x", "y", "y"], 1.0),
        ([0, 1, 0, 1], ["x", "x", "y", "y"], 0.0),
        ([0, 0, 0, 0], ["x", "x", "x", "x"], 1.0),
        ([0, 0, 0, 0], ["x", "x", "y", "y"], 0.0),
    ],
)
def test_nmi(clusters, labels, nmi):
    quality = metrics.cluster_quality(clusters, labels)
    assert quality.nmi == pytest.approx(nmi, abs=1e-9)


def test_cluster_quality_leaves_out_missing_labels():
    quality = metrics.cluster_quality([0, 0, 1], ["x", None, "y"])
    assert (quality.num_items, quality.num_missing) == (2, 1)


@pytest.mark.parametrize(
    "approximate, exact, recall",
    [
        ([["a", "b"]], [["a", "b"]], 1.0),
        ([["b", "a"]], [["a", "b"]], 1.0),
        ([["a", "c"]], [["a", "b"]], 0.5),
        ([["a", "c"], ["x", "y"]], [["a", "b"], ["z", "w"]], 0.25),
        ([["a"]], [["a", "b"]], 0.5),
    ],
)
def test_recall_at_k(approximate, exact, recall):
    assert metrics.recall_at_k(approximate, exact, k=2) == pytest.approx(recall)
