"""Lookalike's benchmark: model, indexing and gRPC serving in one run.

  python -m benchmarks.run [--quick] [--out benchmarks/results]
                           [--workdir runs/demo] [--scratch runs/bench]
                           [--no-keras]

Writes OUT/results.json and OUT/results.md; decoded photos, a model it had
to train and the temporary indexes live in SCRATCH. Sections:

1. encoding (batch 256) and training-step (batch 64) throughput of
   Lookalike's model and of the research's Keras model (needs the ``bench``
   extra, tensorflow-cpu), on the same photos;
2. indexing throughput into Qdrant Edge, with qdrant-client's local mode
   as a reference;
3. QueryById and QueryByImage over loopback gRPC against `lookalike serve`
   in a subprocess, at several client counts, on the photo catalog and on
   synthetic catalogs of random latents: latency percentiles, requests/s,
   recall@10 against exact search and the server's peak memory.

The photo catalog is served with the model trained in --workdir; without
one, a model is trained for one epoch into SCRATCH (and reused by later
runs). ``--quick`` is a smoke run of every section with a tiny untrained
model, tiny catalogs and one repetition.
"""

import argparse
import dataclasses
import datetime
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from flax import nnx

from benchmarks import indexing, model_throughput, report, serving
from encoder.catalog import CatalogImages, load_catalog
from encoder.checkpoint import CheckpointWriter, model_variables
from encoder.config import ModelConfig, TrainConfig, save_json
from encoder.encode import Encoder
from encoder.model import Autoencoder
from encoder.synthetic import write_synthetic_catalog
from encoder.train import train_and_evaluate
from indexer.config import IndexConfig
from indexer.job import index_catalog
from indexer.store import open_store
from lookalike.workdir import Workdir, resolve_catalog

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_CATALOG = REPO_ROOT / "../shared/datasets/fashion-products"


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    # Section 1: the architecture timed, batch sizes, repetitions.
    model: ModelConfig
    encode_batch: int
    train_batch: int
    reps: int
    warmup: int
    # Also time Keras with Lookalike's 2x2 upsampling convs.
    keras_same_arch: bool
    # Section 2: points loaded into each backend (qdrant-client's local
    # mode manages about 700 points/s, hence a small number).
    backend_points: int
    # Section 3: photo catalog size (None: all), synthetic catalog sizes,
    # client counts, seconds per run and of warm-up before it, recall
    # queries per catalog.
    catalog_limit: int | None
    synthetic_sizes: tuple[int, ...]
    concurrency: tuple[int, ...]
    duration_s: float
    warmup_s: float
    recall_queries: int
    seed: int = 0


FULL = BenchConfig(
    model=ModelConfig(),
    encode_batch=256,
    train_batch=64,
    reps=5,
    warmup=2,
    keras_same_arch=True,
    backend_points=5_000,
    catalog_limit=None,
    # 100k is still below Qdrant's full-scan threshold (exact search); 1M
    # uses HNSW. Building 1M took 1 min of upserts and 13 min of HNSW
    # optimisation on two busy cores (its build threads run niced), an
    # estimated 4-6 min on quiet ones; pass --synthetic-sizes to go smaller.
    synthetic_sizes=(100_000, 1_000_000),
    concurrency=(1, 4, 16),
    duration_s=6.0,
    warmup_s=1.0,
    recall_queries=200,
)
# Tiny everything: seconds per section, for the test suite.
QUICK = BenchConfig(
    model=ModelConfig(
        image_height=20,
        image_width=14,
        latent_dim=4,
        stem_channels=4,
        block_channels=(8, 16),
        decoder_channels=(16, 8),
    ),
    encode_batch=8,
    train_batch=4,
    reps=1,
    warmup=1,
    keras_same_arch=False,
    backend_points=200,
    catalog_limit=120,
    synthetic_sizes=(2_000,),
    concurrency=(1, 4, 16),
    duration_s=0.3,
    warmup_s=0.1,
    recall_queries=20,
)


