"""The generated catalog (encoder/synthetic.py) loads like the sample."""

from pathlib import Path

import pytest

from encoder.catalog import load_catalog
from encoder.synthetic import ARTICLE_TYPES, write_synthetic_catalog


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory):
    image_dir, csv_path = write_synthetic_catalog(
        tmp_path_factory.mktemp("synthetic"), 20
    )
    return load_catalog(
        image_dir, csv_path, height=80, width=60, cache_dir=None
    )


def test_every_product_loads_with_its_row(synthetic) -> None:
    assert synthetic.summary() == "loaded 20 products, skipped 0"


def test_every_article_type_appears(synthetic) -> None:
    types = {p.attributes["articleType"] for p in synthetic.products}
    assert types == set(ARTICLE_TYPES)


def test_years_are_integers_or_absent(synthetic) -> None:
    years = [p.attributes.get("year") for p in synthetic.products]
    assert None in years and all(isinstance(y, int) for y in years if y)


def test_same_seed_writes_the_same_images(tmp_path: Path) -> None:
    first, _ = write_synthetic_catalog(tmp_path / "a", 5, seed=3)
    second, _ = write_synthetic_catalog(tmp_path / "b", 5, seed=3)
    assert [p.read_bytes() for p in sorted(first.iterdir())] == [
        p.read_bytes() for p in sorted(second.iterdir())
    ]
