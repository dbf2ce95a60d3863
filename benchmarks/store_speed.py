"""Measures the embedded Qdrant Edge store: upsert throughput and query
latency (single, batched, filtered) on random vectors.

  .venv/bin/python -m benchmarks.store_speed --num-points 100000 --dim 64
"""

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from indexer.config import IndexConfig
from indexer.filters import CLUSTER_FIELD, Filter, Match, Range
from indexer.store import open_store

COLORS = ("Red", "Blue", "Black", "White", "Green", "Grey", "Navy", "Pink")


def _payloads(num_points: int, rng: np.random.Generator) -> list[dict]:
    colors = rng.integers(0, len(COLORS), num_points).tolist()
    years = rng.integers(2008, 2020, num_points).tolist()
    clusters = rng.integers(0, 6, num_points).tolist()
    return [
        {
            "product_id": str(i),
            "file_name": f"{i}.jpg",
            CLUSTER_FIELD: clusters[i],
            "baseColour": COLORS[colors[i]],
            "year": years[i],
        }
        for i in range(num_points)
    ]


def _latencies_ms(fn, queries: np.ndarray) -> tuple[float, float]:
    times = []
    for query in queries:
        start = time.perf_counter()
        fn(query)
        times.append((time.perf_counter() - start) * 1e3)
    times.sort()
    return statistics.median(times), times[int(0.95 * (len(times) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--num-points", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--num-queries", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--limit", type=int, default=10)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(args.num_points, args.dim)).astype(np.float32)
    ids = [str(i) for i in range(args.num_points)]
    payloads = _payloads(args.num_points, rng)
    queries = rng.normal(size=(args.num_queries, args.dim)).astype(np.float32)
    config = IndexConfig(upsert_batch_size=args.batch_size)

    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(path=Path(tmp))
        store.create(
            args.dim,
            keyword_fields=["baseColour"],
            numeric_fields=["year"],
            config=config,
        )

        start = time.perf_counter()
        for i in range(0, args.num_points, args.batch_size):
            j = i + args.batch_size
            store.upsert(ids[i:j], vectors[i:j], payloads[i:j])
        upsert_s = time.perf_counter() - start
        print(
            f"upsert: {args.num_points} points in {upsert_s:.2f} s = "
            f"{args.num_points / upsert_s:,.0f} points/s "
            f"(batches of {args.batch_size})"
        )

        def report(label: str) -> None:
            single = _latencies_ms(
                lambda q: store.search(q, limit=args.limit), queries
            )
            color = Filter(must=(Match("baseColour", ("Red",)),))
            narrow = Filter(
                must=(
                    Match("baseColour", ("Red", "Navy")),
                    Range("year", gte=2015),
                    Match(CLUSTER_FIELD, (2,)),
                )
            )
            filtered = _latencies_ms(
                lambda q: store.search(q, limit=args.limit, filter=color),
                queries,
            )
            narrowed = _latencies_ms(
                lambda q: store.search(q, limit=args.limit, filter=narrow),
                queries,
            )
            start = time.perf_counter()
            for i in range(0, len(queries), 32):
                store.search_batch(queries[i : i + 32], limit=args.limit)
            batch_ms = (time.perf_counter() - start) * 1e3 / len(queries)
            print(
                f"{label}: single {single[0]:.2f} ms (p95 {single[1]:.2f}), "
                f"filtered colour {filtered[0]:.2f} ms "
                f"(p95 {filtered[1]:.2f}), filtered narrow "
                f"{narrowed[0]:.2f} ms (p95 {narrowed[1]:.2f}), "
                f"batch of 32 {batch_ms:.3f} ms/query"
            )

        report("before optimize")
        start = time.perf_counter()
        store.optimize()
        print(f"optimize: {time.perf_counter() - start:.2f} s")
        report("after optimize")

        # Recall of the HNSW search against exact brute force.
        found = 0
        for query in queries[:50]:
            hits = store.search(query, limit=args.limit)
            exact = np.argsort(np.linalg.norm(vectors - query, axis=1))
            expected = {ids[i] for i in exact[: args.limit]}
            found += len(expected & {h.product_id for h in hits})
        print(f"recall@{args.limit}: {found / (50 * args.limit):.3f}")
        store.close()


if __name__ == "__main__":
    main()
