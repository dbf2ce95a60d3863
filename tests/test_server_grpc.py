"""The service over real gRPC: a server on a free loopback port, backed by
a real Qdrant Edge index of a small catalog encoded by an untrained model."""

import io
import os
import signal
import struct
import threading
import zlib
from pathlib import Path

import grpc
import numpy as np
import pytest
from flax import nnx
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from PIL import Image

from encoder.catalog import CatalogImages, load_catalog
from encoder.config import ModelConfig
from encoder.encode import Encoder
from encoder.model import Autoencoder
from indexer.config import IndexConfig
from indexer.filters import Filter, Match, Range
from indexer.job import IndexMissingError, ModelMismatchError, index_catalog
from indexer.store import open_store
from proto.lookalike.v1 import lookalike_pb2 as pb
from server.app import (
    MESSAGE_OVERHEAD_BYTES,
    SERVICE_NAME,
    create_server,
    serve,
)
from server.client import LookalikeClient, parse_filter_args
from server.config import ServerConfig

# A small cap keeps the oversized-upload tests cheap.
MAX_IMAGE_BYTES = 256 * 1024
CONFIG = ServerConfig(
    port=0, max_image_bytes=MAX_IMAGE_BYTES, max_workers=8, max_offset=100
)
# Room for requests far beyond the server's limit, so that the server, not
# the client, refuses them.
CLIENT_MAX_BYTES = 4 * MAX_IMAGE_BYTES


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    config = ModelConfig()
    return Encoder.from_model(Autoencoder(config, rngs=nnx.Rngs(0)), config)


@pytest.fixture(scope="module")
def catalog(small_catalog, encoder) -> CatalogImages:
    image_dir, csv_path = small_catalog
    return load_catalog(
        image_dir,
        csv_path,
        height=encoder.config.image_height,
        width=encoder.config.image_width,
        cache_dir=None,
    )


@pytest.fixture(scope="module")
def index(small_catalog, catalog, encoder, tmp_path_factory):
    """The catalog's image folder and the open store holding its index."""
    image_dir, _ = small_catalog
    store = open_store(path=tmp_path_factory.mktemp("index"))
    index_catalog(catalog, encoder, store, IndexConfig(num_clusters=4))
    yield image_dir, store
    store.close()


@pytest.fixture(scope="module")
def server(index, encoder):
    _, store = index
    # Batching on, so that the concurrency tests exercise it; the other
    # servers in this file encode each request on its own.
    grpc_server, port = create_server(encoder, store, CONFIG, batching=True)
    yield f"127.0.0.1:{port}"
    grpc_server.stop(grace=None)


@pytest.fixture(scope="module")
def client(server):
    with LookalikeClient(
        server, timeout=30.0, max_message_bytes=CLIENT_MAX_BYTES
    ) as client:
        yield client


@pytest.fixture(scope="module")
def payloads(index) -> dict[str, dict]:
    """Every stored product's payload, by product ID."""
    image_dir, store = index
    ids = sorted(path.stem for path in image_dir.iterdir())
    return {point.product_id: point.payload for point in store.retrieve(ids)}


@pytest.fixture(scope="module")
def photo(index) -> tuple[str, bytes]:
    """One catalog product's ID and its photo file's bytes."""
    image_dir, _ = index
    path = sorted(image_dir.iterdir())[0]
    return path.stem, path.read_bytes()


