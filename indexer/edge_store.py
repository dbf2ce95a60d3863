"""The embedded backend: a Qdrant Edge shard in a local folder.

Layout under the store's folder, for collection ``c``:
  c/             the Edge shard (segments, write-ahead log, config)
  c.store.json   search settings written by ``create`` (vector size, ef)
  c.meta.json    the index metadata written by ``save_metadata``
The JSON files are written atomically (temporary file, then rename) so a
crash never leaves half a file behind.
"""

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import qdrant_edge as qe

from indexer import store
from indexer.config import IndexConfig
from indexer.filters import CLUSTER_FIELD, Filter, Match
from indexer.store import Hit, StoredPoint

logger = logging.getLogger(__name__)

# Vectors below this size (in KB) are searched exhaustively rather than
# through the HNSW graph; Qdrant's default.
_FULL_SCAN_THRESHOLD_KB = 10_000


class EdgeStore:
    """A VectorStore on an embedded Qdrant Edge shard."""

    def __init__(self, path: Path, *, collection: str):
        self._shard_dir = path / collection
        self._settings_path = path / f"{collection}.store.json"
        self._meta_path = path / f"{collection}.meta.json"
        self._shard: qe.EdgeShard | None = None
        self._settings: dict = {}
        if (self._shard_dir / "edge_config.json").exists():
            self._shard = _load_shard(self._shard_dir)
            self._settings = _read_json(self._settings_path) or {}

    def create(
        self,
        dim: int,
        *,
        keyword_fields: Sequence[str],
        numeric_fields: Sequence[str],
        config: IndexConfig,
    ) -> None:
        if dim < 1:
            raise ValueError(f"vector size must be at least 1, got {dim}")
        keyword_fields, numeric_fields = store.index_fields(
            keyword_fields, numeric_fields
        )

        # Dropping means deleting the shard's folder; Edge has no drop call.
        if self._shard is not None:
            self._shard.close()
            self._shard = None
        shutil.rmtree(self._shard_dir, ignore_errors=True)
        self._meta_path.unlink(missing_ok=True)

        edge_config = qe.EdgeConfig(
            vectors=qe.EdgeVectorParams(size=dim, distance=qe.Distance.Euclid),
            hnsw_config=qe.HnswIndexConfig(
                m=config.hnsw_m,
                ef_construct=config.hnsw_ef_construct,
                full_scan_threshold=_FULL_SCAN_THRESHOLD_KB,
            ),
        )
        self._shard_dir.parent.mkdir(parents=True, exist_ok=True)
        self._shard = qe.EdgeShard.create(str(self._shard_dir), edge_config)
        for field in keyword_fields:
            self._shard.update(
                qe.UpdateOperation.create_field_index(
                    field, qe.PayloadSchemaType.Keyword
                )
            )
        # A float index also serves integer payloads, and ranges are how
        # numeric matches are translated.
        for field in numeric_fields:
            self._shard.update(
                qe.UpdateOperation.create_field_index(
                    field, qe.PayloadSchemaType.Float
                )
            )
        self._shard.update(
            qe.UpdateOperation.create_field_index(
                CLUSTER_FIELD,
                qe.IntegerIndexParams(lookup=True, range=True),
            )
        )
        self._settings = {"dim": dim, "hnsw_ef": config.hnsw_ef}
        _write_json(self._settings_path, self._settings)
        logger.info(
            "created Edge shard %s (dim %d, keyword %s, numeric %s)",
            self._shard_dir,
            dim,
            keyword_fields,
            numeric_fields,
        )

    def exists(self) -> bool:
        return self._shard is not None

    def upsert(
        self,
        product_ids: Sequence[str],
        vectors: np.ndarray,
        payloads: Sequence[dict],
    ) -> None:
        shard = self._require_shard()
        vectors = store.check_points(product_ids, vectors, payloads)
        if not len(product_ids):
            return
        points = [
            qe.Point(id, vector, payload)
            for id, vector, payload in zip(
                store.point_ids(product_ids),
                vectors.tolist(),
                payloads,
                strict=True,
            )
        ]
        shard.update(qe.UpdateOperation.upsert_points(points))

    def optimize(self) -> None:
        shard = self._require_shard()
        shard.flush()
        shard.optimize()

    def search(
        self,
        vector: np.ndarray,
        *,
        limit: int,
        offset: int = 0,
        filter: Filter | None = None,
        exclude_ids: Sequence[str] = (),
    ) -> list[Hit]:
        shard = self._require_shard()
        query_vector = self._check_query(vector, limit, offset)
        edge_filter = _edge_filter(filter)

        def query(n: int) -> list[Hit]:
            request = self._request(query_vector, n, 0, edge_filter)
            return [_hit(point) for point in shard.query(request)]

        return store.search_excluding(
            query, limit=limit, offset=offset, exclude_ids=exclude_ids
        )

    def search_batch(
        self,
        vectors: np.ndarray,
        *,
        limit: int,
        offset: int = 0,
        filters: Sequence[Filter | None] | None = None,
    ) -> list[list[Hit]]:
        shard = self._require_shard()
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2:
            raise ValueError(
                f"vectors must be a 2-D array [N, dim], got {vectors.shape}"
            )
        filters = store.check_batch_filters(len(vectors), filters)
        if not len(vectors):
            return []
        requests = [
            self._request(
                self._check_query(vector, limit, offset),
                limit,
                offset,
                _edge_filter(filter),
            )
            for vector, filter in zip(vectors, filters, strict=True)
        ]
        results = shard.query_batch(qe.QueryBatchRequest(requests))
        return [[_hit(point) for point in points] for points in results]

    def retrieve(self, product_ids: Sequence[str]) -> list[StoredPoint]:
        shard = self._require_shard()
        if not len(product_ids):
            return []
        records = shard.retrieve(
            store.point_ids(product_ids), with_payload=True, with_vector=True
        )
        by_id = {}
        for record in records:
            payload = record.payload or {}
            by_id[payload[store.PRODUCT_ID_FIELD]] = StoredPoint(
                product_id=payload[store.PRODUCT_ID_FIELD],
                vector=np.asarray(record.vector, dtype=np.float32),
                payload=payload,
            )
        return [by_id[i] for i in dict.fromkeys(product_ids) if i in by_id]

    def count(self) -> int:
        if self._shard is None:
            return 0
        return self._shard.count(qe.CountRequest(exact=True))

    def save_metadata(self, meta: dict) -> None:
        self._require_shard().flush()
        _write_json(self._meta_path, meta)

    def load_metadata(self) -> dict | None:
        if self._shard is None:
            return None
        return _read_json(self._meta_path)

    def close(self) -> None:
        if self._shard is not None:
            self._shard.flush()
            self._shard.close()
            self._shard = None

    def _require_shard(self) -> qe.EdgeShard:
        if self._shard is None:
            raise RuntimeError(
                f"no index at {self._shard_dir}; build one first "
                "(lookalike index)"
            )
        return self._shard

    def _check_query(
        self, vector: np.ndarray, limit: int, offset: int
    ) -> list[float]:
        return store.check_query(
            vector, limit=limit, offset=offset, dim=self._settings.get("dim")
        )

    def _request(
        self,
        query: list[float],
        limit: int,
        offset: int,
        edge_filter: qe.Filter | None,
    ) -> qe.QueryRequest:
        """A query for an already checked vector (see _check_query)."""
        return qe.QueryRequest(
            limit=limit,
            offset=offset,
            query=qe.Query.Nearest(query),
            filter=edge_filter,
            with_payload=True,
            params=qe.SearchParams(hnsw_ef=self._settings.get("hnsw_ef")),
        )


