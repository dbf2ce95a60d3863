"""Section 2 and the synthetic catalogs: loading points into the stores.

A synthetic catalog is random latent vectors with random attributes, stored
with index metadata naming a real model's fingerprint, so that the
unmodified ``lookalike serve`` serves it like any indexed catalog.
"""

import datetime
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.store_speed import _payloads as random_payloads
from encoder.encode import Encoder
from indexer.config import IndexConfig
from indexer.edge_store import _FULL_SCAN_THRESHOLD_KB
from indexer.filters import CLUSTER_FIELD
from indexer.kmeans import assign_clusters, fit_kmeans
from indexer.store import VectorStore, open_store

logger = logging.getLogger(__name__)

# Attribute fields of random_payloads, indexed like a real catalog's.
KEYWORD_FIELDS = ("baseColour",)
NUMERIC_FIELDS = ("year",)
# k-means runs on a sample: clusters only label points, and fitting on a
# million points would time k-means rather than the store.
KMEANS_SAMPLE = 20_000


def uses_hnsw(num_points: int, dim: int) -> bool:
    """Whether Qdrant searches through the HNSW graph at this size; below
    its full-scan threshold it compares the query with every vector."""
    return num_points * dim * 4 / 1024 > _FULL_SCAN_THRESHOLD_KB


def random_catalog(
    num_points: int, dim: int, *, num_clusters: int, seed: int
) -> tuple[list[str], np.ndarray, list[dict], np.ndarray]:
    """(product_ids, vectors, payloads, centroids) of a random catalog.

    Vectors are uniform in [0, 1], the range of the model's sigmoid
    latents; each payload's cluster is its nearest k-means centroid.
    """
    rng = np.random.default_rng(seed)
    vectors = rng.random((num_points, dim), dtype=np.float32)
    sample = vectors[: min(num_points, KMEANS_SAMPLE)]
    kmeans = fit_kmeans(sample, min(num_clusters, len(sample)), seed=seed)
    labels = assign_clusters(vectors, kmeans.centroids).tolist()
    payloads = random_payloads(num_points, rng)
    for payload, label in zip(payloads, labels, strict=True):
        payload[CLUSTER_FIELD] = int(label)
    product_ids = [payload["product_id"] for payload in payloads]
    return product_ids, vectors, payloads, np.asarray(kmeans.centroids)


def load_points(
    store: VectorStore,
    product_ids: list[str],
    vectors: np.ndarray,
    payloads: list[dict],
    config: IndexConfig,
) -> dict:
    """Creates the collection, upserts in batches and builds the search
    index, as the indexing job does; returns the timings."""
    store.create(
        vectors.shape[1],
        keyword_fields=KEYWORD_FIELDS,
        numeric_fields=NUMERIC_FIELDS,
        config=config,
    )
    start = time.perf_counter()
    step = config.upsert_batch_size
    for i in range(0, len(product_ids), step):
        store.upsert(
            product_ids[i : i + step],
            vectors[i : i + step],
            payloads[i : i + step],
        )
        if (i // step) % 100 == 99:
            logger.info("  upserted %d of %d", i + step, len(product_ids))
    upsert_s = time.perf_counter() - start
    start = time.perf_counter()
    store.optimize()
    optimize_s = time.perf_counter() - start
    total = upsert_s + optimize_s
    return {
        "points": len(product_ids),
        "upsert_s": upsert_s,
        "optimize_s": optimize_s,
        "points_per_s": len(product_ids) / total,
        "upsert_points_per_s": len(product_ids) / upsert_s,
    }


def build_synthetic_index(
    index_dir: Path,
    num_points: int,
    encoder: Encoder,
    config: IndexConfig,
    *,
    seed: int,
) -> tuple[dict, list[str], np.ndarray]:
    """Indexes a random catalog into a Qdrant Edge shard in index_dir with
    metadata that ``encoder`` serves; returns (timings, ids, vectors)."""
    dim = encoder.config.latent_dim
    start = time.perf_counter()
    product_ids, vectors, payloads, centroids = random_catalog(
        num_points, dim, num_clusters=config.num_clusters, seed=seed
    )
    generate_s = time.perf_counter() - start
    store = open_store(path=index_dir, collection=config.collection)
    try:
        timings = load_points(store, product_ids, vectors, payloads, config)
        store.save_metadata(
            {
                "model_fingerprint": encoder.fingerprint,
                "model_config": encoder.config.to_dict(),
                "centroids": centroids.tolist(),
                "latent_dim": dim,
                "keyword_fields": list(KEYWORD_FIELDS),
                "numeric_fields": list(NUMERIC_FIELDS),
                "num_points": store.count(),
                "created_at": datetime.datetime.now(datetime.UTC).isoformat(),
            }
        )
    finally:
        store.close()
    return {**timings, "generate_s": generate_s}, product_ids, vectors


def compare_backends(num_points: int, dim: int, *, seed: int) -> list[dict]:
    """Points/s into Qdrant Edge and into qdrant-client's local mode, on
    one random catalog of num_points."""
    product_ids, vectors, payloads, _ = random_catalog(
        num_points, dim, num_clusters=IndexConfig.num_clusters, seed=seed
    )
    rows = []
    for backend, local in (
        ("qdrant-edge", False),
        ("qdrant-client local", True),
    ):
        logger.info("indexing %d points into %s", num_points, backend)
        with tempfile.TemporaryDirectory() as tmp:
            store = open_store(path=Path(tmp), local=local)
            try:
                timings = load_points(
                    store, product_ids, vectors, payloads, IndexConfig()
                )
            finally:
                store.close()
        rows.append({"backend": backend, **timings})
    return rows
