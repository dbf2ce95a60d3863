"""``lookalike report``: pictures of a trained run for people, not tests.

Writes PNGs under workdir/report and an index.html that shows them with
captions: how training went (reconstructions, loss curves), what the latent
space looks like (2-D and 3-D scatter plots, products per cluster) and what
a shopper would see (nearest-neighbour strips, which article types get
confused with which).
"""

import html
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from encoder.catalog import CatalogImages
from encoder.encode import Encoder
from evaluation import metrics, plots
from evaluation.evaluate import attribute_labels, nearest_centroid
from indexer.config import IndexConfig
from indexer.store import VectorStore, open_store

logger = logging.getLogger(__name__)

# Attributes the scatter plots are coloured by, next to the cluster.
COLOUR_ATTRIBUTES = ("masterCategory", "subCategory")
CONFUSION_ATTRIBUTE = "articleType"
# Neighbour strips shown when the caller names no products.
DEFAULT_STRIPS = 6


def build_report(
    workdir: Path,
    *,
    catalog: CatalogImages,
    products_to_show: Sequence[str] | None = None,
    store: VectorStore | None = None,
    seed: int = 0,
) -> Path:
    """Draws the report of the run in ``workdir``; returns its index.html.

    Clusters come from the index's k-means centroids (``store``, by default
    the run's embedded index), or from a fresh k-means of the latents when
    there is no index. ``products_to_show`` picks the products of the
    neighbour strips; by default a few are spread over the clusters.
    """
    workdir = Path(workdir)
    if len(catalog.products) < 2:
        raise ValueError(
            f"a report needs at least 2 products, got {len(catalog.products)}"
        )
    report_dir = workdir / "report"
    report_dir.mkdir(parents=True, exist_ok=True)
    model_dir = workdir / "model"
    rng = np.random.default_rng(seed)

    encoder = Encoder.load(model_dir)
    logger.info("encoding %d products for the report", len(catalog.products))
    latents = encoder.encode(catalog.images, progress=True)
    centroids = _centroids(workdir, store, latents, seed)
    clusters = nearest_centroid(latents, centroids)
    product_ids = [product.product_id for product in catalog.products]
    chosen = _products_to_show(products_to_show, product_ids, clusters, rng)

    # (file, title, caption, drawing function); drawn in this order.
    figures: list[tuple[str, str, str, object]] = []
    reconstructions = model_dir / "reconstructions.npz"
    if reconstructions.is_file():
        with np.load(reconstructions) as saved:
            saved = dict(saved)
        epochs = sorted(
            (key for key in saved if key.startswith("epoch_")),
            key=lambda key: int(key.removeprefix("epoch_")),
        )
        if epochs:
            figures += [
                (
                    "reconstructions.png",
                    "Reconstructions",
                    "Validation photos (top) and what the autoencoder "
                    "rebuilds from their latent vectors after the last "
                    "epoch (bottom). Blur is expected: the latent keeps "
                    "shape and colour, not detail.",
                    lambda path: plots.reconstructions(
                        saved["originals"], saved[epochs[-1]], path
                    ),
                ),
                (
                    "reconstruction_epochs.png",
                    "Reconstructions over training",
                    "The same validation photos reconstructed after each "
                    "epoch: left the original, then epoch by epoch.",
                    lambda path: plots.reconstruction_epochs(
                        saved["originals"],
                        [saved[key] for key in epochs],
                        [int(key.removeprefix("epoch_")) for key in epochs],
                        path,
                    ),
                ),
            ]
    history_path = model_dir / "history.json"
    if history_path.is_file():
        history = json.loads(history_path.read_text())
        # Encoder.load above has read this file as a training config.
        trained = json.loads((model_dir / "config.json").read_text())
        label_attribute = trained.get("train", {}).get("label_attribute")
        if history:
            figures.append(
                (
                    "loss.png",
                    "Training curves",
                    "Mean squared reconstruction error (and, when "
                    "trained with one, the contrastive term) per epoch on "
                    "the training photos and on the held-out validation "
                    "photos; the checkpoint kept is the epoch with the "
                    "lowest validation loss.",
                    lambda path: plots.loss_curves(
                        history, path, label_attribute
                    ),
                )
            )

    colourings = {"cluster": [f"cluster {c}" for c in clusters]}
    for attribute in COLOUR_ATTRIBUTES:
        labels = attribute_labels(catalog, attribute)
        if not all(metrics.is_missing(label) for label in labels):
            colourings[attribute] = labels
    figures += [
        (
            "latent_2d.png",
            "Latent space (2-D)",
            "Every product's latent vector projected onto its two principal "
            "components, coloured by k-means cluster and by category. "
            "Products close together here look alike to the model.",
            lambda path: plots.latent_scatter(latents, colourings, path, 2),
        ),
        (
            "latent_3d.png",
            "Latent space (3-D)",
            "The same latent vectors on their first three principal "
            "components.",
            lambda path: plots.latent_scatter(latents, colourings, path, 3),
        ),
        (
            "clusters.png",
            "Products per cluster",
            "For each k-means cluster, the products closest to its centre, "
            "and how many products the cluster holds.",
            lambda path: plots.cluster_grid(
                catalog.images, latents, centroids, clusters, path
            ),
        ),
    ]
    if chosen:
        figures.append(
            (
                "neighbours.png",
                "Nearest neighbours",
                "Left: a product; right: the products whose latent vectors "
                "are nearest to it (exact search, which the index "
                "approximates), with their Euclidean distance and article "
                "type.",
                lambda path: plots.neighbour_strips(
                    catalog, latents, chosen, path
                ),
            )
        )
    types = attribute_labels(catalog, CONFUSION_ATTRIBUTE)
    if sum(not metrics.is_missing(label) for label in types) > 10:
        figures.append(
            (
                "confusion.png",
                "Which article types get mixed up",
                "Rows: the most frequent article types. Each row shows how "
                "the 10 nearest neighbours of that type's products are "
                "spread over article types; a strong diagonal means "
                "look-alikes share the type.",
                lambda path: plots.neighbour_confusion(latents, types, path),
            )
        )

    drawn = []
    for name, title, caption, draw in tqdm(
        figures, desc="drawing report", unit="figure"
    ):
        logger.info("drawing %s", name)
        draw(report_dir / name)
        drawn.append((name, title, caption))

    page = report_dir / "index.html"
    page.write_text(_html(workdir, encoder, catalog, drawn))
    logger.info("report: %d figures and %s", len(drawn), page)
    return page