def run_benchmarks(
    config: BenchConfig,
    *,
    out: Path,
    scratch: Path,
    workdir: Path | None,
    keras: bool = True,
    quick: bool = False,
) -> dict:
    """Runs every section; writes and returns results.json's content."""
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    work = scratch
    work.mkdir(parents=True, exist_ok=True)
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    notes: list[str] = []
    results: dict = {
        "meta": {
            "quick": quick,
            "started_at": datetime.datetime.now().isoformat(timespec="seconds"),
            "machine": _machine(),
            "settings": _settings(config),
        }
    }

    image_dir, csv_path, source = _catalog_source(config, work)
    notes.append(f"photo catalog: {source}")

    logger.info("section 1: model throughput")
    tick = time.perf_counter()
    load_averages = {"model": os.getloadavg()}
    results["model"] = _model_section(
        config, image_dir, csv_path, work, keras=keras
    )
    results["model"]["images"] = source
    results["model"]["seconds"] = time.perf_counter() - tick

    logger.info("section 2: indexing throughput")
    tick = time.perf_counter()
    load_averages["indexing"] = os.getloadavg()
    backends = indexing.compare_backends(
        config.backend_points, config.model.latent_dim, seed=config.seed
    )
    results["indexing"] = {"backends": backends}

    logger.info("section 3: gRPC serving")
    load_averages["serving"] = os.getloadavg()
    model_dir, model_note = _serving_model(
        config, image_dir, csv_path, work, workdir, quick=quick
    )
    notes.append(model_note)
    encoder = Encoder.load(model_dir)
    catalog = load_catalog(
        image_dir,
        csv_path,
        height=encoder.config.image_height,
        width=encoder.config.image_width,
        cache_dir=work / "cache",
        limit=config.catalog_limit,
    )
    query_images = [
        (image_dir / product.file_name).read_bytes()
        for product in catalog.products[:200]
    ]
    serving_results = {
        "server": "`lookalike serve` in a subprocess (16 worker threads, "
        "no request batching)",
        "clients": "threads in the benchmark process, each with its own "
        "channel, closed loop",
        "duration_s": config.duration_s,
        "warmup_s": config.warmup_s,
        "catalogs": [],
    }
    results["serving"] = serving_results
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        serve_dir = Path(tmp) / "catalog"
        entry, job = _serve_catalog(
            config, catalog, encoder, model_dir, serve_dir, query_images, logs
        )
        results["indexing"]["catalog_job"] = job
        serving_results["catalogs"].append(entry)
        shutil.rmtree(serve_dir)

        for size in config.synthetic_sizes:
            serve_dir = Path(tmp) / f"synthetic-{size}"
            entry, build = _serve_synthetic(
                config, size, encoder, model_dir, serve_dir, query_images, logs
            )
            backends.append({"backend": "qdrant-edge", **build})
            serving_results["catalogs"].append(entry)
            shutil.rmtree(serve_dir)
    results["indexing"]["seconds_with_serving"] = time.perf_counter() - tick

    for size in config.synthetic_sizes:
        if not indexing.uses_hnsw(size, encoder.config.latent_dim):
            notes.append(
                f"synthetic-{size}: below Qdrant's full-scan threshold, so "
                "searched exhaustively (exact) rather than through HNSW"
            )
    results["notes"] = notes
    # Other processes' load skews every number; a busy machine shows here.
    load_averages["end"] = os.getloadavg()
    results["meta"]["load_averages"] = load_averages
    results["meta"]["seconds"] = time.perf_counter() - started
    results["targets"] = report.judge(results)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "results.md").write_text(report.markdown(results))
    return results


def _machine() -> str:
    return (
        f"{serving.cpu_count()} CPUs ({platform.machine()}), "
        f"{platform.system()} {platform.release()}, Python "
        f"{platform.python_version()}"
    )


def _settings(config: BenchConfig) -> dict:
    values = dataclasses.asdict(config)
    values["model"] = config.model.to_dict()
    return values


def _catalog_source(
    config: BenchConfig, work: Path
) -> tuple[Path, Path | None, str]:
    """The photo catalog: the sample photos, or generated products."""
    if SAMPLE_CATALOG.is_dir():
        image_dir, csv_path = resolve_catalog(SAMPLE_CATALOG.resolve())
        return image_dir, csv_path, "sample photos (fashion-products)"
    size = config.catalog_limit or 8000
    root = work / f"generated-{size}"
    if not (root / "styles.csv").is_file():
        logger.info("no sample photos; generating %d products", size)
        write_synthetic_catalog(root, size, seed=config.seed)
    return root / "images", root / "styles.csv", "generated products"


