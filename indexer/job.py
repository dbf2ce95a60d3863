"""The bulk indexing job: encode a catalog, cluster it, load the store.

``index_catalog`` encodes every photo with the trained encoder, clusters
the latents with k-means, and upserts one point per product (vector,
cluster label, attributes) together with a metadata record that lets the
server check it runs the model that built the index.
"""

import collections
import dataclasses
import datetime
import logging
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from tqdm import tqdm

from encoder.catalog import NO_CSV_ROW, CatalogImages, Product
from encoder.encode import Encoder
from indexer.config import IndexConfig
from indexer.filters import CLUSTER_FIELD
from indexer.kmeans import fit_kmeans
from indexer.store import PRODUCT_ID_FIELD, VectorStore

logger = logging.getLogger(__name__)

FILE_NAME_FIELD = "file_name"
# Payload fields the job writes itself; attributes may not override them.
RESERVED_FIELDS = frozenset({PRODUCT_ID_FIELD, FILE_NAME_FIELD, CLUSTER_FIELD})


class IndexMissingError(LookupError):
    """The store holds no complete index."""


class ModelMismatchError(ValueError):
    """The index was built by a different model than the one loaded."""


@dataclasses.dataclass(frozen=True)
class IndexReport:
    num_indexed: int  # products upserted by this run
    num_points: int  # points in the collection afterwards
    skipped: dict[str, int]  # reason -> products the catalog left out
    cluster_sizes: list[int]  # products per cluster label
    keyword_fields: list[str]
    numeric_fields: list[str]
    # Why the collection was (re)created, or None when it was updated.
    created_because: str | None
    encode_seconds: float
    kmeans_seconds: float
    upsert_seconds: float
    total_seconds: float

    @property
    def num_skipped(self) -> int:
        return sum(self.skipped.values())

    def summary(self) -> str:
        """One line: counts, reasons, cluster sizes and timings."""
        skipped = ", ".join(
            f"{reason}={count}"
            for reason, count in sorted(self.skipped.items())
        )
        return (
            f"indexed {self.num_indexed} (collection holds "
            f"{self.num_points}), skipped {self.num_skipped}"
            + (f" ({skipped})" if skipped else "")
            + f", cluster sizes {self.cluster_sizes}, "
            f"{self.total_seconds:.1f} s (encode {self.encode_seconds:.1f}, "
            f"k-means {self.kmeans_seconds:.1f}, "
            f"upsert {self.upsert_seconds:.1f})"
        )


def index_catalog(
    catalog: CatalogImages,
    encoder: Encoder,
    store: VectorStore,
    config: IndexConfig,
    *,
    rebuild: bool = False,
) -> IndexReport:
    """Encodes, clusters and stores every product of ``catalog``.

    The collection is created afresh when ``rebuild`` is set, when it does
    not exist, or when the existing index was built by another model or with
    other attribute fields; otherwise products are upserted into it, so
    running the job twice on one catalog leaves the same points. An index
    holding products that left the catalog is rebuilt, so that every
    point's cluster label comes from this run's centroids.
    """
    _check_config(config)
    num_products = len(catalog.products)
    if num_products == 0:
        raise ValueError("the catalog holds no products; nothing to index")
    if len(catalog.images) != num_products:
        raise ValueError(
            f"the catalog has {len(catalog.images)} images for "
            f"{num_products} products; they must correspond one to one"
        )
    started = time.perf_counter()

    # Encode all photos; one compiled batch shape.
    logger.info("encoding %d images", num_products)
    latents = encoder.encode(
        catalog.images, batch_size=config.encode_batch_size, progress=True
    )
    if not np.isfinite(latents).all():
        raise ValueError(
            "the encoder produced NaN or infinite latents; the model is "
            "broken (retrain it)"
        )
    encode_seconds = time.perf_counter() - started

    # Cluster the latents; a catalog smaller than num_clusters gets one
    # cluster per product.
    tick = time.perf_counter()
    k = min(config.num_clusters, num_products)
    kmeans = fit_kmeans(latents, k, seed=config.seed)
    cluster_sizes = np.bincount(kmeans.labels, minlength=k).tolist()
    kmeans_seconds = time.perf_counter() - tick
    logger.info("k-means: %d clusters of sizes %s", k, cluster_sizes)

    keyword_fields, numeric_fields = attribute_kinds(
        [product.attributes for product in catalog.products]
    )
    payloads = [
        _payload(product, label, set(keyword_fields))
        for product, label in zip(
            catalog.products, kmeans.labels.tolist(), strict=True
        )
    ]
    product_ids = [product.product_id for product in catalog.products]

    created_because = _create_reason(
        store,
        encoder,
        latent_dim=latents.shape[1],
        keyword_fields=keyword_fields,
        numeric_fields=numeric_fields,
        rebuild=rebuild,
    )

    def create() -> None:
        logger.info("creating the collection: %s", created_because)
        store.create(
            latents.shape[1],
            keyword_fields=keyword_fields,
            numeric_fields=numeric_fields,
            config=config,
        )

    def upsert_all() -> None:
        batch_size = config.upsert_batch_size
        for start in tqdm(
            range(0, num_products, batch_size), desc="upserting", unit="batch"
        ):
            end = start + batch_size
            store.upsert(
                product_ids[start:end], latents[start:end], payloads[start:end]
            )

    tick = time.perf_counter()
    if created_because is not None:
        create()
    upsert_all()
    num_points = store.count()
    if num_points > num_products:
        # Products missing from this catalog would keep cluster labels from
        # the old centroids: rebuild, so the index mirrors the catalog.
        created_because = (
            f"the index also held {num_points - num_products} products that "
            "are not in this catalog"
        )
        create()
        upsert_all()
        num_points = store.count()
    store.optimize()
    upsert_seconds = time.perf_counter() - tick

    skipped = {
        reason: count
        for reason, count in catalog.skipped.items()
        if reason != NO_CSV_ROW and count
    }
    store.save_metadata(
        {
            "model_fingerprint": encoder.fingerprint,
            "model_config": encoder.config.to_dict(),
            "centroids": kmeans.centroids.tolist(),
            "latent_dim": int(latents.shape[1]),
            "keyword_fields": keyword_fields,
            "numeric_fields": numeric_fields,
            "num_points": num_points,
            "created_at": datetime.datetime.now(datetime.UTC).isoformat(),
            "skipped": skipped,
            "cluster_sizes": cluster_sizes,
            "index_config": dataclasses.asdict(config),
        }
    )

    report = IndexReport(
        num_indexed=num_products,
        num_points=num_points,
        skipped=skipped,
        cluster_sizes=cluster_sizes,
        keyword_fields=keyword_fields,
        numeric_fields=numeric_fields,
        created_because=created_because,
        encode_seconds=encode_seconds,
        kmeans_seconds=kmeans_seconds,
        upsert_seconds=upsert_seconds,
        total_seconds=time.perf_counter() - started,
    )
    logger.info("%s", report.summary())
    return report


