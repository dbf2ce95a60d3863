"""Builds and runs the gRPC server: the service, health checking and
reflection (so that grpcurl can list and call it)."""

import dataclasses
import logging
import signal
import threading
from collections.abc import Callable
from concurrent import futures

import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from encoder.encode import Encoder
from indexer.job import check_model_matches, load_index_metadata
from indexer.store import VectorStore
from proto.lookalike.v1 import lookalike_pb2, lookalike_pb2_grpc
from server.batching import MAX_BATCH, EncodeBatcher
from server.config import ServerConfig
from server.servicer import LookalikeServicer

logger = logging.getLogger(__name__)

SERVICE_NAME = lookalike_pb2.DESCRIPTOR.services_by_name["Lookalike"].full_name
# Room in a request for the fields besides the image (filter, paging), so
# that max_image_bytes is the limit that matters.
MESSAGE_OVERHEAD_BYTES = 64 * 1024


@dataclasses.dataclass
class _Running:
    server: grpc.Server
    port: int
    health: health.HealthServicer
    batcher: EncodeBatcher | None


def create_server(
    encoder: Encoder,
    store: VectorStore,
    config: ServerConfig,
    *,
    batching: bool = False,
) -> tuple[grpc.Server, int]:
    """Starts serving the index in ``store``; returns the server and the
    bound port (a free one when config.port is 0).

    Raises indexer.job.IndexMissingError when the store holds no index and
    indexer.job.ModelMismatchError when another model built it, since its
    vectors would mean nothing to this encoder. With ``batching``,
    concurrent requests share encoder passes (see server.batching).
    """
    running = _start(encoder, store, config, batching=batching)
    return running.server, running.port


def serve(
    encoder: Encoder,
    store: VectorStore,
    config: ServerConfig,
    *,
    ready: Callable[[int], None] | None = None,
    batching: bool = False,
) -> None:
    """Serves until SIGTERM or SIGINT, then stops gracefully: health turns
    NOT_SERVING first, and in-flight requests get config.grace_seconds."""
    stop = threading.Event()
    # Python delivers signals to the main thread only; elsewhere (an
    # embedding application) the server runs until the process ends.
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {
            signum: signal.signal(signum, lambda *_: stop.set())
            for signum in (signal.SIGTERM, signal.SIGINT)
        }
    try:
        running = _start(encoder, store, config, batching=batching)
        logger.info(
            "serving %s on %s:%d", SERVICE_NAME, config.host, running.port
        )
        if ready is not None:
            ready(running.port)
        stop.wait()

        logger.info(
            "stopping; in-flight requests get %.1f s", config.grace_seconds
        )
        running.health.enter_graceful_shutdown()
        running.server.stop(config.grace_seconds).wait()
        if running.batcher is not None:
            running.batcher.close()
        logger.info("stopped")
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _start(
    encoder: Encoder,
    store: VectorStore,
    config: ServerConfig,
    *,
    batching: bool,
) -> _Running:
    metadata = load_index_metadata(store)
    check_model_matches(metadata, encoder)

    # Compiling each batch shape takes about a second; do it before the
    # port opens rather than on the first requests.
    blank = np.full(
        (encoder.config.image_height, encoder.config.image_width, 3),
        255,
        np.uint8,
    )
    batcher = None
    # TODO: the batcher's daemon thread outlives a server stopped through
    # the grpc.Server that create_server returns; it idles on an empty
    # queue, which costs nothing, and serve() closes it properly.
    if batching:
        batcher = EncodeBatcher(
            lambda images: encoder.encode(images, batch_size=MAX_BATCH)
        )
        batcher.warm_up(blank)
    else:
        encoder.encode(blank[None], batch_size=1)
    servicer = LookalikeServicer(
        encoder, store, config, metadata, batcher=batcher
    )

    message_limit = config.max_image_bytes + MESSAGE_OVERHEAD_BYTES
    server = grpc.server(
        futures.ThreadPoolExecutor(
            max_workers=config.max_workers, thread_name_prefix="grpc"
        ),
        options=[
            ("grpc.max_receive_message_length", message_limit),
            ("grpc.max_send_message_length", message_limit),
        ],
    )
    lookalike_pb2_grpc.add_LookalikeServicer_to_server(servicer, server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (
            SERVICE_NAME,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )

    address = f"{config.host}:{config.port}"
    try:
        port = server.add_insecure_port(address)
    except RuntimeError:
        port = 0
    if port == 0:
        if batcher is not None:
            batcher.close()
        raise OSError(
            f"cannot listen on {address}: the address is taken or invalid"
        )
    server.start()
    for service in ("", SERVICE_NAME):
        health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    return _Running(server, port, health_servicer, batcher)