def _model_section(
    config: BenchConfig,
    image_dir: Path,
    csv_path: Path | None,
    work: Path,
    *,
    keras: bool,
) -> dict:
    batch = max(config.encode_batch, config.train_batch)
    sample = load_catalog(
        image_dir,
        csv_path,
        height=config.model.image_height,
        width=config.model.image_width,
        cache_dir=work / "cache",
        limit=batch,
    )
    images = np.asarray(sample.images)
    settings = {
        "train_batch": config.train_batch,
        "encode_batch": config.encode_batch,
        "reps": config.reps,
        "warmup": config.warmup,
    }
    result = {
        "lookalike": model_throughput.measure_lookalike(
            images, config.model, **settings
        )
    }
    if keras:
        result["keras"] = model_throughput.measure_keras(
            images, config.model, up_kernel_size=3, **settings
        )
        installed = result["keras"].get("installed")
        if config.keras_same_arch and installed:
            result["keras_same_arch"] = model_throughput.measure_keras(
                images, config.model, up_kernel_size=2, **settings
            )
    else:
        result["keras"] = {"installed": False, "error": "skipped (--no-keras)"}
    result["ratios"] = model_throughput.ratios(
        result["lookalike"], result["keras"]
    )
    return result


def _serving_model(
    config: BenchConfig,
    image_dir: Path,
    csv_path: Path | None,
    work: Path,
    workdir: Path | None,
    *,
    quick: bool,
) -> tuple[Path, str]:
    """The model directory to serve and a note on where it came from."""
    if quick:
        # An untrained model serves as well as a trained one for timing.
        model_dir = work / "quick-model"
        model = Autoencoder(config.model, rngs=nnx.Rngs(config.seed))
        model_dir.mkdir(parents=True, exist_ok=True)
        writer = CheckpointWriter(model_dir / "checkpoint")
        writer.save(model_variables(model))
        writer.close()
        save_json(
            model_dir / "config.json",
            {"model": config.model.to_dict(), "train": TrainConfig().to_dict()},
        )
        return model_dir, "served model: tiny and untrained (--quick)"
    if (
        workdir is not None
        and (Workdir(workdir).model / "config.json").is_file()
    ):
        return Workdir(workdir).model, f"served model: trained, from {workdir}"
    model_dir = work / f"trained-{config.catalog_limit or 'all'}" / "model"
    if (model_dir / "config.json").is_file():
        return model_dir, (
            f"served model: trained for 1 epoch by an earlier benchmark run "
            f"(no model in {workdir})"
        )
    logger.info(
        "no trained model in %s; training 1 epoch into %s", workdir, model_dir
    )
    catalog = load_catalog(
        image_dir,
        csv_path,
        height=config.model.image_height,
        width=config.model.image_width,
        cache_dir=work / "cache",
        limit=config.catalog_limit,
    )
    train_and_evaluate(
        catalog.images,
        config.model,
        TrainConfig(epochs=1, seed=config.seed),
        model_dir,
    )
    return model_dir, (
        f"served model: trained for 1 epoch by this run (no model in {workdir})"
    )


def _serve_workdir(serve_dir: Path, model_dir: Path) -> Workdir:
    """A workdir for `lookalike serve` that shares model_dir."""
    served = Workdir(serve_dir)
    serve_dir.mkdir(parents=True)
    served.model.symlink_to(model_dir.resolve(), target_is_directory=True)
    return served


def _serve_catalog(
    config: BenchConfig,
    catalog: CatalogImages,
    encoder: Encoder,
    model_dir: Path,
    serve_dir: Path,
    query_images: list[bytes],
    logs: Path,
) -> tuple[dict, dict]:
    """Indexes the photo catalog with the indexing job and measures the
    server on it; returns (serving entry, indexing job timings)."""
    served = _serve_workdir(serve_dir, model_dir)
    store = open_store(path=served.index)
    try:
        logger.info("indexing the photo catalog (%d)", len(catalog.products))
        job = index_catalog(
            catalog, encoder, store, IndexConfig(), rebuild=True
        )
        product_ids = [product.product_id for product in catalog.products]
        # The stored vectors are what the server searches.
        points = []
        for i in range(0, len(product_ids), 1000):
            points += store.retrieve(product_ids[i : i + 1000])
    finally:
        store.close()
    vectors = np.stack([point.vector for point in points])
    product_ids = [point.product_id for point in points]
    name = f"photos-{len(product_ids)}"
    logger.info("serving %s", name)
    numbers = _measure(
        config,
        served.root,
        logs / f"server-{name}.log",
        product_ids,
        vectors,
        query_images,
    )
    entry = {
        "name": name,
        "points": len(product_ids),
        "search": _search_kind(len(product_ids), vectors.shape[1]),
        "build_s": job.total_seconds,
        **numbers,
    }
    timings = {
        "points": job.num_indexed,
        "encode_s": job.encode_seconds,
        "kmeans_s": job.kmeans_seconds,
        "upsert_s": job.upsert_seconds,
        "total_s": job.total_seconds,
        "points_per_s": job.num_indexed / job.total_seconds,
    }
    return entry, timings