def attribute_kinds(
    attributes: Sequence[Mapping[str, Any]],
) -> tuple[list[str], list[str]]:
    """Sorts attribute names into keyword and numeric fields.

    A field is numeric when every value it takes is a number (booleans are
    not numbers here); a field that mixes numbers and strings is a keyword.
    """
    kinds: dict[str, set[str]] = collections.defaultdict(set)
    for values in attributes:
        for name, value in values.items():
            if name in RESERVED_FIELDS:
                continue
            numeric = isinstance(value, int | float) and not isinstance(
                value, bool
            )
            kinds[name].add("numeric" if numeric else "keyword")
    keyword = sorted(
        name for name, kind in kinds.items() if kind != {"numeric"}
    )
    numeric = sorted(
        name for name, kind in kinds.items() if kind == {"numeric"}
    )
    return keyword, numeric


def load_index_metadata(store: VectorStore) -> dict:
    """The metadata of the store's index; raises IndexMissingError when
    there is no complete index."""
    if not store.exists():
        raise IndexMissingError(
            "no index found; build one with `lookalike index` first"
        )
    meta = store.load_metadata()
    if meta is None:
        raise IndexMissingError(
            "the index has no metadata (its build was interrupted); rebuild "
            "it with `lookalike index --rebuild`"
        )
    return meta


def check_model_matches(meta: Mapping[str, Any], encoder: Encoder) -> None:
    """Raises ModelMismatchError unless ``encoder`` built the index."""
    built_by = meta.get("model_fingerprint")
    if built_by != encoder.fingerprint:
        raise ModelMismatchError(
            f"the index was built by model {built_by}, but the loaded model "
            f"is {encoder.fingerprint}; re-index with this model "
            "(`lookalike index`) or load the model that built it"
        )
    if meta.get("latent_dim") != encoder.config.latent_dim:
        raise ModelMismatchError(
            f"the index holds {meta.get('latent_dim')}-dimensional vectors, "
            f"but the model encodes to {encoder.config.latent_dim}"
        )


def _check_config(config: IndexConfig) -> None:
    for name in ("num_clusters", "encode_batch_size", "upsert_batch_size"):
        if getattr(config, name) < 1:
            raise ValueError(
                f"IndexConfig.{name} must be at least 1, got "
                f"{getattr(config, name)}"
            )


def _create_reason(
    store: VectorStore,
    encoder: Encoder,
    *,
    latent_dim: int,
    keyword_fields: list[str],
    numeric_fields: list[str],
    rebuild: bool,
) -> str | None:
    """Why the collection must be created afresh, or None to update it."""
    if rebuild:
        return "a rebuild was asked for"
    if not store.exists():
        return "there is no index yet"
    meta = store.load_metadata()
    if meta is None:
        return "the existing index has no metadata (an interrupted build)"
    if meta.get("model_fingerprint") != encoder.fingerprint:
        return (
            f"the index was built by model {meta.get('model_fingerprint')}, "
            f"this is {encoder.fingerprint}"
        )
    if meta.get("latent_dim") != latent_dim:
        return (
            f"the index holds {meta.get('latent_dim')}-dimensional vectors, "
            f"the model encodes to {latent_dim}"
        )
    if (meta.get("keyword_fields"), meta.get("numeric_fields")) != (
        keyword_fields,
        numeric_fields,
    ):
        return "the catalog's attribute fields differ from the index's"
    return None


def _payload(
    product: Product,
    label: int,
    keyword_fields: set[str],
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        PRODUCT_ID_FIELD: product.product_id,
        FILE_NAME_FIELD: product.file_name,
        CLUSTER_FIELD: label,
    }
    for name, value in product.attributes.items():
        if name in RESERVED_FIELDS:
            continue
        # JSON holds no NaN or infinity; such a value counts as missing.
        if isinstance(value, float) and not math.isfinite(value):
            continue
        # A keyword field that mixes in numbers stores them as strings, so
        # that equality filters compare like with like.
        if name in keyword_fields and not isinstance(value, str):
            value = str(value)
        payload[name] = value
    return payload
