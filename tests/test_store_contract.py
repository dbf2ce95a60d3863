"""One contract, every store backend: the same calls must give the same
answers on Qdrant Edge, qdrant-client local mode and (when QDRANT_URL is
set) a Qdrant server. Collections are small, so every search is exact and
results can be compared with brute force in numpy."""

import os
import uuid

import numpy as np
import pytest

from indexer.config import IndexConfig
from indexer.filters import CLUSTER_FIELD, Filter, Match, Range
from indexer.store import StoreInUseError, open_store

DIM = 8
NUM_POINTS = 200
COLORS = ("red", "green", "blue", "black")
KEYWORD_FIELDS = ("color", "gender")
NUMERIC_FIELDS = ("year", "price")
BACKENDS = ("edge", "client-local", "client-server")


def _open(backend: str, path, collection: str):
    if backend == "edge":
        return open_store(path=path, collection=collection)
    if backend == "client-local":
        return open_store(path=path, collection=collection, local=True)
    return open_store(
        url=os.environ["QDRANT_URL"],
        api_key=os.environ.get("QDRANT_API_KEY"),
        collection=collection,
    )


def _opener(backend: str, path):
    """A function that opens one store of the backend; calling it twice
    opens the same data. Returns it and the list of stores it opened."""
    if backend == "client-server" and not os.environ.get("QDRANT_URL"):
        pytest.skip("QDRANT_URL is not set")
    collection = f"test_{uuid.uuid4().hex[:12]}"
    opened = []

    def open_():
        store = _open(backend, path, collection)
        opened.append(store)
        return store

    return open_, opened


@pytest.fixture(params=BACKENDS)
def opener(request, tmp_path):
    open_, opened = _opener(request.param, tmp_path / "store")
    yield open_
    for store in opened:
        store.close()


def _data(n: int = NUM_POINTS, seed: int = 0):
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, DIM)).astype(np.float32)
    ids = [f"p{i}" for i in range(n)]
    payloads = [
        {
            "product_id": ids[i],
            "file_name": f"{ids[i]}.jpg",
            CLUSTER_FIELD: int(i % 5),
            "color": COLORS[i % len(COLORS)],
            "gender": "Men" if i % 3 else "Women",
            "year": 2010 + i % 7,
            # Whole numbers stored as floats on purpose: matching 20 must
            # find 20.0, as Filter.matches does.
            "price": float(i % 11) * 2.5,
        }
        for i in range(n)
    ]
    return ids, vectors, payloads


def _create(store, dim: int = DIM):
    store.create(
        dim,
        keyword_fields=KEYWORD_FIELDS,
        numeric_fields=NUMERIC_FIELDS,
        config=IndexConfig(),
    )


def _fill(store):
    ids, vectors, payloads = _data()
    _create(store)
    store.upsert(ids, vectors, payloads)
    store.optimize()
    return store, ids, vectors, payloads


@pytest.fixture(scope="module", params=BACKENDS)
def filled(request, tmp_path_factory):
    """A filled store shared by the tests that only read from it; creating
    one costs about a second of disk syncs."""
    open_, opened = _opener(request.param, tmp_path_factory.mktemp("store"))
    yield _fill(open_())
    for store in opened:
        store.close()


@pytest.fixture
def own_filled(opener):
    """A filled store for one test that changes it."""
    return _fill(opener())


def _brute_force(vectors, payloads, query, limit, keep=lambda p: True):
    distances = np.linalg.norm(vectors - query, axis=1)
    order = [
        i for i in np.argsort(distances, kind="stable") if keep(payloads[i])
    ]
    return order[:limit], distances


def test_new_store_does_not_exist(opener):
    store = opener()

    assert (store.exists(), store.count()) == (False, 0)


def test_create_makes_an_empty_collection(opener):
    store = opener()
    _create(store)

    assert (store.exists(), store.count()) == (True, 0)


def test_upsert_counts_each_product_once(opener):
    store = opener()
    ids, vectors, payloads = _data(50)
    _create(store)

    store.upsert(ids, vectors, payloads)
    store.upsert(ids[:20], vectors[:20] + 1, payloads[:20])

    assert store.count() == 50


def test_upsert_replaces_the_vector(opener):
    store = opener()
    ids, vectors, payloads = _data(10)
    _create(store)
    store.upsert(ids, vectors, payloads)

    store.upsert(ids[:1], vectors[:1] + 1, payloads[:1])

    (point,) = store.retrieve(ids[:1])
    np.testing.assert_allclose(point.vector, vectors[0] + 1, rtol=1e-6)


def test_search_returns_nearest_in_order(filled):
    store, ids, vectors, payloads = filled
    query = vectors[3] + 0.05

    hits = store.search(query, limit=10)

    expected, _ = _brute_force(vectors, payloads, query, 10)
    assert [h.product_id for h in hits] == [ids[i] for i in expected]


