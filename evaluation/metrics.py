"""Retrieval and clustering metrics for product vectors.

The question every metric answers is "does a product's neighbourhood share
its attributes?": two photos that look alike should more often than chance
be the same article type. Everything is exact (blocked matrix products over
the whole gallery) and plain numpy, so the numbers are a reference the
approximate index can be checked against.

Definitions, for one query q with relevance rel_j (1 when the j-th nearest
gallery item has the query's attribute value, else 0) and R relevant items
in the gallery:

* precision@k = (rel_1 + ... + rel_k) / k
* AP@10 = sum_{j<=10} precision@j * rel_j / min(10, R), 0 when R = 0
* mAP@10 = mean of AP@10 over queries

In leave-one-out evaluation every item is a query against all the others
(itself excluded). Items whose attribute is missing (None, "" or NaN) are
left out of that attribute's metrics, as queries and as gallery items, and
counted.
"""

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

# Rows of the distance matrix computed at once: 1024 x 8000 float32 distances
# is 32 MiB, small enough to keep memory flat on any catalog size.
DEFAULT_BLOCK_SIZE = 1024
METRICS = ("euclidean", "cosine")
# The depth of the average precision in mAP@10.
MAP_DEPTH = 10


@dataclasses.dataclass(frozen=True)
class Neighbors:
    indices: np.ndarray  # int32 [Q, k], gallery rows, nearest first
    distances: np.ndarray  # float32 [Q, k], ascending


@dataclasses.dataclass(frozen=True)
class RetrievalResult:
    """Retrieval quality for one attribute."""

    num_queries: int
    # Queries (and, for a separate gallery, gallery items) left out because
    # the attribute is missing.
    num_missing_queries: int
    num_missing_gallery: int
    # Queries with no relevant gallery item at all (their AP is 0).
    num_without_relevant: int
    precision: dict[int, float]  # k -> mean precision@k
    map_at_10: float

    def to_dict(self) -> dict:
        return {
            "num_queries": self.num_queries,
            "num_missing_queries": self.num_missing_queries,
            "num_missing_gallery": self.num_missing_gallery,
            "num_without_relevant": self.num_without_relevant,
            **{f"p@{k}": value for k, value in self.precision.items()},
            "map@10": self.map_at_10,
        }


@dataclasses.dataclass(frozen=True)
class ClusterQuality:
    """How well cluster labels agree with one attribute."""

    num_items: int
    num_missing: int
    num_clusters: int
    num_classes: int
    purity: float
    nmi: float

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def is_missing(value: object) -> bool:
    """Whether an attribute value counts as absent."""
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    return isinstance(value, float) and math.isnan(value)


def missing_mask(labels: Sequence[object]) -> np.ndarray:
    """bool [N]: True where the label is missing."""
    return np.array([is_missing(label) for label in labels], dtype=bool)


