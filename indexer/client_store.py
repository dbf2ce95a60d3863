"""The qdrant-client backend: a Qdrant server (gRPC) or local mode.

The index metadata lives in a separate small collection,
``<collection>_meta``, so product queries never see it. It holds two
points: the metadata saved by the indexing job and the search settings
written by ``create``.
"""

import logging
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from qdrant_client import QdrantClient, models

from indexer import store
from indexer.config import IndexConfig
from indexer.filters import CLUSTER_FIELD, Filter, Match
from indexer.store import Hit, StoredPoint

logger = logging.getLogger(__name__)

# Point IDs of the two records in the metadata collection.
_META_ID = str(uuid.UUID(int=1))
_SETTINGS_ID = str(uuid.UUID(int=2))
# Seconds a server call may take before it fails.
_TIMEOUT_S = 60


class ClientStore:
    """A VectorStore on a Qdrant collection reached through qdrant-client."""

    def __init__(
        self, client: QdrantClient, *, collection: str, local: bool = False
    ):
        self._client = client
        # Local mode always searches exactly and warns about search params.
        self._local = local
        self._collection = collection
        self._meta_collection = f"{collection}_meta"
        self._settings = self._read_record(_SETTINGS_ID) or {}

    @classmethod
    def connect(
        cls, *, url: str, api_key: str | None, collection: str
    ) -> "ClientStore":
        client = QdrantClient(
            url=url, api_key=api_key, prefer_grpc=True, timeout=_TIMEOUT_S
        )
        return cls(client, collection=collection)

    @classmethod
    def local(cls, path: Path, *, collection: str) -> "ClientStore":
        return cls(
            QdrantClient(path=str(path)), collection=collection, local=True
        )

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

        for name in (self._collection, self._meta_collection):
            if self._client.collection_exists(collection_name=name):
                self._client.delete_collection(collection_name=name)
        self._client.create_collection(
            collection_name=self._collection,
            vectors_config=models.VectorParams(
                size=dim, distance=models.Distance.EUCLID
            ),
            hnsw_config=models.HnswConfigDiff(
                m=config.hnsw_m, ef_construct=config.hnsw_ef_construct
            ),
        )
        # The metadata collection needs some vector; one zero is enough.
        self._client.create_collection(
            collection_name=self._meta_collection,
            vectors_config=models.VectorParams(
                size=1, distance=models.Distance.EUCLID
            ),
        )
        schemas = [
            *((f, models.PayloadSchemaType.KEYWORD) for f in keyword_fields),
            *((f, models.PayloadSchemaType.FLOAT) for f in numeric_fields),
            (CLUSTER_FIELD, models.PayloadSchemaType.INTEGER),
        ]
        # Local mode filters by scanning and warns that indexes do nothing.
        if self._local:
            schemas = []
        for field, schema in schemas:
            self._client.create_payload_index(
                collection_name=self._collection,
                field_name=field,
                field_schema=schema,
                wait=True,
            )
        self._settings = {"dim": dim, "hnsw_ef": config.hnsw_ef}
        self._write_record(_SETTINGS_ID, self._settings)
        logger.info(
            "created collection %s (dim %d, keyword %s, numeric %s)",
            self._collection,
            dim,
            keyword_fields,
            numeric_fields,
        )

    def exists(self) -> bool:
        return self._client.collection_exists(collection_name=self._collection)

    def upsert(
        self,
        product_ids: Sequence[str],
        vectors: np.ndarray,
        payloads: Sequence[dict],
    ) -> None:
        self._require_collection()
        vectors = store.check_points(product_ids, vectors, payloads)
        if not len(product_ids):
            return
        self._client.upsert(
            collection_name=self._collection,
            points=models.Batch(
                ids=store.point_ids(product_ids),
                vectors=vectors.tolist(),
                payloads=list(payloads),
            ),
            wait=True,
        )

    def optimize(self) -> None:
        # The server optimises segments in the background.
        self._require_collection()

    def search(
        self,
        vector: np.ndarray,
        *,
        limit: int,
        offset: int = 0,
        filter: Filter | None = None,
        exclude_ids: Sequence[str] = (),
    ) -> list[Hit]:
        self._require_collection()
        vector = self._check_query(vector, limit, offset)
        client_filter = _client_filter(filter)

        def query(n: int) -> list[Hit]:
            response = self._client.query_points(
                collection_name=self._collection,
                query=vector,
                query_filter=client_filter,
                search_params=self._search_params(),
                limit=n,
                with_payload=True,
            )
            return [_hit(point) for point in response.points]

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
        self._require_collection()
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2:
            raise ValueError(
                f"vectors must be a 2-D array [N, dim], got {vectors.shape}"
            )
        filters = store.check_batch_filters(len(vectors), filters)
        if not len(vectors):
            return []
        requests = [
            models.QueryRequest(
                query=self._check_query(vector, limit, offset),
                filter=_client_filter(filter),
                params=self._search_params(),
                limit=limit,
                offset=offset,
                with_payload=True,
            )
            for vector, filter in zip(vectors, filters, strict=True)
        ]
        responses = self._client.query_batch_points(
            collection_name=self._collection, requests=requests
        )
        return [[_hit(p) for p in response.points] for response in responses]

    def retrieve(self, product_ids: Sequence[str]) -> list[StoredPoint]:
        self._require_collection()
        if not len(product_ids):
            return []
        records = self._client.retrieve(
            collection_name=self._collection,
            ids=store.point_ids(product_ids),
            with_payload=True,
            with_vectors=True,
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
        if not self.exists():
            return 0
        return self._client.count(
            collection_name=self._collection, exact=True
        ).count

    def save_metadata(self, meta: dict) -> None:
        self._require_collection()
        self._write_record(_META_ID, meta)

    def load_metadata(self) -> dict | None:
        return self._read_record(_META_ID)

    def close(self) -> None:
        self._client.close()

    def _require_collection(self) -> None:
        if not self.exists():
            raise RuntimeError(
                f"no collection {self._collection!r}; build the index first "
                "(lookalike index)"
            )

    def _check_query(
        self, vector: np.ndarray, limit: int, offset: int
    ) -> list[float]:
        return store.check_query(
            vector, limit=limit, offset=offset, dim=self._settings.get("dim")
        )

    def _search_params(self) -> models.SearchParams | None:
        if self._local:
            return None
        return models.SearchParams(hnsw_ef=self._settings.get("hnsw_ef"))

    def _read_record(self, record_id: str) -> dict | None:
        if not self._client.collection_exists(
            collection_name=self._meta_collection
        ):
            return None
        records = self._client.retrieve(
            collection_name=self._meta_collection,
            ids=[record_id],
            with_payload=True,
        )
        return dict(records[0].payload) if records else None

    def _write_record(self, record_id: str, value: dict) -> None:
        self._client.upsert(
            collection_name=self._meta_collection,
            points=[
                models.PointStruct(id=record_id, vector=[0.0], payload=value)
            ],
            wait=True,
        )


def _hit(point: models.ScoredPoint) -> Hit:
    payload = point.payload or {}
    return Hit(
        product_id=payload[store.PRODUCT_ID_FIELD],
        distance=float(point.score),
        payload=payload,
    )


def _client_filter(filter: Filter | None) -> models.Filter | None:
    must = [_client_condition(c) for c in filter.must] if filter else []
    must_not = [_client_condition(c) for c in filter.must_not] if filter else []
    if not must and not must_not:
        return None
    return models.Filter(must=must or None, must_not=must_not or None)


def _client_condition(condition):
    if isinstance(condition, Match):
        keywords, numbers = store.split_match(condition)
        strings = [v for v in keywords if isinstance(v, str)]
        options = [
            models.FieldCondition(
                key=condition.field, match=models.MatchValue(value=v)
            )
            for v in keywords
            if isinstance(v, bool)
        ]
        if len(strings) == 1:
            options.append(
                models.FieldCondition(
                    key=condition.field,
                    match=models.MatchValue(value=strings[0]),
                )
            )
        elif strings:
            options.append(
                models.FieldCondition(
                    key=condition.field, match=models.MatchAny(any=strings)
                )
            )
        options.extend(
            models.FieldCondition(
                key=condition.field, range=models.Range(gte=v, lte=v)
            )
            for v in numbers
        )
        if len(options) == 1:
            return options[0]
        return models.Filter(should=options)
    store.check_range(condition)
    return models.FieldCondition(
        key=condition.field,
        range=models.Range(
            gte=condition.gte,
            gt=condition.gt,
            lte=condition.lte,
            lt=condition.lt,
        ),
    )
