"""Loading a product catalog: photos named by product ID plus a CSV.

A catalog is a folder of JPEG/PNG/WebP photos whose file stem is the
product ID and an optional CSV with an ``id`` column whose other columns are
product attributes. ``load_catalog`` decodes the photos into one uint8
array, keeps going past every bad file or row (counting it by reason), and
caches the result as a memory-mapped file keyed by the catalog's content.
"""

import collections
import csv
import dataclasses
import hashlib
import io
import json
import logging
import multiprocessing
import os
import re
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from concurrent import futures
from pathlib import Path
from typing import Any

import numpy as np
import tqdm

from encoder import images as images_lib
from encoder.images import decode_image_file

logger = logging.getLogger(__name__)

# Bump when parsing or the cache layout changes; together with
# images.PREPROCESS_VERSION it keys the cache.
CATALOG_VERSION = 1

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp"})
ID_COLUMN = "id"
# Values that mean "unknown"; they are left out of the attributes.
MISSING_VALUES = frozenset({"", "NA"})
# The index stores these next to the attributes, so CSV columns with these
# names would overwrite them.
RESERVED_COLUMNS = frozenset({"product_id", "file_name", "cluster"})

# Reasons counted in CatalogImages.skipped.
SKIP_NOT_IMAGE = "not an image file"
SKIP_DUPLICATE_IMAGE = "duplicate image id"
SKIP_MALFORMED_ROW = "malformed CSV row"
SKIP_FIELD_COUNT = "wrong number of CSV fields"
SKIP_MISSING_ID = "CSV row without id"
SKIP_DUPLICATE_ROW = "duplicate CSV id"
SKIP_ROW_WITHOUT_IMAGE = "CSV row without image"
# Not a skip: the image is kept, without attributes.
NO_CSV_ROW = "no CSV row"

# Product IDs become Qdrant point IDs through uuid5 in this namespace.
_POINT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "lookalike/product")
# Below this many images, starting worker processes costs more than it saves.
_MIN_IMAGES_FOR_POOL = 256
_CHUNK_SIZE = 32
_INT64_MAX = 2**63 - 1
_INT_PATTERN = re.compile(r"[+-]?(0|[1-9][0-9]*)")
# Leading zeros mark codes ("007"), which must stay strings.
_CODE_PATTERN = re.compile(r"[+-]?0[0-9]+")
_FLOAT_PATTERN = re.compile(
    r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?"
)

Attributes = dict[str, str | int | float]
# Pixels, or None with the failure's reason and message.
_DecodeResult = tuple[np.ndarray | None, str | None, str | None]


@dataclasses.dataclass(frozen=True)
class Product:
    """One catalog entry; attributes hold the CSV columns other than id."""

    product_id: str
    file_name: str
    attributes: Attributes


def point_id(product_id: str) -> str:
    """The Qdrant point ID of a product: a deterministic UUID string.

    Qdrant accepts only unsigned integers and UUIDs as point IDs, while
    store SKUs are arbitrary strings ("B07-XYZ", "15970", unicode).
    """
    return str(uuid.uuid5(_POINT_NAMESPACE, product_id))


@dataclasses.dataclass
class CatalogImages:
    """Decoded photos and their products, in the same order.

    ``skipped`` counts what was left out, by reason; its one non-skip entry,
    NO_CSV_ROW, counts images kept without attributes because the CSV had no
    row for them.
    """

    images: np.ndarray  # uint8 [N, H, W, 3], may be a read-only np.memmap
    products: list[Product]
    skipped: collections.Counter[str] = dataclasses.field(
        default_factory=collections.Counter
    )

    def summary(self) -> str:
        """One line: how many were loaded, skipped, and why."""
        skipped = {
            reason: count
            for reason, count in self.skipped.items()
            if reason != NO_CSV_ROW and count
        }
        line = f"loaded {len(self.products)} products"
        if self.skipped.get(NO_CSV_ROW):
            line += f" ({self.skipped[NO_CSV_ROW]} without a CSV row)"
        line += f", skipped {sum(skipped.values())}"
        if skipped:
            line += ": " + ", ".join(
                f"{reason}={count}" for reason, count in sorted(skipped.items())
            )
        return line