def _hit(point: qe.ScoredPoint) -> Hit:
    payload = point.payload or {}
    return Hit(
        product_id=payload[store.PRODUCT_ID_FIELD],
        distance=float(point.score),
        payload=payload,
    )


def _edge_filter(filter: Filter | None) -> qe.Filter | None:
    must = [_edge_condition(c) for c in filter.must] if filter else []
    must_not = [_edge_condition(c) for c in filter.must_not] if filter else []
    if not must and not must_not:
        return None
    return qe.Filter(must=must or None, must_not=must_not or None)


def _edge_condition(condition):
    if isinstance(condition, Match):
        keywords, numbers = store.split_match(condition)
        strings = [v for v in keywords if isinstance(v, str)]
        options = [
            qe.FieldCondition(key=condition.field, match=qe.MatchValue(v))
            for v in keywords
            if isinstance(v, bool)
        ]
        if len(strings) == 1:
            options.append(
                qe.FieldCondition(
                    key=condition.field, match=qe.MatchValue(strings[0])
                )
            )
        elif strings:
            options.append(
                qe.FieldCondition(
                    key=condition.field, match=qe.MatchAny(strings)
                )
            )
        options.extend(
            qe.FieldCondition(
                key=condition.field, range=qe.RangeFloat(gte=v, lte=v)
            )
            for v in numbers
        )
        if len(options) == 1:
            return options[0]
        return qe.Filter(should=options)
    store.check_range(condition)
    return qe.FieldCondition(
        key=condition.field,
        range=qe.RangeFloat(
            gte=condition.gte,
            gt=condition.gt,
            lte=condition.lte,
            lt=condition.lt,
        ),
    )


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def _write_json(path: Path, value: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(value, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load_shard(shard_dir: Path) -> qe.EdgeShard:
    """Opens an existing shard; one process at a time may hold it."""
    try:
        return qe.EdgeShard.load(str(shard_dir))
    except Exception as error:
        # Edge reports a shard locked by another process only through the
        # text of a generic exception (its write-ahead log "WouldBlock").
        if "WouldBlock" in str(error):
            raise store.StoreInUseError(
                f"the index at {shard_dir} is open in another process (a "
                "running `lookalike serve`?); stop that process first, or "
                "query the server instead"
            ) from error
        raise