def _centroids(
    workdir: Path, store: VectorStore | None, latents: np.ndarray, seed: int
) -> np.ndarray:
    """The index's k-means centroids, or new ones when there is none."""
    own_store = store is None
    if own_store and (workdir / "index").is_dir():
        try:
            store = open_store(path=workdir / "index")
        except Exception as error:
            logger.warning("cannot open the index: %s", error)
    try:
        meta = store.load_metadata() if store is not None else None
    finally:
        if own_store and store is not None:
            store.close()
    if meta and meta.get("centroids"):
        centroids = np.asarray(meta["centroids"], dtype=np.float32)
        if centroids.shape[1] == latents.shape[1]:
            return centroids
        logger.warning("the index's centroids do not fit the model's latent")
    from indexer.kmeans import fit_kmeans

    k = min(IndexConfig.num_clusters, len(latents))
    logger.info("no index centroids: clustering the latents into %d", k)
    return np.asarray(fit_kmeans(latents, k, seed=seed).centroids)


def _products_to_show(
    requested: Sequence[str] | None,
    product_ids: list[str],
    clusters: np.ndarray,
    rng: np.random.Generator,
) -> list[int]:
    """Catalog rows of the neighbour strips."""
    if requested:
        rows = {product_id: row for row, product_id in enumerate(product_ids)}
        unknown = [pid for pid in requested if pid not in rows]
        if unknown:
            logger.warning(
                "products not in the catalog, left out of the report: %s",
                unknown,
            )
        chosen = [rows[pid] for pid in requested if pid in rows]
        if chosen:
            return chosen
    # One random product per cluster, round robin until enough.
    members = [
        list(rng.permutation(np.flatnonzero(clusters == c)))
        for c in np.unique(clusters)
    ]
    chosen = []
    while len(chosen) < min(DEFAULT_STRIPS, len(product_ids)):
        for rows_left in members:
            if rows_left and len(chosen) < DEFAULT_STRIPS:
                chosen.append(int(rows_left.pop()))
    return chosen


def _html(
    workdir: Path,
    encoder: Encoder,
    catalog: CatalogImages,
    figures: list[tuple[str, str, str]],
) -> str:
    summary = (
        f"{len(catalog.products)} products; model {encoder.fingerprint} "
        f"with a {encoder.config.latent_dim}-dimensional latent"
    )
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>Lookalike report</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto;"
        "padding:1em;color:#222}img{max-width:100%;border:1px solid #ddd}"
        "figure{margin:2em 0}figcaption{color:#555;margin-top:.4em}"
        "pre{background:#f6f6f6;padding:1em;overflow-x:auto}</style>",
        "</head><body>",
        "<h1>Lookalike report</h1>",
        f"<p>{html.escape(str(workdir))}: {html.escape(summary)}</p>",
    ]
    for name, title, caption in figures:
        parts += [
            "<figure>",
            f"<h2>{html.escape(title)}</h2>",
            f'<img src="{html.escape(name)}" alt="{html.escape(title)}">',
            f"<figcaption>{html.escape(caption)}</figcaption>",
            "</figure>",
        ]
    eval_md = workdir / "eval.md"
    if eval_md.is_file():
        parts += [
            "<h2>Retrieval quality (lookalike eval)</h2>",
            f"<pre>{html.escape(eval_md.read_text())}</pre>",
        ]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
