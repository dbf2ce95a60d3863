"""The indexing job on a small generated catalog, a real (untrained) encoder
and a real Qdrant Edge store."""

import collections
import dataclasses

import numpy as np
import pytest
from flax import nnx

from encoder.catalog import NO_CSV_ROW, CatalogImages, Product
from encoder.config import ModelConfig
from encoder.encode import Encoder
from encoder.model import Autoencoder
from indexer.config import IndexConfig
from indexer.filters import CLUSTER_FIELD, Filter, Match
from indexer.job import (
    IndexMissingError,
    ModelMismatchError,
    attribute_kinds,
    check_model_matches,
    index_catalog,
    load_index_metadata,
)
from indexer.store import open_store

MODEL_CONFIG = ModelConfig(
    image_height=24,
    image_width=16,
    latent_dim=4,
    stem_channels=4,
    block_channels=(8,),
    decoder_channels=(8,),
)
NUM_PRODUCTS = 40
# One small encode batch keeps every catalog size on one compiled shape.
INDEX_CONFIG = IndexConfig(
    num_clusters=3, encode_batch_size=8, upsert_batch_size=16
)
COLORS = ("Red", "Blue", "Black")


def _encoder(seed: int = 0) -> Encoder:
    model = Autoencoder(MODEL_CONFIG, rngs=nnx.Rngs(seed))
    return Encoder.from_model(model, MODEL_CONFIG)


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return _encoder()


@pytest.fixture(scope="module")
def other_encoder() -> Encoder:
    return _encoder(seed=1)


def _catalog(n: int = NUM_PRODUCTS) -> CatalogImages:
    rng = np.random.default_rng(0)
    shape = (n, MODEL_CONFIG.image_height, MODEL_CONFIG.image_width, 3)
    images = rng.integers(0, 256, size=shape, dtype=np.uint8)
    products = []
    for i in range(n):
        attributes = {"baseColour": COLORS[i % 3], "year": 2010 + i % 4}
        # Every fifth product has no year, as in the sample CSV.
        if i % 5 == 0:
            del attributes["year"]
        products.append(Product(f"sku-{i}", f"sku-{i}.jpg", attributes))
    skipped = collections.Counter(
        {"not an image file": 2, "duplicate CSV id": 1, NO_CSV_ROW: 3}
    )
    return CatalogImages(images=images, products=products, skipped=skipped)


@pytest.fixture
def store(tmp_path):
    store = open_store(path=tmp_path / "index")
    yield store
    store.close()


@pytest.fixture
def indexed(store, encoder):
    report = index_catalog(_catalog(), encoder, store, INDEX_CONFIG)
    return store, report


def test_every_product_becomes_a_point(indexed):
    store, report = indexed

    assert (report.num_indexed, store.count()) == (NUM_PRODUCTS,) * 2


def test_running_twice_keeps_the_same_points(indexed, encoder):
    store, _ = indexed

    report = index_catalog(_catalog(), encoder, store, INDEX_CONFIG)

    assert (report.created_because, store.count()) == (None, NUM_PRODUCTS)


def test_rebuild_recreates_the_collection(indexed, encoder):
    store, _ = indexed

    report = index_catalog(
        _catalog(8), encoder, store, INDEX_CONFIG, rebuild=True
    )

    assert (report.created_because is not None, store.count()) == (True, 8)


def test_smaller_catalog_rebuilds_so_no_stale_labels_stay(indexed, encoder):
    store, _ = indexed

    report = index_catalog(_catalog(8), encoder, store, INDEX_CONFIG)

    assert ("not in this catalog" in report.created_because, store.count()) == (
        True,
        8,
    )


def test_another_model_recreates_the_collection(indexed, other_encoder):
    store, _ = indexed

    report = index_catalog(_catalog(8), other_encoder, store, INDEX_CONFIG)

    assert ("model" in report.created_because, store.count()) == (True, 8)


def test_stored_vectors_are_the_encoder_latents(indexed, encoder):
    store, _ = indexed
    catalog = _catalog()

    points = store.retrieve(["sku-0", "sku-7"])

    np.testing.assert_allclose(
        np.stack([p.vector for p in points]),
        encoder.encode(catalog.images[[0, 7]]),
        rtol=1e-5,
        atol=1e-6,
    )


def test_payload_holds_ids_cluster_and_attributes(indexed):
    store, _ = indexed

    (point,) = store.retrieve(["sku-6"])

    assert point.payload == {
        "product_id": "sku-6",
        "file_name": "sku-6.jpg",
        CLUSTER_FIELD: point.payload[CLUSTER_FIELD],
        "baseColour": "Red",
        "year": 2012,
    }