def nearest_neighbors(
    queries: np.ndarray,
    gallery: np.ndarray,
    k: int,
    *,
    metric: str = "euclidean",
    exclude_self: bool = False,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> Neighbors:
    """Exact k nearest gallery rows of every query row.

    Euclidean distances are returned as distances (not squared); cosine
    distances as 1 - cosine similarity. With ``exclude_self`` the queries
    must be the gallery itself, and row i never returns item i (leave one
    out). Ties go to the lower gallery index.
    """
    if metric not in METRICS:
        raise ValueError(f"metric {metric!r} is not one of {METRICS}")
    queries = _as_matrix(queries, "queries")
    gallery = _as_matrix(gallery, "gallery")
    if queries.shape[1] != gallery.shape[1]:
        raise ValueError(
            f"queries have dimension {queries.shape[1]} but the gallery "
            f"has {gallery.shape[1]}"
        )
    if exclude_self and len(queries) != len(gallery):
        raise ValueError("exclude_self needs the queries to be the gallery")
    available = len(gallery) - int(exclude_self)
    if not 1 <= k <= available:
        raise ValueError(
            f"k must be between 1 and {available} (gallery items a query "
            f"can be matched with), got {k}"
        )

    if metric == "cosine":
        queries = _unit_rows(queries)
        gallery = _unit_rows(gallery)
    gallery_sq = np.einsum("ij,ij->i", gallery, gallery)
    indices = np.empty((len(queries), k), dtype=np.int32)
    distances = np.empty((len(queries), k), dtype=np.float32)
    for start in range(0, len(queries), block_size):
        block = queries[start : start + block_size]
        dots = block @ gallery.T
        if metric == "cosine":
            scores = 1.0 - dots
        else:
            # |q|^2 is the same for a whole row, so ranking needs only
            # |g|^2 - 2 q.g; it is added back for the reported distance.
            scores = gallery_sq[None, :] - 2.0 * dots
        if exclude_self:
            rows = np.arange(len(block))
            scores[rows, start + rows] = np.inf
        order = np.argsort(scores, axis=1, kind="stable")[:, :k]
        best = np.take_along_axis(scores, order, axis=1)
        if metric == "euclidean":
            block_sq = np.einsum("ij,ij->i", block, block)
            best = np.sqrt(np.maximum(best + block_sq[:, None], 0.0))
        indices[start : start + len(block)] = order
        distances[start : start + len(block)] = best
    return Neighbors(indices=indices, distances=distances)


def retrieval_metrics(
    query_labels: Sequence[object],
    gallery_labels: Sequence[object],
    neighbor_indices: np.ndarray,
    *,
    ks: Sequence[int] = (1, 5, 10),
    leave_one_out: bool = False,
) -> RetrievalResult:
    """Precision@k and mAP@10 of ranked neighbours against labels.

    ``neighbor_indices`` [Q, depth] ranks gallery rows for each query, over
    a gallery that holds no missing labels and, for leave-one-out, never
    the query itself. The count of relevant items per query (for mAP) is
    taken from ``gallery_labels``, less one for leave-one-out.
    """
    # Labels compare as text, so that 2012 and "2012" are one class.
    query_labels = np.asarray([str(x) for x in query_labels], dtype=object)
    gallery_labels = np.asarray([str(x) for x in gallery_labels], dtype=object)
    num_candidates = len(gallery_labels) - int(leave_one_out)
    depth = min(max(*ks, MAP_DEPTH), num_candidates)
    if max(ks) > num_candidates:
        raise ValueError(
            f"k={max(ks)} is more than the {num_candidates} gallery items "
            "a query can be matched with"
        )
    if neighbor_indices.shape[0] != len(query_labels) or (
        neighbor_indices.shape[1] < depth
    ):
        raise ValueError(
            f"neighbor_indices must have shape ({len(query_labels)}, "
            f">={depth}), got {neighbor_indices.shape}"
        )
    relevant = (
        gallery_labels[neighbor_indices[:, :depth]] == (query_labels[:, None])
    )
    relevant = relevant.astype(np.float64)
    num_relevant = _class_counts(query_labels, gallery_labels)
    if leave_one_out:
        num_relevant = num_relevant - 1

    map_depth = min(MAP_DEPTH, depth)
    hits = np.cumsum(relevant[:, :map_depth], axis=1)
    precision_at = hits / np.arange(1, map_depth + 1)
    normaliser = np.minimum(MAP_DEPTH, num_relevant)
    ap = np.where(
        normaliser > 0,
        (precision_at * relevant[:, :map_depth]).sum(axis=1)
        / np.maximum(normaliser, 1),
        0.0,
    )
    return RetrievalResult(
        num_queries=len(query_labels),
        num_missing_queries=0,
        num_missing_gallery=0,
        num_without_relevant=int((num_relevant == 0).sum()),
        precision={
            k: float(relevant[:, :k].sum(axis=1).mean() / k) for k in ks
        },
        map_at_10=float(ap.mean()),
    )


def evaluate_retrieval(
    vectors: np.ndarray,
    labels: Sequence[object],
    *,
    ks: Sequence[int] = (1, 5, 10),
    metric: str = "euclidean",
    queries: np.ndarray | None = None,
    query_labels: Sequence[object] | None = None,
) -> RetrievalResult:
    """Leave-one-out retrieval of ``vectors`` (the gallery), or, given
    ``queries``, retrieval of each query against the whole gallery.

    Items with a missing label are dropped before the search.
    """
    vectors = _as_matrix(vectors, "vectors")
    if len(labels) != len(vectors):
        raise ValueError(f"got {len(labels)} labels for {len(vectors)} vectors")
    if (queries is None) != (query_labels is None):
        raise ValueError("queries and query_labels go together")
    leave_one_out = queries is None
    gallery_missing = missing_mask(labels)
    if leave_one_out:
        queries, query_labels = vectors, labels
        query_missing = gallery_missing
    else:
        queries = _as_matrix(queries, "queries")
        if len(query_labels) != len(queries):
            raise ValueError(
                f"got {len(query_labels)} query labels for "
                f"{len(queries)} queries"
            )
        query_missing = missing_mask(query_labels)

    gallery_keep = np.flatnonzero(~gallery_missing)
    query_keep = np.flatnonzero(~query_missing)
    gallery_labels = [labels[i] for i in gallery_keep]
    kept_query_labels = [query_labels[i] for i in query_keep]
    available = len(gallery_keep) - int(leave_one_out)
    if len(query_keep) == 0 or max(ks) > available:
        raise ValueError(
            f"retrieval at k={max(ks)} needs labelled queries and more than "
            f"k labelled gallery items; got {len(query_keep)} queries and "
            f"{available} candidates"
        )
    depth = min(max(*ks, MAP_DEPTH), available)
    neighbors = nearest_neighbors(
        queries[query_keep],
        vectors[gallery_keep],
        depth,
        metric=metric,
        exclude_self=leave_one_out,
    )
    result = retrieval_metrics(
        kept_query_labels,
        gallery_labels,
        neighbors.indices,
        ks=ks,
        leave_one_out=leave_one_out,
    )
    return dataclasses.replace(
        result,
        num_missing_queries=int(query_missing.sum()),
        num_missing_gallery=(
            0 if leave_one_out else int(gallery_missing.sum())
        ),
    )


def chance_level(
    labels: Sequence[object],
    *,
    ks: Sequence[int] = (1, 5, 10),
    query_labels: Sequence[object] | None = None,
) -> dict[str, float]:
    """Expected precision@k and mAP@10 of a uniformly random ranking.

    Leave-one-out over ``labels`` unless ``query_labels`` are given (then
    each query ranks all of ``labels``). A random ranking draws the top
    items without replacement, so each position is relevant with
    probability p = R / N for a query with R relevant among N candidates,
    and two positions both are with probability p * (R - 1) / (N - 1);
    precision@k's expectation is p for every k, and AP@10's follows from
    the same two probabilities. Missing labels are left out.
    """
    gallery = [label for label in labels if not is_missing(label)]
    leave_one_out = query_labels is None
    queries = gallery if leave_one_out else query_labels
    queries = [label for label in queries if not is_missing(label)]
    num_candidates = len(gallery) - int(leave_one_out)
    if not queries or num_candidates < 1:
        raise ValueError("chance level needs labelled queries and gallery")
    query_array = np.asarray(queries, dtype=object)
    num_relevant = _class_counts(
        query_array, np.asarray(gallery, dtype=object)
    ) - int(leave_one_out)
    num_relevant = num_relevant.astype(np.float64)
    p = num_relevant / num_candidates
    q = np.maximum(num_relevant - 1, 0) / max(num_candidates - 1, 1)
    depth = min(MAP_DEPTH, num_candidates)
    positions = np.arange(1, depth + 1)
    # E[rel_j * precision@j] = (p + (j - 1) * p * q) / j
    expected = (p[:, None] + (positions - 1) * (p * q)[:, None]) / positions
    normaliser = np.minimum(MAP_DEPTH, num_relevant)
    ap = np.where(
        normaliser > 0, expected.sum(axis=1) / np.maximum(normaliser, 1), 0.0
    )
    return {
        **{f"p@{k}": float(p.mean()) for k in ks},
        "map@10": float(ap.mean()),
    }


def cluster_quality(
    clusters: Sequence[int] | np.ndarray, labels: Sequence[object]
) -> ClusterQuality:
    """Purity and normalised mutual information of clusters vs. labels.

    Purity is the share of items whose cluster's most common label is their
    own. NMI is I(C; L) / mean(H(C), H(L)) (arithmetic mean, as in
    scikit-learn's default); it is 1 when both are a single group and 0
    when only one of them is. Items with a missing label are left out.
    """
    clusters = np.asarray(clusters)
    if len(clusters) != len(labels):
        raise ValueError(
            f"got {len(labels)} labels for {len(clusters)} cluster labels"
        )
    missing = missing_mask(labels)
    keep = np.flatnonzero(~missing)
    if len(keep) == 0:
        raise ValueError("cluster quality needs at least one labelled item")
    _, cluster_ids = np.unique(clusters[keep], return_inverse=True)
    _, label_ids = np.unique(
        np.asarray([str(labels[i]) for i in keep]), return_inverse=True
    )
    counts = np.zeros((cluster_ids.max() + 1, label_ids.max() + 1))
    np.add.at(counts, (cluster_ids, label_ids), 1)
    n = counts.sum()
    purity = counts.max(axis=1).sum() / n
    joint = counts / n
    cluster_p = joint.sum(axis=1)
    label_p = joint.sum(axis=0)
    nonzero = joint > 0
    outer = np.outer(cluster_p, label_p)
    mutual = (joint[nonzero] * np.log(joint[nonzero] / outer[nonzero])).sum()
    h_cluster = -(cluster_p * np.log(cluster_p)).sum()
    h_label = -(label_p * np.log(label_p)).sum()
    if h_cluster == 0 and h_label == 0:
        nmi = 1.0
    else:
        nmi = float(mutual / ((h_cluster + h_label) / 2))
    return ClusterQuality(
        num_items=len(keep),
        num_missing=int(missing.sum()),
        num_clusters=counts.shape[0],
        num_classes=counts.shape[1],
        purity=float(purity),
        nmi=max(0.0, min(1.0, nmi)),
    )


def recall_at_k(
    approximate: Sequence[Sequence[str]],
    exact: Sequence[Sequence[str]],
    k: int = 10,
) -> float:
    """Mean share of each query's exact top k that the approximate top k
    found (|approx[:k] & exact[:k]| / min(k, len(exact)))."""
    if len(approximate) != len(exact):
        raise ValueError(
            f"got {len(approximate)} approximate and {len(exact)} exact "
            "result lists; they must pair up"
        )
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    recalls = []
    for found, truth in zip(approximate, exact, strict=True):
        truth = list(truth)[:k]
        if not truth:
            continue
        recalls.append(len(set(found[:k]) & set(truth)) / len(truth))
    if not recalls:
        raise ValueError("recall needs at least one non-empty exact result")
    return float(np.mean(recalls))


def _as_matrix(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(
            f"{name} must be a non-empty 2-D array [N, dim], got shape "
            f"{x.shape}"
        )
    if not np.isfinite(x).all():
        raise ValueError(f"{name} must be finite (no NaN or inf)")
    return x


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    # A zero vector has no direction; it stays zero and so sits at cosine
    # distance 1 from everything.
    return x / np.maximum(norms, 1e-12)


def _class_counts(
    query_labels: np.ndarray, gallery_labels: np.ndarray
) -> np.ndarray:
    """int [Q]: gallery items sharing each query's label."""
    values, counts = np.unique(gallery_labels.astype(str), return_counts=True)
    lookup = dict(zip(values.tolist(), counts.tolist(), strict=True))
    return np.array(
        [lookup.get(str(label), 0) for label in query_labels], dtype=np.int64
    )