def test_search_distances_are_euclidean(filled):
    store, ids, vectors, payloads = filled
    query = vectors[7] * 0.5

    hits = store.search(query, limit=10)

    _, distances = _brute_force(vectors, payloads, query, 10)
    np.testing.assert_allclose(
        [h.distance for h in hits],
        [distances[ids.index(h.product_id)] for h in hits],
        rtol=1e-4,
    )


def test_search_returns_the_payload(filled):
    store, ids, vectors, payloads = filled

    (hit,) = store.search(vectors[5], limit=1)

    assert hit.payload == payloads[5]


@pytest.mark.parametrize("offset", [0, 5, 13])
def test_offset_pages_are_slices_of_one_search(filled, offset):
    store, ids, vectors, payloads = filled
    query = vectors[0]
    everything = store.search(query, limit=30)

    page = store.search(query, limit=7, offset=offset)

    assert [h.product_id for h in page] == [
        h.product_id for h in everything[offset : offset + 7]
    ]


FILTERS = {
    "equality": Filter(must=(Match("color", ("red",)),)),
    "any_of": Filter(must=(Match("color", ("red", "blue")),)),
    "cluster": Filter(must=(Match(CLUSTER_FIELD, (2,)),)),
    "clusters": Filter(must=(Match(CLUSTER_FIELD, (1, 4)),)),
    "integer_match": Filter(must=(Match("year", (2012,)),)),
    "whole_float_match": Filter(must=(Match("price", (20,)),)),
    "fractional_match": Filter(must=(Match("price", (2.5, 7.5)),)),
    "range_closed": Filter(must=(Range("year", gte=2011, lte=2013),)),
    "range_open": Filter(must=(Range("price", gt=5.0, lt=20.0),)),
    "must_not": Filter(must_not=(Match("gender", ("Men",)),)),
    "must_not_range": Filter(must_not=(Range("year", lt=2014),)),
    "combined": Filter(
        must=(
            Match("color", ("green", "black")),
            Range("year", gte=2012),
        ),
        must_not=(Match(CLUSTER_FIELD, (0,)),),
    ),
    "unknown_field": Filter(must=(Match("material", ("silk",)),)),
    "no_match": Filter(must=(Match("color", ("purple",)),)),
}


@pytest.mark.parametrize("name", FILTERS)
def test_filtered_results_satisfy_the_filter(filled, name):
    store, ids, vectors, payloads = filled
    filter = FILTERS[name]

    hits = store.search(vectors[11], limit=20, filter=filter)

    assert all(filter.matches(h.payload) for h in hits)


@pytest.mark.parametrize("name", FILTERS)
def test_filtered_results_equal_brute_force(filled, name):
    store, ids, vectors, payloads = filled
    filter = FILTERS[name]
    query = vectors[11] + 0.1

    hits = store.search(query, limit=20, filter=filter)

    expected, _ = _brute_force(vectors, payloads, query, 20, filter.matches)
    assert [h.product_id for h in hits] == [ids[i] for i in expected]


def test_exclude_ids_leaves_them_out(filled):
    store, ids, vectors, payloads = filled
    query = vectors[2]
    nearest = [h.product_id for h in store.search(query, limit=5)]

    hits = store.search(query, limit=5, exclude_ids=nearest[:3])

    expected, _ = _brute_force(
        vectors,
        payloads,
        query,
        5,
        lambda p: p["product_id"] not in nearest[:3],
    )
    assert [h.product_id for h in hits] == [ids[i] for i in expected]


@pytest.mark.parametrize("offset", [0, 4])
def test_exclude_ids_with_paging_skips_only_the_excluded(filled, offset):
    store, ids, vectors, payloads = filled
    query = vectors[6]
    ranked = [h.product_id for h in store.search(query, limit=20)]
    # Excluded products on the page, before it and far beyond it.
    excluded = [ranked[0], ranked[5], ranked[19], "not-a-product"]

    hits = store.search(query, limit=6, offset=offset, exclude_ids=excluded)

    kept = [i for i in ranked if i not in excluded]
    assert [h.product_id for h in hits] == kept[offset : offset + 6]


def test_many_near_exclusions_still_fill_the_page(filled):
    # More excluded neighbours than the first fetch has room for.
    store, ids, vectors, payloads = filled
    query = vectors[8]
    ranked = [h.product_id for h in store.search(query, limit=40)]
    excluded = ranked[:25:2] + ranked[1:12:2] + ["not-a-product"] * 3

    hits = store.search(query, limit=8, offset=3, exclude_ids=excluded)

    kept = [i for i in ranked if i not in excluded]
    assert [h.product_id for h in hits] == kept[3:11]


