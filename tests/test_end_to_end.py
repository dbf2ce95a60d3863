"""One short run of the whole product: train, index, serve, query.

Trains one epoch on about 200 photos (the real sample catalog when it is
present, generated products otherwise), indexes them into embedded Qdrant
Edge, starts the gRPC server on a free loopback port and queries it the way
a storefront and the command line do.
"""

import csv
import shutil
from pathlib import Path

import grpc
import pytest

from encoder.config import ModelConfig, TrainConfig
from encoder.synthetic import write_synthetic_catalog
from indexer.config import IndexConfig
from indexer.filters import Filter, Match, Range
from lookalike import cli, jobs
from lookalike.workdir import Workdir
from proto.lookalike.v1 import lookalike_pb2
from server.app import create_server
from server.client import LookalikeClient, parse_filter_args
from server.config import ServerConfig

SAMPLE = (
    Path(__file__).resolve().parents[2] / "shared/datasets/fashion-products"
)
NUM_PRODUCTS = 200

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def catalog_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A catalog folder of about 200 products: real photos when available."""
    root = tmp_path_factory.mktemp("catalog")
    if not (SAMPLE / "styles.csv").is_file():
        write_synthetic_catalog(root, NUM_PRODUCTS)
        return root
    (root / "images").mkdir()
    with open(SAMPLE / "styles.csv", newline="") as source:
        rows = list(csv.reader(source))
    header, rows = rows[0], rows[1 : NUM_PRODUCTS + 1]
    with open(root / "styles.csv", "w", newline="") as target:
        csv.writer(target).writerows([header, *rows])
    for row in rows:
        image = SAMPLE / "images" / f"{row[0]}.jpg"
        (root / "images" / image.name).symlink_to(image)
    return root


@pytest.fixture(scope="module")
def run(catalog_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """Trains, indexes and serves; yields (workdir, catalog, client)."""
    workdir = Workdir(tmp_path_factory.mktemp("run"))
    model_config = ModelConfig()
    catalog = jobs.load_images(
        str(catalog_dir),
        csv_path=None,
        model_config=model_config,
        workdir=workdir,
    )
    jobs.train(
        catalog,
        workdir,
        model_config,
        TrainConfig(epochs=1, batch_size=32, seed=0),
    )
    store = jobs.open_index(workdir)
    jobs.index(catalog, workdir, store, IndexConfig(num_clusters=6))
    encoder = jobs.Encoder.load(workdir.model)
    server, port = create_server(encoder, store, ServerConfig(port=0))
    client = LookalikeClient(f"127.0.0.1:{port}", timeout=30.0)
    yield workdir, catalog, client
    client.close()
    server.stop(grace=None)
    store.close()


def _photo(catalog_dir: Path, product_id: str) -> bytes:
    return next((catalog_dir / "images").glob(f"{product_id}.*")).read_bytes()


def test_own_photo_comes_back_first(run, catalog_dir: Path) -> None:
    _, catalog, client = run
    for product in catalog.products[:5]:
        photo = _photo(catalog_dir, product.product_id)
        response = client.query_by_image(photo, top_k=10)
        assert response.results[0].product_id == product.product_id


def test_query_by_id_returns_ten_neighbours_never_itself(run) -> None:
    _, catalog, client = run
    product_id = catalog.products[0].product_id
    response = client.query_by_id(product_id, top_k=10)
    ids = [result.product_id for result in response.results]
    assert len(ids) == 10
    assert product_id not in ids
    distances = [result.distance for result in response.results]
    assert distances == sorted(distances)


def test_query_cluster_matches_stored_cluster(run) -> None:
    _, catalog, client = run
    product_id = catalog.products[3].product_id
    by_id = client.query_by_id(product_id, top_k=1)
    neighbour = client.query_by_id(by_id.results[0].product_id, top_k=100)
    own = [r for r in neighbour.results if r.product_id == product_id]
    assert own and own[0].cluster == by_id.query_cluster


FILTERS = {
    "equality": ["masterCategory=Apparel"],
    "any-of": ["subCategory=Topwear|Shoes"],
    "cluster": ["cluster=0"],
    "range": ["year>=2011", "year<=2012"],
    "must-not": ["!gender=Men"],
    "combined": [
        "masterCategory=Apparel",
        "!subCategory=Topwear",
        "cluster=0|1|2",
    ],
}


@pytest.mark.parametrize("expressions", FILTERS.values(), ids=FILTERS.keys())
def test_filtered_results_satisfy_the_filter(run, expressions) -> None:
    _, catalog, client = run
    proto_filter = parse_filter_args(expressions)
    response = client.query_by_id(
        catalog.products[0].product_id, top_k=50, filter=proto_filter
    )
    reference = _as_domain_filter(expressions)
    assert response.results, "the filter should match some products"
    for result in response.results:
        payload = {k: _value(v) for k, v in result.attributes.items()}
        payload["cluster"] = result.cluster
        assert reference.matches(payload), (result.product_id, payload)


def test_paging_continues_where_the_first_page_ended(run) -> None:
    _, catalog, client = run
    product_id = catalog.products[1].product_id
    whole = client.query_by_id(product_id, top_k=20)
    second = client.query_by_id(product_id, top_k=10, offset=10)
    assert [r.product_id for r in second.results] == [
        r.product_id for r in whole.results[10:]
    ]


# Each bad request is built from a real product ID, so that only the part
# under test is wrong.
BAD_REQUESTS = {
    "empty image": lambda pid: lookalike_pb2.QueryByImageRequest(
        image=b"", top_k=5
    ),
    "undecodable image": lambda pid: lookalike_pb2.QueryByImageRequest(
        image=b"not a photo" * 10
    ),
    "unknown id": lambda pid: lookalike_pb2.QueryByIdRequest(
        product_id="no-such-product"
    ),
    "empty id": lambda pid: lookalike_pb2.QueryByIdRequest(product_id=""),
    "top_k too large": lambda pid: lookalike_pb2.QueryByIdRequest(
        product_id=pid, top_k=101
    ),
    "negative top_k": lambda pid: lookalike_pb2.QueryByIdRequest(
        product_id=pid, top_k=-1
    ),
    "negative offset": lambda pid: lookalike_pb2.QueryByIdRequest(
        product_id=pid, offset=-3
    ),
    "unknown filter field": lambda pid: lookalike_pb2.QueryByIdRequest(
        product_id=pid, filter=parse_filter_args(["colour_of_the_sky=Blue"])
    ),
    "inverted range": lambda pid: lookalike_pb2.QueryByIdRequest(
        product_id=pid, filter=parse_filter_args(["year>=2015", "year<2010"])
    ),
    "range on a text field": lambda pid: lookalike_pb2.QueryByImageRequest(
        image=b"x", filter=parse_filter_args(["articleType>=3"])
    ),
}
EXPECTED_CODE = {
    "unknown id": grpc.StatusCode.NOT_FOUND,
}


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=BAD_REQUESTS)
def test_bad_request_gets_its_status_and_server_keeps_serving(
    run, case
) -> None:
    _, catalog, client = run
    product_id = catalog.products[0].product_id
    request = BAD_REQUESTS[case](product_id)
    call = (
        client.stub.QueryByImage
        if isinstance(request, lookalike_pb2.QueryByImageRequest)
        else client.stub.QueryById
    )
    with pytest.raises(grpc.RpcError) as error:
        call(request, timeout=10)
    expected = EXPECTED_CODE.get(case, grpc.StatusCode.INVALID_ARGUMENT)
    assert error.value.code() == expected, error.value.details()
    assert client.query_by_id(product_id, top_k=1).results


def test_image_over_the_size_cap_is_refused(run) -> None:
    _, _, client = run
    too_big = b"\xff" * (ServerConfig.max_image_bytes + 1)
    with pytest.raises(grpc.RpcError) as error:
        client.query_by_image(too_big, top_k=1)
    assert error.value.code() in (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.INVALID_ARGUMENT,
    )


def test_indexing_twice_keeps_one_point_per_product(run) -> None:
    workdir, catalog, _ = run
    # The served store holds the embedded index open; index a copy.
    copy = Workdir(workdir.root.parent / (workdir.root.name + "-again"))
    shutil.copytree(workdir.model, copy.model)
    store = jobs.open_index(copy)
    try:
        for _ in range(2):
            jobs.index(catalog, copy, store, IndexConfig())
        assert store.count() == len(catalog.products)
    finally:
        store.close()


def test_cli_query_prints_a_table(run, capsys) -> None:
    _, catalog, client = run
    product_id = catalog.products[0].product_id
    code = cli.main(
        ["query", "--target", client.target, "--id", product_id, "--top-k", "3"]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert sum(line.strip()[:1].isdigit() for line in out.splitlines()) == 3


def _as_domain_filter(expressions: list[str]) -> Filter:
    """The domain filter a list of CLI expressions means, built by hand."""
    proto_filter = parse_filter_args(expressions)

    def convert(condition) -> Match | Range:
        if condition.HasField("range"):
            bounds = {
                name: getattr(condition.range, name)
                for name in ("gte", "gt", "lte", "lt")
                if condition.range.HasField(name)
            }
            return Range(condition.field, **bounds)
        return Match(
            condition.field,
            tuple(_value(v) for v in condition.any_of.values),
        )

    return Filter(
        must=tuple(convert(c) for c in proto_filter.must),
        must_not=tuple(convert(c) for c in proto_filter.must_not),
    )


def _value(value: lookalike_pb2.Value):
    return getattr(value, value.WhichOneof("kind"))
