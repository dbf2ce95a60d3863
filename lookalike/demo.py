"""The README's main job: train, index and serve one catalog, then query it.

The demo ends with the server running and a sample query answered: one of
the catalog's own photos is sent as an upload (it should come back first)
and the same product is queried by ID.
"""

import io
import logging
import time
from pathlib import Path

import numpy as np
from PIL import Image

from encoder.catalog import CatalogImages
from encoder.config import ModelConfig, TrainConfig
from encoder.encode import Encoder
from indexer.config import IndexConfig
from lookalike import jobs
from lookalike.workdir import Workdir, resolve_catalog
from server.app import create_server, serve
from server.client import LookalikeClient, format_results
from server.config import ServerConfig

logger = logging.getLogger(__name__)


def run(
    *,
    catalog: str,
    csv_path: Path | None,
    workdir: Path,
    limit: int | None,
    model_config: ModelConfig,
    train_config: TrainConfig,
    index_config: IndexConfig,
    server_config: ServerConfig,
    qdrant_url: str | None = None,
    qdrant_api_key: str | None = None,
    serve_forever: bool = True,
) -> None:
    """Trains, indexes and serves; returns only when the server stops."""
    started = time.perf_counter()
    run_dir = Workdir(workdir)

    images = jobs.load_images(
        catalog,
        csv_path=csv_path,
        model_config=model_config,
        workdir=run_dir,
        limit=limit,
    )
    result = jobs.train(images, run_dir, model_config, train_config)
    logger.info(
        "trained %d epochs, best validation loss %.5f",
        result.epochs_run,
        result.best_val_loss,
    )
    store = jobs.open_index(
        run_dir,
        qdrant_url=qdrant_url,
        qdrant_api_key=qdrant_api_key,
        collection=index_config.collection,
    )
    try:
        report = jobs.index(images, run_dir, store, index_config, rebuild=True)
        logger.info("indexed: %s", report.summary())
        sample = _sample_photo(images, catalog, csv_path)
        encoder = Encoder.load(run_dir.model)

        def answer_sample(port: int) -> None:
            logger.info(
                "ready after %.0f s: train + index + serve",
                time.perf_counter() - started,
            )
            _query_sample(f"{server_config.host}:{port}", *sample)

        if serve_forever:
            serve(
                encoder,
                store,
                server_config,
                ready=lambda port: jobs.run_in_background(
                    lambda: answer_sample(port)
                ),
            )
        else:
            server, port = create_server(encoder, store, server_config)
            try:
                answer_sample(port)
            finally:
                server.stop(grace=None)
    finally:
        store.close()


def _sample_photo(
    images: CatalogImages, catalog: str, csv_path: Path | None
) -> tuple[str, bytes]:
    """The first product's ID and photo bytes, as a storefront would send."""
    product = images.products[0]
    if not catalog.startswith(jobs.TFDS_PREFIX):
        image_dir, _ = resolve_catalog(Path(catalog), csv_path)
        path = image_dir / product.file_name
        if path.is_file():
            return product.product_id, path.read_bytes()
    # No file to send (a tfds catalog): send the decoded pixels as a PNG.
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(images.images[0])).save(buffer, format="PNG")
    return product.product_id, buffer.getvalue()


def _query_sample(target: str, product_id: str, photo: bytes) -> None:
    with LookalikeClient(target, timeout=30.0) as client:
        by_image = client.query_by_image(photo, top_k=10)
        by_id = client.query_by_id(product_id, top_k=10)
    first = by_image.results[0].product_id if by_image.results else None
    verdict = "yes" if first == product_id else "no"
    print(
        f"\nQueryByImage with the photo of product {product_id} "
        f"(its own product ranks first: {verdict}):"
    )
    print(format_results(by_image))
    print(f"\nQueryById {product_id}:")
    print(format_results(by_id), flush=True)
