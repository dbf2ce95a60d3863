"""Loading catalogs from a folder and the decoded-image cache."""

import csv
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from encoder import catalog
from encoder.catalog import CatalogImages, load_catalog, point_id

HEIGHT, WIDTH = 80, 60


def write_image(path: Path, colour=(200, 30, 40), image_format=None) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), colour).save(
        buffer,
        image_format or Image.registered_extensions()[path.suffix.lower()],
    )
    path.write_bytes(buffer.getvalue())


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as file:
        csv.writer(file).writerows([["id", "colour"], *rows])
    return path


def load(image_dir: Path, csv_path: Path | None = None, **options):
    options = {"cache_dir": None, "height": HEIGHT, "width": WIDTH, **options}
    return load_catalog(image_dir, csv_path, **options)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    image_dir = tmp_path / "images"
    image_dir.mkdir()
    return image_dir


def test_small_catalog_loads_every_product(small_catalog) -> None:
    image_dir, csv_path = small_catalog
    loaded = load(image_dir, csv_path)
    assert (loaded.images.shape, loaded.images.dtype) == (
        (60, HEIGHT, WIDTH, 3),
        np.uint8,
    )


def test_small_catalog_has_csv_attributes(small_catalog) -> None:
    image_dir, csv_path = small_catalog
    loaded = load(image_dir, csv_path)
    assert all("articleType" in p.attributes for p in loaded.products)


def test_products_are_in_sorted_id_order(small_catalog) -> None:
    image_dir, csv_path = small_catalog
    ids = [p.product_id for p in load(image_dir, csv_path).products]
    assert ids == sorted(ids)


def test_images_match_their_products(folder: Path) -> None:
    write_image(folder / "b.png", (0, 0, 255))
    write_image(folder / "a.png", (255, 0, 0))
    loaded = load(folder)
    centres = loaded.images[:, HEIGHT // 2, WIDTH // 2].tolist()
    assert centres == [[255, 0, 0], [0, 0, 255]]


def test_duplicate_stems_keep_the_first_file(folder: Path) -> None:
    write_image(folder / "a.png")
    write_image(folder / "a.jpg")
    loaded = load(folder)
    assert [p.file_name for p in loaded.products] == ["a.jpg"]


def test_duplicate_stems_are_counted(folder: Path) -> None:
    write_image(folder / "a.png")
    write_image(folder / "a.jpg")
    assert load(folder).skipped == {catalog.SKIP_DUPLICATE_IMAGE: 1}


@pytest.mark.parametrize("name", ["A.JPG", "b.Jpeg", "c.WebP", "d.PNG"])
def test_extensions_are_case_insensitive(folder: Path, name: str) -> None:
    write_image(folder / name, image_format="PNG")
    assert [p.file_name for p in load(folder).products] == [name]


def test_other_files_are_counted_and_hidden_ones_ignored(folder: Path) -> None:
    (folder / "notes.txt").write_text("hello")
    (folder / ".DS_Store").write_bytes(b"\0")
    (folder / "sub").mkdir()
    write_image(folder / "a.jpg")
    assert load(folder).skipped == {catalog.SKIP_NOT_IMAGE: 1}


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("truncated.jpg", None, "image corrupt"),
        ("garbage.jpg", b"not an image", "image unsupported format"),
        ("empty.png", b"", "image empty"),
    ],
)
def test_broken_images_are_skipped_and_counted(
    folder: Path, name: str, data: bytes | None, reason: str
) -> None:
    write_image(folder / "good.jpg")
    if data is None:
        noise = Image.effect_noise((64, 64), 50).convert("RGB")
        buffer = io.BytesIO()
        noise.save(buffer, "JPEG")
        data = buffer.getvalue()[:300]
    (folder / name).write_bytes(data)
    loaded = load(folder)
    assert ([p.product_id for p in loaded.products], loaded.skipped) == (
        ["good"],
        {reason: 1},
    )