def test_exclude_ids_combines_with_filter(filled):
    store, ids, vectors, payloads = filled
    filter = FILTERS["equality"]
    query = vectors[4]
    first = store.search(query, limit=1, filter=filter)[0].product_id

    hits = store.search(query, limit=10, filter=filter, exclude_ids=[first])

    assert first not in [h.product_id for h in hits] and all(
        filter.matches(h.payload) for h in hits
    )


def test_search_batch_equals_single_searches(filled):
    store, ids, vectors, payloads = filled
    queries = vectors[:4] + 0.2
    filters = [None, FILTERS["any_of"], FILTERS["combined"], None]

    batch = store.search_batch(queries, limit=6, offset=2, filters=filters)

    singles = [
        store.search(q, limit=6, offset=2, filter=f)
        for q, f in zip(queries, filters, strict=True)
    ]
    assert batch == singles


def test_retrieve_returns_vectors_and_payloads(filled):
    store, ids, vectors, payloads = filled

    points = store.retrieve([ids[9], ids[4]])

    assert [p.product_id for p in points] == [ids[9], ids[4]]
    assert [p.payload for p in points] == [payloads[9], payloads[4]]
    np.testing.assert_allclose(
        np.stack([p.vector for p in points]), vectors[[9, 4]], rtol=1e-6
    )


def test_retrieve_omits_unknown_ids(filled):
    store, ids, vectors, payloads = filled

    points = store.retrieve(["no-such-product", ids[1]])

    assert [p.product_id for p in points] == [ids[1]]


def test_metadata_round_trips(own_filled):
    store = own_filled[0]
    meta = {"model_fingerprint": "abc", "centroids": [[0.5, 1.0]], "n": 3}

    store.save_metadata(meta)

    assert store.load_metadata() == meta


def test_metadata_is_none_before_it_is_saved(own_filled):
    assert own_filled[0].load_metadata() is None


def test_reopened_store_sees_the_same_data(opener):
    store = opener()
    ids, vectors, payloads = _data(30)
    _create(store)
    store.upsert(ids, vectors, payloads)
    store.save_metadata({"num_points": 30})
    before = store.search(vectors[0], limit=5)
    store.close()

    reopened = opener()

    assert (
        reopened.count(),
        reopened.load_metadata(),
        reopened.search(vectors[0], limit=5),
    ) == (30, {"num_points": 30}, before)


def test_create_on_existing_collection_rebuilds_it_empty(own_filled):
    store = own_filled[0]
    store.save_metadata({"num_points": NUM_POINTS})

    _create(store, dim=4)

    assert (store.count(), store.load_metadata()) == (0, None)


def test_metadata_does_not_show_up_in_search(own_filled):
    store, ids, vectors, payloads = own_filled
    store.save_metadata({"num_points": NUM_POINTS})

    hits = store.search(vectors[0], limit=NUM_POINTS + 5)

    assert len(hits) == NUM_POINTS


@pytest.mark.parametrize(
    "kwargs",
    [
        {"limit": 0},
        {"limit": 5, "offset": -1},
    ],
)
def test_search_refuses_bad_paging(filled, kwargs):
    store, ids, vectors, payloads = filled

    with pytest.raises(ValueError):
        store.search(vectors[0], **kwargs)


def test_search_refuses_wrong_vector_size(filled):
    store, ids, vectors, payloads = filled

    with pytest.raises(ValueError, match="dimensional"):
        store.search(np.zeros(DIM + 1, np.float32), limit=3)


def test_upsert_refuses_mismatched_lengths(filled):
    store, ids, vectors, payloads = filled

    with pytest.raises(ValueError, match="same length"):
        store.upsert(ids[:3], vectors[:2], payloads[:3])


def test_range_without_bounds_is_refused(filled):
    store, ids, vectors, payloads = filled

    with pytest.raises(ValueError, match="at least one bound"):
        store.search(vectors[0], limit=3, filter=Filter(must=(Range("year"),)))


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"path": "a", "url": "http://localhost:6334"},
        {"url": "http://localhost:6334", "local": True},
    ],
)
def test_open_store_refuses_ambiguous_targets(kwargs):
    with pytest.raises(ValueError):
        open_store(**kwargs)


def test_edge_index_held_by_another_store_is_refused_clearly(tmp_path):
    # The embedded shard allows one holder; a second (say `lookalike eval`
    # while `lookalike serve` runs) gets a message instead of a crash.
    holder = open_store(path=tmp_path)
    _fill(holder)
    holder.close()
    holder = open_store(path=tmp_path)
    try:
        with pytest.raises(StoreInUseError, match="open in another process"):
            open_store(path=tmp_path)
    finally:
        holder.close()
