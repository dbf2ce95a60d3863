"""``evaluate_run`` and ``build_report`` on a tiny trained and indexed run.

One module-wide run: a small autoencoder trained for one epoch on 40
generated products, indexed into an embedded Qdrant Edge store.
"""

import json
from pathlib import Path

import pytest
from PIL import Image

from encoder.catalog import CatalogImages, load_catalog
from encoder.config import ModelConfig, TrainConfig
from encoder.encode import Encoder
from encoder.synthetic import write_synthetic_catalog
from evaluation.evaluate import evaluate_run, format_table
from evaluation.report import build_report
from indexer.config import IndexConfig
from indexer.job import index_catalog
from indexer.store import open_store

# A narrow model: the test is about the evaluation, not the model, and a
# small one compiles and trains in seconds.
MODEL = ModelConfig(
    stem_channels=8,
    block_channels=(16, 32),
    decoder_channels=(32, 16, 8),
)
FIGURES = (
    "reconstructions.png",
    "reconstruction_epochs.png",
    "loss.png",
    "latent_2d.png",
    "latent_3d.png",
    "clusters.png",
    "neighbours.png",
    "confusion.png",
)

# Trains a model, as the end-to-end test does.
pytestmark = pytest.mark.slow


def _load(root: Path) -> CatalogImages:
    return load_catalog(
        root / "images",
        root / "styles.csv",
        height=MODEL.image_height,
        width=MODEL.image_width,
        cache_dir=None,
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, CatalogImages]:
    """(workdir, catalog) of a trained and indexed run."""
    workdir = tmp_path_factory.mktemp("run")
    catalog_dir = tmp_path_factory.mktemp("catalog")
    write_synthetic_catalog(catalog_dir, 40)
    catalog = _load(catalog_dir)
    from encoder.train import train_and_evaluate

    train_and_evaluate(
        catalog.images,
        MODEL,
        TrainConfig(epochs=1, batch_size=16),
        workdir / "model",
    )
    store = open_store(path=workdir / "index")
    try:
        index_catalog(
            catalog,
            Encoder.load(workdir / "model"),
            store,
            IndexConfig(num_clusters=3),
        )
    finally:
        store.close()
    return workdir, catalog


@pytest.fixture(scope="module")
def results(run) -> dict:
    workdir, catalog = run
    return evaluate_run(workdir, catalog=catalog, pca_dims=(4,))


@pytest.fixture(scope="module")
def report(run, results) -> Path:
    workdir, catalog = run
    return build_report(workdir, catalog=catalog)


def test_eval_json_holds_the_returned_results(run, results):
    workdir, _ = run
    saved = json.loads((workdir / "eval.json").read_text())
    assert saved["leave_one_out"] == results["leave_one_out"]


def test_every_method_is_measured_for_every_attribute(results):
    methods = {
        attribute: set(entry["methods"])
        for attribute, entry in results["leave_one_out"].items()
    }
    expected = {f"autoencoder-{MODEL.latent_dim}", "pixels", "pca-4"}
    assert methods == {"articleType": expected, "subCategory": expected}


def test_pixels_beat_chance_on_generated_shapes(results):
    # Each generated article type has its own silhouette.
    entry = results["leave_one_out"]["articleType"]
    assert entry["methods"]["pixels"]["map@10"] > entry["chance"]["map@10"]


def test_cluster_quality_uses_the_index_centroids(results):
    clusters = results["clusters"]
    assert (clusters["num_clusters"], sum(clusters["cluster_sizes"])) == (
        3,
        40,
    )


def test_index_recall_is_a_share(results):
    assert 0.0 <= results["index"]["recall@10"] <= 1.0


def test_table_has_a_row_per_method_and_chance(results):
    table = format_table(results)
    rows = [
        line.split("|")[1].strip()
        for line in table.splitlines()
        if line.startswith("|")
    ]
    assert {"pixels", "pca-4", "chance"} <= set(rows)


def test_held_out_queries_are_searched_against_the_catalog(run, tmp_path):
    workdir, catalog = run
    write_synthetic_catalog(tmp_path, 12, seed=1)
    queries = _load(tmp_path)
    held_out = evaluate_run(
        workdir,
        catalog=catalog,
        queries=queries,
        include_baselines=False,
        recall_queries=5,
    )
    article = held_out["held_out"]["articleType"]["methods"]
    assert next(iter(article.values()))["num_queries"] == 12


def test_too_large_k_is_refused(run):
    workdir, catalog = run
    with pytest.raises(ValueError, match="needs more than 50"):
        evaluate_run(workdir, catalog=catalog, ks=(1, 50))


@pytest.mark.parametrize("name", FIGURES)
def test_report_draws_each_figure(report, name):
    with Image.open(report.parent / name) as image:
        assert image.width > 100 and image.height > 100


def test_report_page_shows_every_figure(report):
    page = report.read_text()
    assert all(f'src="{name}"' in page for name in FIGURES)


def test_report_page_includes_the_eval_table(report):
    assert "mAP@10" in report.read_text()


def test_report_skips_unknown_products_to_show(run, tmp_path):
    workdir, catalog = run
    first = catalog.products[0].product_id
    page = build_report(
        workdir, catalog=catalog, products_to_show=["no-such-id", first]
    )
    assert (page.parent / "neighbours.png").is_file()


@pytest.mark.parametrize("contrastive", [False, True])
def test_loss_curves_draw_one_panel_per_loss(tmp_path, contrastive):
    from evaluation.plots import loss_curves

    history = [
        {"epoch": 1, "train_loss": 0.05, "val_loss": 0.06},
        {"epoch": 2, "train_loss": 0.03, "val_loss": 0.04},
    ]
    if contrastive:
        for entry, term in zip(history, (3.0, 2.0), strict=True):
            entry.update(
                train_reconstruction=entry["train_loss"],
                val_reconstruction=entry["val_loss"],
                train_contrastive=term,
                val_contrastive=term + 0.5,
            )
    loss_curves(history, tmp_path / "loss.png")
    width, height = Image.open(tmp_path / "loss.png").size
    # A second panel for the contrastive term doubles the width.
    assert (width > 2.5 * height) == contrastive


def test_loss_curves_say_when_training_counted_attribute_pairs(
    tmp_path, monkeypatch
):
    from evaluation import plots

    history = [
        {
            "epoch": 1,
            "train_loss": 1.0,
            "val_loss": 1.5,
            "train_contrastive": 2.0,
            "val_contrastive": 3.0,
        }
    ]
    legends = []

    def keep_legends(fig, path):
        for ax in fig.axes:
            legends.append([t.get_text() for t in ax.get_legend().get_texts()])
        plots.plt.close(fig)

    monkeypatch.setattr(plots, "_save", keep_legends)
    plots.loss_curves(history, tmp_path / "loss.png", "articleType")
    reconstruction, contrastive = legends
    assert reconstruction[:2] == ["training", "validation"]
    assert "same-articleType pairs" in contrastive[0]
    assert "photo pairs only" in contrastive[1]