def test_images_without_csv_row_are_kept(tmp_path: Path, folder: Path) -> None:
    write_image(folder / "a.jpg")
    write_image(folder / "b.jpg")
    loaded = load(folder, write_csv(tmp_path / "c.csv", [["a", "red"]]))
    assert [p.attributes for p in loaded.products] == [{"colour": "red"}, {}]


def test_images_without_csv_row_are_counted(
    tmp_path: Path, folder: Path
) -> None:
    write_image(folder / "a.jpg")
    write_image(folder / "b.jpg")
    loaded = load(folder, write_csv(tmp_path / "c.csv", [["a", "red"]]))
    assert loaded.skipped == {catalog.NO_CSV_ROW: 1}


def test_csv_rows_without_image_are_counted(
    tmp_path: Path, folder: Path
) -> None:
    write_image(folder / "a.jpg")
    rows = [["a", "red"], ["x", "blue"], ["y", "blue"]]
    loaded = load(folder, write_csv(tmp_path / "c.csv", rows))
    assert loaded.skipped == {catalog.SKIP_ROW_WITHOUT_IMAGE: 2}


def test_limit_takes_the_first_ids(folder: Path) -> None:
    for name in ["d", "b", "a", "c"]:
        write_image(folder / f"{name}.png")
    loaded = load(folder, limit=2)
    assert [p.product_id for p in loaded.products] == ["a", "b"]


def test_limit_replaces_broken_images(folder: Path) -> None:
    for name in ["a", "c", "d"]:
        write_image(folder / f"{name}.png")
    (folder / "b.png").write_bytes(b"broken")
    loaded = load(folder, limit=2)
    assert [p.product_id for p in loaded.products] == ["a", "c"]


def test_empty_folder_gives_an_empty_catalog(folder: Path) -> None:
    loaded = load(folder)
    assert loaded.images.shape == (0, HEIGHT, WIDTH, 3)


@pytest.mark.parametrize(
    ("image_dir", "csv_name", "limit", "message"),
    [
        ("absent", None, None, "does not exist"),
        ("images", "absent.csv", None, "does not exist"),
        ("images", None, -1, "non-negative"),
    ],
)
def test_bad_arguments_are_refused(
    tmp_path: Path,
    folder: Path,
    image_dir: str,
    csv_name: str | None,
    limit: int | None,
    message: str,
) -> None:
    csv_path = tmp_path / csv_name if csv_name else None
    with pytest.raises(ValueError, match=message):
        load(tmp_path / image_dir, csv_path, limit=limit)


def test_summary_is_one_line_with_reasons() -> None:
    loaded = CatalogImages(
        images=np.zeros((2, HEIGHT, WIDTH, 3), np.uint8),
        products=[catalog.Product("a", "a.jpg", {})] * 2,
        skipped=catalog.collections.Counter(
            {"image corrupt": 2, catalog.NO_CSV_ROW: 1, "duplicate image id": 1}
        ),
    )
    assert loaded.summary() == (
        "loaded 2 products (1 without a CSV row), skipped 3: "
        "duplicate image id=1, image corrupt=2"
    )