def _png(width: int, height: int, colour=(200, 40, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels but holds none."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def _gif() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, format="GIF")
    return buffer.getvalue()


def _payload(result: pb.Result) -> dict:
    """The payload a result describes, for Filter.matches."""
    payload = {
        key: getattr(value, value.WhichOneof("kind"))
        for key, value in result.attributes.items()
    }
    payload["cluster"] = result.cluster
    return payload


def _ids(response: pb.QueryResponse) -> list[str]:
    return [result.product_id for result in response.results]


GOOD_PNG = _png(60, 80)

# (request to QueryByImage, expected status)
BAD_IMAGE_REQUESTS = {
    "empty image": (pb.QueryByImageRequest(), grpc.StatusCode.INVALID_ARGUMENT),
    "not an image": (
        pb.QueryByImageRequest(image=b"hello, world"),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    "gif": (
        pb.QueryByImageRequest(image=_gif()),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    "truncated png": (
        pb.QueryByImageRequest(image=_png(300, 300)[:200]),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    "png header only": (
        pb.QueryByImageRequest(image=_png_header_only(60, 80)),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    "decompression bomb": (
        pb.QueryByImageRequest(image=_png_header_only(100_000, 100_000)),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    "negative top_k": (
        pb.QueryByImageRequest(image=GOOD_PNG, top_k=-1),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    "top_k over the maximum": (
        pb.QueryByImageRequest(image=GOOD_PNG, top_k=CONFIG.max_top_k + 1),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    "negative offset": (
        pb.QueryByImageRequest(image=GOOD_PNG, offset=-1),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    "offset over the maximum": (
        pb.QueryByImageRequest(image=GOOD_PNG, offset=CONFIG.max_offset + 1),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    "unknown filter field": (
        pb.QueryByImageRequest(
            image=GOOD_PNG, filter=parse_filter_args(["price=3"])
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    "empty any_of": (
        pb.QueryByImageRequest(
            image=GOOD_PNG,
            filter=pb.Filter(
                must=[pb.Condition(field="gender", any_of=pb.ValueList())]
            ),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    "range on a keyword field": (
        pb.QueryByImageRequest(
            image=GOOD_PNG, filter=parse_filter_args(["gender>=3"])
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    "range without bounds": (
        pb.QueryByImageRequest(
            image=GOOD_PNG,
            filter=pb.Filter(
                must=[pb.Condition(field="year", range=pb.Range())]
            ),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    "range with lower above upper": (
        pb.QueryByImageRequest(
            image=GOOD_PNG,
            filter=pb.Filter(
                must=[
                    pb.Condition(
                        field="year", range=pb.Range(gte=2015, lte=2011)
                    )
                ]
            ),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    "range with a NaN bound": (
        pb.QueryByImageRequest(
            image=GOOD_PNG,
            filter=pb.Filter(
                must=[
                    pb.Condition(field="year", range=pb.Range(gte=float("nan")))
                ]
            ),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    "empty excluded id": (
        pb.QueryByImageRequest(image=GOOD_PNG, exclude_ids=[""]),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
}
BAD_ID_REQUESTS = {
    "empty id": (pb.QueryByIdRequest(), grpc.StatusCode.INVALID_ARGUMENT),
    "oversized id": (
        pb.QueryByIdRequest(product_id="9" * 10_000),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    "unknown id": (
        pb.QueryByIdRequest(product_id="no-such-product"),
        grpc.StatusCode.NOT_FOUND,
    ),
    "top_k over the maximum": (
        pb.QueryByIdRequest(product_id="x", top_k=1000),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    "unknown filter field": (
        pb.QueryByIdRequest(
            product_id="x", filter=parse_filter_args(["colour=Red"])
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
}


@pytest.mark.parametrize(
    "request_, expected",
    BAD_IMAGE_REQUESTS.values(),
    ids=BAD_IMAGE_REQUESTS.keys(),
)
def test_query_by_image_refuses_bad_input(client, request_, expected):
    with pytest.raises(grpc.RpcError) as error:
        client.stub.QueryByImage(request_, timeout=30.0)
    assert error.value.code() == expected, error.value.details()


@pytest.mark.parametrize(
    "request_, expected",
    BAD_ID_REQUESTS.values(),
    ids=BAD_ID_REQUESTS.keys(),
)
def test_query_by_id_refuses_bad_input(client, request_, expected):
    with pytest.raises(grpc.RpcError) as error:
        client.stub.QueryById(request_, timeout=30.0)
    assert error.value.code() == expected, error.value.details()


def test_unknown_id_is_named_in_the_error(client):
    with pytest.raises(grpc.RpcError) as error:
        client.query_by_id("no-such-product")
    assert "no-such-product" in error.value.details()


def test_contradicting_conditions_are_valid_and_match_nothing(client):
    query_filter = pb.Filter(
        must=[
            pb.Condition(field="year", range=pb.Range(gte=2015)),
            pb.Condition(field="year", range=pb.Range(lte=2011)),
        ]
    )
    response = client.query_by_image(GOOD_PNG, filter=query_filter)
    assert list(response.results) == []


def test_server_keeps_serving_after_bad_requests(client):
    for request_, _ in BAD_IMAGE_REQUESTS.values():
        with pytest.raises(grpc.RpcError):
            client.stub.QueryByImage(request_, timeout=30.0)
    assert len(client.query_by_image(GOOD_PNG, top_k=3).results) == 3


def test_one_byte_over_the_cap_is_resource_exhausted(client):
    with pytest.raises(grpc.RpcError) as error:
        client.query_by_image(b"\x00" * (MAX_IMAGE_BYTES + 1))
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_far_over_the_cap_is_refused_by_grpc(client):
    with pytest.raises(grpc.RpcError) as error:
        client.query_by_image(
            b"\x00" * (MAX_IMAGE_BYTES + MESSAGE_OVERHEAD_BYTES + 1)
        )
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_exactly_the_cap_reaches_the_decoder(client):
    with pytest.raises(grpc.RpcError) as error:
        client.query_by_image(b"\x00" * MAX_IMAGE_BYTES)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_decompression_bomb_names_its_size(client):
    with pytest.raises(grpc.RpcError) as error:
        client.query_by_image(_png_header_only(100_000, 100_000))
    assert "pixels" in error.value.details()


@pytest.mark.parametrize(
    "image",
    [_png(1, 1), _png(60, 80, (255, 255, 255)), _png(500, 20, (0, 0, 0))],
    ids=["1x1", "uniform white", "wide black"],
)
def test_tiny_and_uniform_images_give_finite_distances(client, image):
    response = client.query_by_image(image, top_k=5)
    distances = [result.distance for result in response.results]
    assert len(distances) == 5 and np.isfinite(distances).all()


def test_query_by_image_finds_the_product_itself_first(client, photo):
    product_id, data = photo
    response = client.query_by_image(data, top_k=3)
    # The upload is encoded alone, the catalog in padded batches: float32
    # rounding differs slightly, so "zero" is relative to the latent scale.
    assert response.results[0].distance == pytest.approx(0.0, abs=1e-3)
    assert product_id in [
        r.product_id for r in response.results if r.distance < 1e-3
    ]


def test_results_are_sorted_by_distance(client, photo):
    distances = [
        r.distance for r in client.query_by_image(photo[1], top_k=20).results
    ]
    assert distances == sorted(distances)


def test_results_carry_the_stored_attributes(client, photo, payloads):
    result = client.query_by_image(photo[1], top_k=1).results[0]
    stored = payloads[result.product_id]
    expected = {
        key: value
        for key, value in stored.items()
        if key not in ("product_id", "file_name")
    }
    assert _payload(result) == expected


def test_query_cluster_of_a_stored_product_is_its_cluster(client, payloads):
    product_id = sorted(payloads)[5]
    response = client.query_by_id(product_id, top_k=1)
    assert response.query_cluster == payloads[product_id]["cluster"]


@pytest.mark.parametrize(
    "args",
    [
        ["gender=Men"],
        ["gender=Men|Women"],
        ["!gender=Men"],
        ["year>=2012"],
        ["year>2011", "year<2015"],
        ["cluster=1"],
        ["!cluster=0|1"],
        ["gender=Women", "!year=2012"],
        ["cluster<=2", "year=2012|2014"],
    ],
)
@pytest.mark.parametrize("method", ["image", "id"])
def test_filtered_results_match_the_filter(
    client, photo, payloads, args, method
):
    query_filter = _domain_filter(args)
    if method == "image":
        response = client.query_by_image(
            photo[1], top_k=100, filter=parse_filter_args(args)
        )
        candidates = payloads.values()
    else:
        response = client.query_by_id(
            photo[0], top_k=100, filter=parse_filter_args(args)
        )
        candidates = [p for i, p in payloads.items() if i != photo[0]]
    assert all(query_filter.matches(_payload(r)) for r in response.results)
    expected = sum(query_filter.matches(p) for p in candidates)
    assert len(response.results) == expected


def _domain_filter(args: list[str]) -> Filter:
    """The reference Filter for the argument forms used above."""
    must, must_not = [], []
    for arg in args:
        target = must_not if arg.startswith("!") else must
        arg = arg.lstrip("!")
        for op, bound in (
            (">=", "gte"),
            ("<=", "lte"),
            (">", "gt"),
            ("<", "lt"),
        ):
            if op in arg:
                field, value = arg.split(op)
                target.append(Range(field, **{bound: float(value)}))
                break
        else:
            field, values = arg.split("=")
            parsed = tuple(
                int(v) if field in ("year", "cluster") else v
                for v in values.split("|")
            )
            target.append(Match(field, parsed))
    return Filter(must=tuple(must), must_not=tuple(must_not))


@pytest.mark.parametrize("method", ["image", "id"])
def test_pages_concatenate_to_one_longer_page(client, photo, method):
    def page(top_k: int, offset: int) -> list[str]:
        if method == "image":
            response = client.query_by_image(
                photo[1], top_k=top_k, offset=offset
            )
        else:
            response = client.query_by_id(photo[0], top_k=top_k, offset=offset)
        return _ids(response)

    assert page(5, 0) + page(5, 5) + page(5, 10) == page(15, 0)


@pytest.mark.parametrize("method", ["image", "id"])
def test_excluded_ids_are_never_returned(client, photo, method):
    if method == "image":
        first = _ids(client.query_by_image(photo[1], top_k=5))
        response = client.query_by_image(photo[1], top_k=20, exclude_ids=first)
    else:
        first = _ids(client.query_by_id(photo[0], top_k=5))
        response = client.query_by_id(photo[0], top_k=20, exclude_ids=first)
    assert len(response.results) == 20
    assert not set(first) & set(_ids(response))


def test_query_by_id_never_returns_the_product(client, payloads):
    for product_id in sorted(payloads)[:10]:
        response = client.query_by_id(product_id, top_k=100)
        assert product_id not in _ids(response)
        assert len(response.results) == len(payloads) - 1


def test_offset_past_the_end_gives_no_results(client, payloads, photo):
    response = client.query_by_image(photo[1], top_k=10, offset=len(payloads))
    assert list(response.results) == []


def test_concurrent_queries_match_sequential_ones(client, photo, payloads):
    from concurrent.futures import ThreadPoolExecutor

    images = [_png(60, 80, (i * 20, 255 - i * 20, 90)) for i in range(12)]
    sequential = [_ids(client.query_by_image(i, top_k=5)) for i in images]
    with ThreadPoolExecutor(max_workers=6) as pool:
        concurrent = list(
            pool.map(lambda i: _ids(client.query_by_image(i, top_k=5)), images)
        )
    assert concurrent == sequential


@pytest.mark.parametrize("service", ["", SERVICE_NAME])
def test_health_reports_serving(server, service):
    with grpc.insecure_channel(server) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        response = stub.Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5.0
        )
    assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_service(server):
    with grpc.insecure_channel(server) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        response = next(
            iter(stub.ServerReflectionInfo(iter([request]), timeout=5.0))
        )
    names = [s.name for s in response.list_services_response.service]
    assert SERVICE_NAME in names


def test_server_refuses_to_start_without_an_index(encoder, tmp_path: Path):
    store = open_store(path=tmp_path)
    try:
        with pytest.raises(IndexMissingError):
            create_server(encoder, store, CONFIG)
    finally:
        store.close()


def test_server_refuses_an_index_built_by_another_model(index):
    _, store = index
    config = ModelConfig()
    other = Encoder.from_model(Autoencoder(config, rngs=nnx.Rngs(1)), config)
    with pytest.raises(ModelMismatchError):
        create_server(other, store, CONFIG)


def test_serve_stops_gracefully_on_sigterm(index, encoder):
    _, store = index
    seen = {}

    def check_then_terminate(port: int) -> None:
        # Runs on a thread of its own, as serve() blocks the main thread.
        def run() -> None:
            with LookalikeClient(f"127.0.0.1:{port}", timeout=30.0) as c:
                seen["results"] = len(c.query_by_image(GOOD_PNG).results)
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=run, daemon=True).start()

    previous = signal.getsignal(signal.SIGTERM)
    serve(encoder, store, CONFIG, ready=check_then_terminate)
    assert seen == {"results": 10}
    assert signal.getsignal(signal.SIGTERM) is previous


def test_store_failure_is_internal_without_details(catalog, encoder, tmp_path):
    store = open_store(path=tmp_path)
    index_catalog(catalog, encoder, store, IndexConfig(num_clusters=2))
    grpc_server, port = create_server(encoder, store, CONFIG)
    # A closed store fails every call, as a lost backend would.
    store.close()
    try:
        with (
            LookalikeClient(f"127.0.0.1:{port}", timeout=30.0) as client,
            pytest.raises(grpc.RpcError) as error,
        ):
            client.query_by_image(GOOD_PNG)
    finally:
        grpc_server.stop(grace=None)
    assert error.value.code() == grpc.StatusCode.INTERNAL
    assert error.value.details() == "internal error"