def load_catalog(
    image_dir: Path,
    csv_path: Path | None,
    *,
    height: int,
    width: int,
    cache_dir: Path | None,
    limit: int | None = None,
) -> CatalogImages:
    """Loads and decodes a catalog, from the cache when nothing changed.

    ``limit`` keeps the first N decodable products in sorted ID order, so a
    limited run is deterministic. Bad images, bad CSV rows and mismatches
    between the two are skipped and counted, never raised.

    Large catalogs are decoded in worker processes started with "spawn", so
    a script calling this needs the usual ``if __name__ == "__main__":``
    guard (without it, decoding falls back to one process).
    """
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise ValueError(f"image folder {image_dir} does not exist")
    if csv_path is not None and not Path(csv_path).is_file():
        raise ValueError(f"CSV file {csv_path} does not exist")
    if limit is not None and (not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be a non-negative integer, got {limit!r}")

    skipped: collections.Counter[str] = collections.Counter()
    files = _list_images(image_dir, skipped)
    csv_bytes = Path(csv_path).read_bytes() if csv_path is not None else None

    # The key covers every input byte, so a copied or re-checked-out
    # catalog still hits and an edited photo never does.
    key = None
    if cache_dir is not None:
        key = _cache_key(files, csv_bytes, height, width, limit)
        cached = _read_cache(Path(cache_dir), key, height, width)
        if cached is not None:
            logger.info("catalog cache hit: %s", cached.summary())
            return cached

    rows: dict[str, Attributes] = {}
    if csv_bytes is not None:
        rows = parse_csv(csv_bytes, skipped)
        _count(skipped, SKIP_ROW_WITHOUT_IMAGE, len(rows.keys() - files.keys()))

    candidates = [
        Product(product_id, path.name, rows.get(product_id, {}))
        for product_id, path in sorted(files.items())
    ]
    wanted = len(candidates) if limit is None else min(limit, len(candidates))

    start = time.perf_counter()
    if cache_dir is not None:
        result = _decode_to_cache(
            image_dir, candidates, wanted, height, width, Path(cache_dir), key
        )
    else:
        result = _decode_to_memory(image_dir, candidates, wanted, height, width)
    images, products, decode_skipped = result
    seconds = time.perf_counter() - start
    skipped.update(decode_skipped)
    if csv_bytes is not None:
        without_row = sum(p.product_id not in rows for p in products)
        _count(skipped, NO_CSV_ROW, without_row)

    catalog = CatalogImages(images=images, products=products, skipped=skipped)
    if cache_dir is not None:
        _write_sidecar(Path(cache_dir), key, catalog)
    logger.info(
        "decoded %d images in %.1fs (%.0f images/s); %s",
        len(products),
        seconds,
        len(products) / seconds if seconds > 0 else 0.0,
        catalog.summary(),
    )
    return catalog


def parse_csv(
    data: bytes, skipped: collections.Counter[str]
) -> dict[str, Attributes]:
    """Parses catalog CSV bytes into attributes by product ID.

    Bad rows are counted in ``skipped`` and left out; a missing ``id``
    column is an error, since then no row can be used.
    """
    text = data.decode("utf-8-sig", errors="replace")
    lines = _RecordingLines(io.StringIO(text, newline=""))
    header = _read_header(lines)
    id_index = header.index(ID_COLUMN)
    kept = [
        (index, name)
        for index, name in enumerate(header)
        if index != id_index and name and name not in RESERVED_COLUMNS
    ]
    dropped = sorted(set(header) & RESERVED_COLUMNS)
    if dropped:
        logger.warning(
            "ignoring CSV columns %s: the index uses these names", dropped
        )

    raw: dict[str, list[str]] = {}
    for fields in _records(lines, len(header), skipped):
        product_id = fields[id_index].strip()
        if not product_id:
            skipped[SKIP_MISSING_ID] += 1
        elif product_id in raw:
            skipped[SKIP_DUPLICATE_ROW] += 1
        else:
            raw[product_id] = fields

    # Types are decided per column, so that every product stores a column
    # with the same type and the store can index it.
    parsers = {
        name: _column_parser(raw[pid][index].strip() for pid in raw)
        for index, name in kept
    }
    rows: dict[str, Attributes] = {}
    for product_id, fields in raw.items():
        attributes: Attributes = {}
        for index, name in kept:
            value = fields[index].strip()
            if value not in MISSING_VALUES:
                attributes[name] = parsers[name](value)
        rows[product_id] = attributes
    return rows


def load_tfds_catalog(
    name: str,
    *,
    split: str = "train",
    height: int,
    width: int,
    limit: int | None = None,
) -> CatalogImages:
    """Loads a TensorFlow Datasets image dataset as a catalog.

    Product IDs are "<name>-<index>" and the one attribute is "label" (the
    class name when the dataset names its classes). Needs the optional
    ``tfds`` extra and a prepared dataset (or network access to prepare it).
    """
    from encoder import tfds_source

    return tfds_source.load_tfds_catalog(
        name, split=split, height=height, width=width, limit=limit
    )


class _RecordingLines:
    """A line iterator that remembers the lines of the current record.

    Lets the parser re-read a failed multi-line record line by line, so one
    stray opening quote costs one row rather than every row up to the next
    quote.
    """

    def __init__(self, lines: Iterable[str]) -> None:
        self._lines = iter(lines)
        self.consumed: list[str] = []

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        line = next(self._lines)
        self.consumed.append(line)
        return line


def _read_header(lines: _RecordingLines) -> list[str]:
    try:
        header = next(csv.reader(lines, strict=True))
    except StopIteration:
        raise ValueError("CSV file is empty; expected a header row") from None
    except csv.Error as error:
        raise ValueError(f"CSV header row is malformed: {error}") from None
    header = [name.strip() for name in header]
    if ID_COLUMN not in header:
        raise ValueError(
            f"CSV has no {ID_COLUMN!r} column; found columns {header}"
        )
    repeated = sorted(
        name
        for name, count in collections.Counter(header).items()
        if name and count > 1
    )
    if repeated:
        raise ValueError(f"CSV header repeats columns {repeated}")
    return header


def _records(
    lines: _RecordingLines, num_fields: int, skipped: collections.Counter[str]
) -> Iterator[list[str]]:
    """Yields well-formed records, counting and dropping the others."""
    reader = csv.reader(lines, strict=True)
    while True:
        lines.consumed = []
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error:
            fields = None
        if fields is not None and len(fields) == num_fields:
            yield fields
            continue
        if fields == []:
            # A blank line.
            continue
        if len(lines.consumed) > 1:
            # A bad quote swallowed the lines after it; read each on its own.
            for line in lines.consumed:
                yield from _single_line_record(line, num_fields, skipped)
        elif fields is None:
            skipped[SKIP_MALFORMED_ROW] += 1
        else:
            skipped[SKIP_FIELD_COUNT] += 1


def _single_line_record(
    line: str, num_fields: int, skipped: collections.Counter[str]
) -> Iterator[list[str]]:
    try:
        fields = next(csv.reader([line], strict=True), [])
    except csv.Error:
        skipped[SKIP_MALFORMED_ROW] += 1
        return
    if not fields:
        return
    if len(fields) != num_fields:
        skipped[SKIP_FIELD_COUNT] += 1
        return
    yield fields


def _count(counter: collections.Counter[str], reason: str, count: int) -> None:
    # Zero counts would show up as empty reasons in summaries and metadata.
    if count:
        counter[reason] += count


def _column_parser(values: Iterable[str]) -> Any:
    present = [value for value in values if value not in MISSING_VALUES]
    if present and all(_is_int(value) for value in present):
        return int
    if present and all(_is_float(value) for value in present):
        return float
    return str


def _is_float(value: str) -> bool:
    return bool(
        _FLOAT_PATTERN.fullmatch(value)
    ) and not _CODE_PATTERN.fullmatch(value)


def _is_int(value: str) -> bool:
    return bool(_INT_PATTERN.fullmatch(value)) and abs(int(value)) <= _INT64_MAX


def _list_images(
    image_dir: Path, skipped: collections.Counter[str]
) -> dict[str, Path]:
    """Maps product ID to image path; the first file in name order wins."""
    files: dict[str, Path] = {}
    for path in sorted(image_dir.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            skipped[SKIP_NOT_IMAGE] += 1
        elif path.stem in files:
            skipped[SKIP_DUPLICATE_IMAGE] += 1
        else:
            files[path.stem] = path
    return files


def _decode_to_memory(
    image_dir: Path,
    candidates: Sequence[Product],
    wanted: int,
    height: int,
    width: int,
) -> tuple[np.ndarray, list[Product], collections.Counter[str]]:
    images = np.empty((wanted, height, width, 3), dtype=np.uint8)
    products: list[Product] = []
    skipped: collections.Counter[str] = collections.Counter()
    for product, pixels in _decode_products(
        image_dir, candidates, wanted, height, width, skipped
    ):
        images[len(products)] = pixels
        products.append(product)
    return images[: len(products)], products, skipped


def _decode_to_cache(
    image_dir: Path,
    candidates: Sequence[Product],
    wanted: int,
    height: int,
    width: int,
    cache_dir: Path,
    key: str,
) -> tuple[np.ndarray, list[Product], collections.Counter[str]]:
    cache_dir.mkdir(parents=True, exist_ok=True)
    final = cache_dir / f"catalog-{key}.memmap"
    # Rows are appended in order and the file renamed only when complete,
    # so an interrupted run leaves a stray temporary file, not a bad cache.
    tmp = final.with_name(f"{final.name}.{os.getpid()}.tmp")
    products: list[Product] = []
    skipped: collections.Counter[str] = collections.Counter()
    try:
        with tmp.open("wb") as file:
            for product, pixels in _decode_products(
                image_dir, candidates, wanted, height, width, skipped
            ):
                file.write(pixels.tobytes())
                products.append(product)
            file.flush()
            os.fsync(file.fileno())
        tmp.replace(final)
    finally:
        tmp.unlink(missing_ok=True)
    return _map_images(final, len(products), height, width), products, skipped


def _decode_products(
    image_dir: Path,
    candidates: Sequence[Product],
    wanted: int,
    height: int,
    width: int,
    skipped: collections.Counter[str],
) -> Iterator[tuple[Product, np.ndarray]]:
    """Decodes candidates in order until ``wanted`` of them succeed."""
    progress = tqdm.tqdm(
        total=wanted, desc="decoding", unit="img", disable=None
    )
    position = 0
    found = 0
    with progress:
        # Each failure is replaced by the next candidate, so a limit still
        # yields `limit` products when enough decodable ones exist.
        while found < wanted and position < len(candidates):
            batch = candidates[position : position + wanted - found]
            position += len(batch)
            paths = [image_dir / product.file_name for product in batch]
            results = _decode_files(paths, height, width)
            for product, result in zip(batch, results, strict=True):
                pixels, reason, message = result
                if pixels is None:
                    logger.warning("skipping image: %s", message)
                    skipped[f"image {reason}"] += 1
                else:
                    found += 1
                    progress.update(1)
                    yield product, pixels


def _decode_files(
    paths: Sequence[Path], height: int, width: int
) -> Iterator[_DecodeResult]:
    """Decodes files in order, in worker processes when there are many."""
    jobs = [(path, height, width) for path in paths]
    processes = min(os.cpu_count() or 1, len(jobs) // _MIN_IMAGES_FOR_POOL)
    if processes < 2:
        yield from map(_decode_job, jobs)
        return
    # spawn, not fork: the parent may have started JAX's threads, and
    # forking a multithreaded process can deadlock. An executor rather than
    # multiprocessing.Pool, because a Pool whose workers die (killed for
    # memory, or a script without a __main__ guard) waits forever, while an
    # executor reports it and we finish in this process.
    executor = futures.ProcessPoolExecutor(
        processes, mp_context=multiprocessing.get_context("spawn")
    )
    done = 0
    try:
        for result in executor.map(_decode_job, jobs, chunksize=_CHUNK_SIZE):
            done += 1
            yield result
    except futures.process.BrokenProcessPool as error:
        logger.warning(
            "decoding workers stopped (%s); decoding the remaining %d "
            "images in this process",
            error,
            len(jobs) - done,
        )
        yield from map(_decode_job, jobs[done:])
    finally:
        # Cancelled, not awaited, when the caller stops early.
        executor.shutdown(wait=True, cancel_futures=True)


def _decode_job(job: tuple[Path, int, int]) -> _DecodeResult:
    # Runs in a worker process: failures travel back as values, to be
    # counted and logged by the parent.
    path, height, width = job
    try:
        pixels = decode_image_file(path, height=height, width=width)
    except images_lib.ImageError as error:
        return None, error.reason, str(error)
    return pixels, None, None


def _cache_key(
    files: dict[str, Path],
    csv_bytes: bytes | None,
    height: int,
    width: int,
    limit: int | None,
) -> str:
    digest = hashlib.blake2b(digest_size=16)
    settings = {
        "catalog_version": CATALOG_VERSION,
        "preprocess_version": images_lib.PREPROCESS_VERSION,
        "height": height,
        "width": width,
        "limit": limit,
    }
    digest.update(json.dumps(settings, sort_keys=True).encode())
    digest.update(b"csv" + (csv_bytes if csv_bytes is not None else b"<none>"))
    for product_id, path in sorted(files.items()):
        digest.update(f"\0{product_id}\0{path.name}\0".encode())
        try:
            digest.update(hashlib.blake2b(path.read_bytes()).digest())
        except OSError:
            # Unreadable now; decoding will count it. Key it apart anyway.
            digest.update(b"<unreadable>")
    return digest.hexdigest()


def _read_cache(
    cache_dir: Path, key: str, height: int, width: int
) -> CatalogImages | None:
    sidecar = cache_dir / f"catalog-{key}.json"
    if not sidecar.is_file():
        return None
    try:
        meta = json.loads(sidecar.read_text())
        products = [
            Product(product_id, file_name, attributes)
            for product_id, file_name, attributes in meta["products"]
        ]
        images = _map_images(
            cache_dir / f"catalog-{key}.memmap", len(products), height, width
        )
        skipped = collections.Counter(meta["skipped"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        logger.warning("ignoring unusable catalog cache %s: %s", sidecar, error)
        return None
    return CatalogImages(images=images, products=products, skipped=skipped)


def _write_sidecar(cache_dir: Path, key: str, catalog: CatalogImages) -> None:
    # Written last and atomically: its presence marks a complete cache entry.
    sidecar = cache_dir / f"catalog-{key}.json"
    meta = {
        "catalog_version": CATALOG_VERSION,
        "products": [
            [product.product_id, product.file_name, product.attributes]
            for product in catalog.products
        ],
        "skipped": dict(catalog.skipped),
    }
    tmp = sidecar.with_name(f"{sidecar.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(meta))
    tmp.replace(sidecar)
    # TODO: old cache entries are never evicted; delete cache_dir to reclaim
    # space. Fine while catalogs are few and a cache is ~14 KB per image.


def _map_images(path: Path, count: int, height: int, width: int) -> np.ndarray:
    shape = (count, height, width, 3)
    if count == 0:
        # np.memmap cannot map an empty file.
        return np.empty(shape, dtype=np.uint8)
    expected = count * height * width * 3
    actual = path.stat().st_size
    if actual != expected:
        raise ValueError(f"{path} holds {actual} bytes, expected {expected}")
    return np.memmap(path, dtype=np.uint8, mode="r", shape=shape)