def test_pool_decodes_like_a_single_process(
    small_catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    image_dir, csv_path = small_catalog
    serial = load(image_dir, csv_path)
    monkeypatch.setattr(catalog, "_MIN_IMAGES_FOR_POOL", 10)
    pooled = load(image_dir, csv_path)
    np.testing.assert_array_equal(pooled.images, serial.images)


# The cache.


def forbid_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(catalog, "_decode_files", fail)
    monkeypatch.setattr(catalog, "decode_image_file", fail)


def test_cache_hit_does_not_decode(
    small_catalog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image_dir, csv_path = small_catalog
    first = load(image_dir, csv_path, cache_dir=tmp_path)
    forbid_decoding(monkeypatch)
    second = load(image_dir, csv_path, cache_dir=tmp_path)
    np.testing.assert_array_equal(second.images, first.images)


def test_cache_hit_restores_products_and_counts(
    tmp_path: Path, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_image(folder / "a.jpg")
    (folder / "b.jpg").write_bytes(b"broken")
    csv_path = write_csv(tmp_path / "c.csv", [["a", "7"], ["x", "red"]])
    first = load(folder, csv_path, cache_dir=tmp_path / "cache")
    forbid_decoding(monkeypatch)
    second = load(folder, csv_path, cache_dir=tmp_path / "cache")
    assert (second.products, second.skipped) == (
        first.products,
        first.skipped,
    )


def test_cached_images_are_a_read_only_memmap(
    small_catalog, tmp_path: Path
) -> None:
    image_dir, csv_path = small_catalog
    load(image_dir, csv_path, cache_dir=tmp_path)
    images = load(image_dir, csv_path, cache_dir=tmp_path).images
    assert isinstance(images, np.memmap) and not images.flags.writeable


def test_changed_image_misses_the_cache(tmp_path: Path, folder: Path) -> None:
    write_image(folder / "a.png", (255, 0, 0))
    load(folder, cache_dir=tmp_path / "cache")
    write_image(folder / "a.png", (0, 0, 255))
    reloaded = load(folder, cache_dir=tmp_path / "cache")
    assert reloaded.images[0, HEIGHT // 2, WIDTH // 2].tolist() == [0, 0, 255]


def change_csv(folder: Path, csv_path: Path) -> dict:
    write_csv(csv_path, [["a", "blue"]])
    return {}


def add_image(folder: Path, csv_path: Path) -> dict:
    write_image(folder / "c.png")
    return {}


def rename_image(folder: Path, csv_path: Path) -> dict:
    shutil.move(folder / "b.png", folder / "z.png")
    return {}


@pytest.mark.parametrize(
    "change",
    [
        change_csv,
        add_image,
        rename_image,
        lambda folder, csv_path: {"limit": 1},
        lambda folder, csv_path: {"height": 40},
    ],
    ids=["csv", "new image", "renamed image", "limit", "size"],
)
def test_any_input_change_misses_the_cache(
    tmp_path: Path, folder: Path, change
) -> None:
    write_image(folder / "a.png")
    write_image(folder / "b.png")
    csv_path = write_csv(tmp_path / "c.csv", [["a", "red"]])
    load(folder, csv_path, cache_dir=tmp_path / "cache")
    options = change(folder, csv_path)
    load(folder, csv_path, cache_dir=tmp_path / "cache", **options)
    assert len(list((tmp_path / "cache").glob("*.json"))) == 2


def test_interrupted_decoding_leaves_no_cache(
    small_catalog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image_dir, csv_path = small_catalog
    calls = []

    def decode_then_fail(path, **kwargs):
        calls.append(path)
        if len(calls) > 5:
            raise KeyboardInterrupt
        return np.zeros((HEIGHT, WIDTH, 3), np.uint8)

    monkeypatch.setattr(catalog, "decode_image_file", decode_then_fail)
    with pytest.raises(KeyboardInterrupt):
        load(image_dir, csv_path, cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_corrupt_cache_is_rebuilt(small_catalog, tmp_path: Path) -> None:
    image_dir, csv_path = small_catalog
    first = np.array(load(image_dir, csv_path, cache_dir=tmp_path).images)
    for path in tmp_path.glob("*.memmap"):
        # A new file, not truncation: truncating a mapped file is SIGBUS.
        path.unlink()
        path.write_bytes(b"short")
    second = load(image_dir, csv_path, cache_dir=tmp_path)
    np.testing.assert_array_equal(second.images, first)


# Point IDs.

SKUS = ["B07-XYZ", "15970", "b07-xyz", "15970 ", "Ünïcødé-商品", ""]


@pytest.mark.parametrize("sku", SKUS)
def test_point_id_is_deterministic_uuid(sku: str) -> None:
    assert point_id(sku) == point_id(sku) and len(point_id(sku)) == 36


def test_point_ids_are_distinct() -> None:
    assert len({point_id(sku) for sku in SKUS}) == len(SKUS)


def test_point_id_is_stable_across_releases() -> None:
    # Stored indexes depend on it; a change would orphan every point.
    assert point_id("15970") == "c70bdeee-97ab-5f05-a63c-c02cb1026ca4"
