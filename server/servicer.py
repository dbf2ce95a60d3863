"""The lookalike.v1.Lookalike service: similar products by photo or by ID."""

import functools
import logging
from collections.abc import Callable, Mapping
from typing import Any

import grpc
import numpy as np

from encoder.encode import Encoder
from encoder.images import ImageError, decode_image
from indexer.filters import CLUSTER_FIELD, Filter
from indexer.job import RESERVED_FIELDS
from indexer.store import Hit, VectorStore
from proto.lookalike.v1 import lookalike_pb2, lookalike_pb2_grpc
from server import validation
from server.batching import EncodeBatcher
from server.config import ServerConfig

logger = logging.getLogger(__name__)


class _Refusal(Exception):
    """Ends a request with a status code and a message for the client."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def _rpc(method: Callable) -> Callable:
    """Answers refusals with their status, anything else with INTERNAL.

    context.abort raises, so it is called outside the try blocks; an
    unexpected error is logged with its traceback but its text is not sent,
    since it may describe the server's internals.
    """

    @functools.wraps(method)
    def wrapper(self, request, context: grpc.ServicerContext):
        try:
            return method(self, request, context)
        except _Refusal as refusal:
            code, message = refusal.code, refusal.message
        except validation.RequestError as error:
            code, message = grpc.StatusCode.INVALID_ARGUMENT, str(error)
        except Exception:
            logger.exception("%s failed", method.__name__)
            code, message = grpc.StatusCode.INTERNAL, "internal error"
        context.abort(code, message)

    return wrapper


class LookalikeServicer(lookalike_pb2_grpc.LookalikeServicer):
    """Encodes query photos and searches the vector store.

    metadata is the index's own record (see indexer.job): its centroids
    label the cluster of an uploaded photo, and its field lists say which
    attributes a filter may name.
    """

    def __init__(
        self,
        encoder: Encoder,
        store: VectorStore,
        config: ServerConfig,
        metadata: Mapping[str, Any],
        *,
        batcher: EncodeBatcher | None = None,
    ):
        self._encoder = encoder
        self._store = store
        self._config = config
        self._schema = validation.FieldSchema.from_metadata(metadata)
        self._centroids = np.asarray(metadata["centroids"], np.float32)
        self._batcher = batcher

    @_rpc
    def QueryByImage(
        self,
        request: lookalike_pb2.QueryByImageRequest,
        context: grpc.ServicerContext,
    ) -> lookalike_pb2.QueryResponse:
        # Cheap checks first, so a bad request costs no decoding.
        if not request.image:
            raise validation.RequestError("empty image")
        if len(request.image) > self._config.max_image_bytes:
            raise _Refusal(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"image is {len(request.image)} bytes; allowed: at most "
                f"{self._config.max_image_bytes}",
            )
        paging = validation.parse_paging(
            request.top_k, request.offset, self._config
        )
        query_filter = self._parse_filter(request)
        exclude_ids = validation.parse_exclude_ids(request.exclude_ids)

        model_config = self._encoder.config
        try:
            image = decode_image(
                request.image,
                height=model_config.image_height,
                width=model_config.image_width,
                max_pixels=self._config.max_image_pixels,
            )
        except ImageError as error:
            raise validation.RequestError(str(error)) from error
        latent = self._encode(image)
        if not np.all(np.isfinite(latent)):
            raise RuntimeError("the encoder returned a non-finite latent")

        hits = self._store.search(
            latent,
            limit=paging.top_k,
            offset=paging.offset,
            filter=query_filter,
            exclude_ids=exclude_ids,
        )
        return _response(hits, query_cluster=self._nearest_cluster(latent))

    @_rpc
    def QueryById(
        self,
        request: lookalike_pb2.QueryByIdRequest,
        context: grpc.ServicerContext,
    ) -> lookalike_pb2.QueryResponse:
        product_id = validation.parse_product_id(request.product_id)
        paging = validation.parse_paging(
            request.top_k, request.offset, self._config
        )
        query_filter = self._parse_filter(request)
        exclude_ids = validation.parse_exclude_ids(request.exclude_ids)

        stored = self._store.retrieve([product_id])
        if not stored:
            raise _Refusal(
                grpc.StatusCode.NOT_FOUND,
                f"product_id {product_id!r} is not in the index",
            )
        point = stored[0]
        # The product itself is always its own nearest neighbour.
        excluded = (product_id, *exclude_ids)
        hits = self._store.search(
            point.vector,
            limit=paging.top_k,
            offset=paging.offset,
            filter=query_filter,
            exclude_ids=excluded,
        )
        hits = [hit for hit in hits if hit.product_id != product_id]
        return _response(
            hits, query_cluster=int(point.payload.get(CLUSTER_FIELD, -1))
        )

    def _parse_filter(self, request: Any) -> Filter | None:
        if not request.HasField("filter"):
            return None
        return validation.parse_filter(request.filter, self._schema)

    def _encode(self, image: np.ndarray) -> np.ndarray:
        """The latent vector of one decoded image, float32 [latent_dim]."""
        if self._batcher is not None:
            return self._batcher.encode(image)
        return self._encoder.encode(image[None], batch_size=1)[0]

    def _nearest_cluster(self, latent: np.ndarray) -> int:
        distances = np.sum((self._centroids - latent) ** 2, axis=1)
        return int(np.argmin(distances))


def _response(
    hits: list[Hit], *, query_cluster: int
) -> lookalike_pb2.QueryResponse:
    return lookalike_pb2.QueryResponse(
        results=[_result(hit) for hit in hits], query_cluster=query_cluster
    )


def _result(hit: Hit) -> lookalike_pb2.Result:
    attributes = {
        key: _value(value)
        for key, value in hit.payload.items()
        # Bookkeeping fields are not catalog attributes.
        if key not in RESERVED_FIELDS and value is not None
    }
    return lookalike_pb2.Result(
        product_id=hit.product_id,
        distance=hit.distance,
        cluster=int(hit.payload.get(CLUSTER_FIELD, -1)),
        attributes=attributes,
    )


def _value(value: Any) -> lookalike_pb2.Value:
    # bool before int: bool is a subclass of int.
    if isinstance(value, bool):
        return lookalike_pb2.Value(bool_value=value)
    if isinstance(value, int) and -(2**63) <= value < 2**63:
        return lookalike_pb2.Value(int_value=value)
    if isinstance(value, float):
        return lookalike_pb2.Value(double_value=value)
    return lookalike_pb2.Value(string_value=str(value))