def _measure(
    config: BenchConfig,
    workdir: Path,
    log: Path,
    product_ids: list[str],
    vectors: np.ndarray,
    query_images: list[bytes],
) -> dict:
    """Serves workdir in a subprocess and loads it as config says."""
    return serving.measure_server(
        workdir,
        log,
        product_ids=product_ids,
        vectors=vectors,
        query_images=query_images,
        concurrency=config.concurrency,
        duration_s=config.duration_s,
        warmup_s=config.warmup_s,
        recall_queries=config.recall_queries,
        seed=config.seed,
    )


def _serve_synthetic(
    config: BenchConfig,
    size: int,
    encoder: Encoder,
    model_dir: Path,
    serve_dir: Path,
    query_images: list[bytes],
    logs: Path,
) -> tuple[dict, dict]:
    served = _serve_workdir(serve_dir, model_dir)
    logger.info("building synthetic catalog of %d random latents", size)
    build, product_ids, vectors = indexing.build_synthetic_index(
        served.index, size, encoder, IndexConfig(), seed=config.seed
    )
    logger.info(
        "built in %.1f s (upsert %.1f s, optimize %.1f s); serving",
        build["upsert_s"] + build["optimize_s"],
        build["upsert_s"],
        build["optimize_s"],
    )
    name = f"synthetic-{size}"
    numbers = _measure(
        config,
        served.root,
        logs / f"server-{name}.log",
        product_ids,
        vectors,
        query_images,
    )
    entry = {
        "name": name,
        "points": size,
        "search": _search_kind(size, vectors.shape[1]),
        "build_s": build["upsert_s"] + build["optimize_s"],
        **numbers,
    }
    return entry, build


def _search_kind(num_points: int, dim: int) -> str:
    return "HNSW" if indexing.uses_hnsw(num_points, dim) else "exact scan"


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 20:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give comma-separated sizes of at least 20, "
            "as in 100000,1000000"
        )
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick", action="store_true", help="seconds-long smoke run"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path("runs/demo"),
        help="run whose trained model serves the photo catalog "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--scratch",
        type=Path,
        default=Path("runs/bench"),
        help="decoded photos, a trained model, temporary indexes and server "
        "logs (default %(default)s)",
    )
    parser.add_argument(
        "--no-keras", action="store_true", help="skip the Keras reference"
    )
    parser.add_argument(
        "--catalog-limit",
        type=int,
        help="serve only the first N photos (default: all; --quick: "
        f"{QUICK.catalog_limit})",
    )
    parser.add_argument(
        "--synthetic-sizes",
        type=_sizes,
        help="comma-separated synthetic catalog sizes (default: "
        + ",".join(map(str, FULL.synthetic_sizes))
        + ")",
    )
    parser.add_argument(
        "--duration",
        type=float,
        help=f"seconds per load run (default {FULL.duration_s:g})",
    )
    args = parser.parse_args(argv)
    config = QUICK if args.quick else FULL
    overrides = {
        "catalog_limit": args.catalog_limit,
        "synthetic_sizes": args.synthetic_sizes,
        "duration_s": args.duration,
    }
    config = dataclasses.replace(
        config, **{k: v for k, v in overrides.items() if v is not None}
    )
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        # Replaces a handler that an imported library may have installed.
        force=True,
    )
    # Orbax logs every checkpoint step through absl at INFO.
    logging.getLogger("absl").setLevel(logging.WARNING)
    results = run_benchmarks(
        config,
        out=args.out,
        scratch=args.scratch,
        workdir=args.workdir,
        keras=not args.no_keras,
        quick=args.quick,
    )
    print(report.markdown(results))
    print(f"written: {args.out / 'results.json'}, {args.out / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