def test_cluster_labels_match_the_saved_centroids(indexed):
    store, _ = indexed
    meta = store.load_metadata()
    centroids = np.asarray(meta["centroids"], np.float32)

    points = store.retrieve([f"sku-{i}" for i in range(NUM_PRODUCTS)])

    vectors = np.stack([p.vector for p in points])
    nearest = np.argmin(
        np.linalg.norm(vectors[:, None] - centroids[None], axis=2), axis=1
    )
    assert [p.payload[CLUSTER_FIELD] for p in points] == nearest.tolist()


def test_report_cluster_sizes_add_up(indexed):
    _, report = indexed

    assert (len(report.cluster_sizes), sum(report.cluster_sizes)) == (
        INDEX_CONFIG.num_clusters,
        NUM_PRODUCTS,
    )


def test_report_counts_skips_but_not_missing_rows(indexed):
    _, report = indexed

    assert report.skipped == {"not an image file": 2, "duplicate CSV id": 1}


def test_metadata_describes_the_index(indexed, encoder):
    store, _ = indexed

    meta = load_index_metadata(store)

    assert {
        key: meta[key]
        for key in (
            "model_fingerprint",
            "latent_dim",
            "keyword_fields",
            "numeric_fields",
            "num_points",
        )
    } == {
        "model_fingerprint": encoder.fingerprint,
        "latent_dim": MODEL_CONFIG.latent_dim,
        "keyword_fields": ["baseColour"],
        "numeric_fields": ["year"],
        "num_points": NUM_PRODUCTS,
    }


def test_metadata_records_model_config_and_time(indexed):
    meta = load_index_metadata(indexed[0])

    assert (
        ModelConfig.from_dict(meta["model_config"]),
        bool(meta["created_at"]),
    ) == (MODEL_CONFIG, True)


def test_search_by_cluster_finds_only_that_cluster(indexed, encoder):
    store, _ = indexed
    query = encoder.encode(_catalog().images[:1])[0]
    cluster = Filter(must=(Match(CLUSTER_FIELD, (1,)),))

    hits = store.search(query, limit=NUM_PRODUCTS, filter=cluster)

    assert {h.payload[CLUSTER_FIELD] for h in hits} == {1}


def test_fewer_products_than_clusters_gets_one_cluster_each(store, encoder):
    config = dataclasses.replace(INDEX_CONFIG, num_clusters=10)

    report = index_catalog(_catalog(8), encoder, store, config)

    assert report.cluster_sizes == [1] * 8


def test_empty_catalog_is_refused(store, encoder):
    empty = CatalogImages(
        images=np.zeros((0, 24, 16, 3), np.uint8), products=[]
    )

    with pytest.raises(ValueError, match="no products"):
        index_catalog(empty, encoder, store, INDEX_CONFIG)


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        ([{"a": "x"}, {"a": "y"}], (["a"], [])),
        ([{"a": 1}, {"a": 2.5}], ([], ["a"])),
        ([{"a": 1}, {"a": "x"}], (["a"], [])),
        ([{"a": True}], (["a"], [])),
        ([{"a": 1}, {}, {"b": "z"}], (["b"], ["a"])),
        ([{"cluster": 3, "a": 1}], ([], ["a"])),
    ],
    ids=["strings", "numbers", "mixed", "bool", "sparse", "reserved"],
)
def test_attribute_kinds(attributes, expected):
    assert attribute_kinds(attributes) == expected


def test_mixed_column_is_stored_as_strings(store, encoder):
    catalog = _catalog(8)
    catalog.products[1] = Product("sku-1", "sku-1.jpg", {"size": 42})
    catalog.products[2] = Product("sku-2", "sku-2.jpg", {"size": "XL"})

    index_catalog(catalog, encoder, store, INDEX_CONFIG)

    (point,) = store.retrieve(["sku-1"])
    assert point.payload["size"] == "42"


def test_load_metadata_without_index_raises(store):
    with pytest.raises(IndexMissingError, match="lookalike index"):
        load_index_metadata(store)


def test_check_model_matches_accepts_the_building_model(indexed, encoder):
    meta = load_index_metadata(indexed[0])

    assert check_model_matches(meta, encoder) is None


def test_check_model_matches_refuses_another_model(indexed, other_encoder):
    meta = load_index_metadata(indexed[0])

    with pytest.raises(ModelMismatchError, match="built by model"):
        check_model_matches(meta, other_encoder)
