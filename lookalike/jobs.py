"""The jobs behind the command line: train, index, serve and the demo.

Each job takes plain arguments and configs, logs its progress and returns
what it produced, so the tests run exactly what the CLI runs.
"""

import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from encoder.catalog import CatalogImages, load_catalog, load_tfds_catalog
from encoder.config import ModelConfig, TrainConfig, save_json
from encoder.encode import Encoder
from encoder.train import TrainResult, split_indices, train_and_evaluate
from indexer.config import IndexConfig
from indexer.job import IndexReport, index_catalog
from indexer.store import VectorStore, open_store
from lookalike.workdir import Workdir, resolve_catalog
from server.app import serve
from server.config import ServerConfig

logger = logging.getLogger(__name__)

# Written next to the model: the products training held out for validation.
HELD_OUT_FILE = "held_out.json"

# tensorflow-datasets catalogs are named "tfds:<name>[:<split>]".
TFDS_PREFIX = "tfds:"


def load_images(
    catalog: str,
    *,
    csv_path: Path | None,
    model_config: ModelConfig,
    workdir: Workdir,
    limit: int | None = None,
) -> CatalogImages:
    """Loads a catalog folder (or a ``tfds:`` dataset) at the model's size."""
    if catalog.startswith(TFDS_PREFIX):
        name, _, split = catalog.removeprefix(TFDS_PREFIX).partition(":")
        images = load_tfds_catalog(
            name,
            split=split or "train",
            height=model_config.image_height,
            width=model_config.image_width,
            limit=limit,
        )
    else:
        image_dir, csv_path = resolve_catalog(Path(catalog), csv_path)
        logger.info(
            "catalog: images in %s, attributes in %s",
            image_dir,
            csv_path or "(no CSV)",
        )
        images = load_catalog(
            image_dir,
            csv_path,
            height=model_config.image_height,
            width=model_config.image_width,
            cache_dir=workdir.cache,
            limit=limit,
        )
    logger.info("catalog: %s", images.summary())
    if not images.products:
        raise ValueError(f"catalog {catalog} holds no readable image")
    return images


def contrastive_labels(catalog: CatalogImages, attribute: str) -> np.ndarray:
    """One int per product for the value of ``attribute`` (-1: none)."""
    values = [p.attributes.get(attribute) for p in catalog.products]
    known = sorted({str(value) for value in values if value is not None})
    if not known:
        columns = sorted(
            {name for p in catalog.products for name in p.attributes}
        )
        raise ValueError(
            f"no product has the attribute {attribute!r} to train with; "
            f"the catalog's attributes are {columns or 'none (no CSV)'} "
            "(--label-attribute picks one, 'none' trains without)"
        )
    number = {value: i for i, value in enumerate(known)}
    labelled = sum(value is not None for value in values)
    logger.info(
        "contrastive labels: %d values of %s on %d of %d products",
        len(known),
        attribute,
        labelled,
        len(values),
    )
    if labelled < len(values) / 2 or len(known) > labelled / 2:
        # Few labelled products, or a value per product (a name, an ID):
        # few same-label pairs, and training is nearly self-supervised.
        logger.warning(
            "%s labels few pairs of products (%d values on %d of %d "
            "products); a category column suits --label-attribute better",
            attribute,
            len(known),
            labelled,
            len(values),
        )
    return np.array(
        [-1 if value is None else number[str(value)] for value in values],
        np.int32,
    )


def train(
    catalog: CatalogImages,
    workdir: Workdir,
    model_config: ModelConfig,
    train_config: TrainConfig,
) -> TrainResult:
    """Trains the autoencoder on a catalog; the model lands in workdir.

    Also records which products training held out for validation, so that
    ``eval`` can measure retrieval on photos the model never trained on.
    """
    labels = None
    if train_config.label_attribute is not None:
        labels = contrastive_labels(catalog, train_config.label_attribute)
    result = train_and_evaluate(
        catalog.images,
        model_config,
        train_config,
        workdir.model,
        labels=labels,
    )
    _, val_idx = split_indices(
        len(catalog.products),
        train_config.validation_fraction,
        train_config.seed,
    )
    held_out = [catalog.products[i].product_id for i in val_idx]
    save_json(workdir.model / HELD_OUT_FILE, {"product_ids": held_out})
    return result


def held_out_split(
    catalog: CatalogImages, workdir: Workdir
) -> tuple[CatalogImages, CatalogImages] | None:
    """(trained-on products, held-out products) of the run's training.

    None when the run recorded no split (trained elsewhere) or none of its
    held-out products is in this catalog.
    """
    path = workdir.model / HELD_OUT_FILE
    if not path.is_file():
        return None
    held_out = set(json.loads(path.read_text())["product_ids"])
    is_held = np.array([p.product_id in held_out for p in catalog.products])
    if not is_held.any():
        return None

    def subset(mask: np.ndarray) -> CatalogImages:
        return CatalogImages(
            images=np.asarray(catalog.images[mask]),
            products=[
                p
                for p, keep in zip(catalog.products, mask, strict=True)
                if keep
            ],
        )

    return subset(~is_held), subset(is_held)


def open_index(
    workdir: Workdir,
    *,
    qdrant_url: str | None = None,
    qdrant_api_key: str | None = None,
    collection: str = IndexConfig.collection,
) -> VectorStore:
    """Opens the run's embedded index, or a Qdrant server when given a URL."""
    if qdrant_url:
        return open_store(
            url=qdrant_url, api_key=qdrant_api_key, collection=collection
        )
    return open_store(path=workdir.index, collection=collection)


def index(
    catalog: CatalogImages,
    workdir: Workdir,
    store: VectorStore,
    config: IndexConfig,
    *,
    rebuild: bool = False,
) -> IndexReport:
    """Encodes a catalog with the run's trained model and indexes it."""
    encoder = Encoder.load(workdir.model)
    return index_catalog(catalog, encoder, store, config, rebuild=rebuild)


def run_server(
    workdir: Workdir,
    store: VectorStore,
    config: ServerConfig,
    *,
    ready: Callable[[int], None] | None = None,
) -> None:
    """Serves the run's model and index until SIGTERM or Ctrl-C."""
    encoder = Encoder.load(workdir.model)
    serve(encoder, store, config, ready=ready)


def run_in_background(target: Callable[[], None]) -> threading.Thread:
    """Runs target in a daemon thread, logging instead of losing errors."""

    def guarded() -> None:
        try:
            target()
        except Exception:
            logger.exception("background task failed")

    thread = threading.Thread(target=guarded, daemon=True)
    thread.start()
    return thread
