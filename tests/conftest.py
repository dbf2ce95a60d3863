"""Fixtures shared by the test suite."""

import csv
from pathlib import Path

import pytest

from encoder.synthetic import write_synthetic_catalog

# Read-only sample photos; tests fall back to generated products without it.
SAMPLE_DIR = (
    Path(__file__).resolve().parents[1] / "../shared/datasets/fashion-products"
).resolve()
SMALL_CATALOG_SIZE = 60


@pytest.fixture(scope="session")
def small_catalog(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, Path]:
    """A catalog folder of about 60 products: (image_dir, csv_path).

    Real photos and CSV rows from the sample catalog when it is present,
    spread evenly over it so that many article types appear (its first rows
    are mostly T-shirts); generated products otherwise.
    """
    root = tmp_path_factory.mktemp("small_catalog")
    if not (SAMPLE_DIR / "styles.csv").is_file():
        return write_synthetic_catalog(root, SMALL_CATALOG_SIZE)

    with (SAMPLE_DIR / "styles.csv").open(newline="") as file:
        header, *rows = list(csv.reader(file))
    rows = [
        row
        for row in rows
        if (SAMPLE_DIR / "images" / f"{row[0]}.jpg").is_file()
    ]
    stride = max(1, len(rows) // SMALL_CATALOG_SIZE)
    rows = rows[::stride][:SMALL_CATALOG_SIZE]

    image_dir = root / "images"
    image_dir.mkdir()
    for row in rows:
        source = SAMPLE_DIR / "images" / f"{row[0]}.jpg"
        (image_dir / source.name).symlink_to(source)
    csv_path = root / "styles.csv"
    with csv_path.open("w", newline="") as file:
        csv.writer(file).writerows([header, *rows])
    return image_dir, csv_path
