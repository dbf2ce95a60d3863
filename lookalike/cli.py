"""The ``lookalike`` command line: parses arguments and calls the jobs.

lookalike demo                      train, index and serve the sample
lookalike train --catalog DIR       train the autoencoder
lookalike index --catalog DIR       encode, cluster and index a catalog
lookalike serve                     answer queries over gRPC
lookalike query --image PATH        ask a running server
"""

import argparse
import dataclasses
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

from encoder.config import PRESETS, ModelConfig, TrainConfig
from indexer.config import IndexConfig
from server.config import ServerConfig

if TYPE_CHECKING:
    from encoder.catalog import CatalogImages
    from indexer.store import VectorStore
    from lookalike.workdir import Workdir

# Relative to the repository root, where the README's commands run.
SAMPLE_CATALOG = "../shared/datasets/fashion-products"
DEFAULT_WORKDIR = "runs/demo"
DEFAULT_TARGET = "127.0.0.1:50051"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not args.verbose:
        # Orbax logs every checkpoint step through absl at INFO, and JAX
        # logs each accelerator it looks for and does not find.
        logging.getLogger("absl").setLevel(logging.WARNING)
        logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
    try:
        return args.run(args)
    except (ValueError, OSError) as error:
        # User errors: one clear line, no traceback.
        print(f"lookalike {args.command}: error: {error}", file=sys.stderr)
        return 2
    except grpc.RpcError as error:
        # The server refused or could not be reached: its status says why.
        print(
            f"lookalike {args.command}: {error.code().name}: {error.details()}",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lookalike",
        description="Visually similar products: train, index, serve, query.",
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo", help="train + index + serve one catalog, then query it"
    )
    _add_catalog_args(demo, default=SAMPLE_CATALOG)
    _add_workdir_arg(demo)
    _add_model_args(demo)
    _add_train_args(demo, epochs=2)
    _add_index_args(demo)
    _add_server_args(demo)
    demo.add_argument(
        "--no-serve",
        action="store_true",
        help="stop after the sample query instead of serving",
    )
    demo.set_defaults(run=_run_demo)

    train = commands.add_parser("train", help="train the autoencoder")
    _add_catalog_args(train, default=SAMPLE_CATALOG)
    _add_workdir_arg(train)
    _add_model_args(train)
    _add_train_args(train, epochs=TrainConfig.epochs)
    train.set_defaults(run=_run_train)

    index = commands.add_parser(
        "index", help="encode, cluster and index a catalog"
    )
    _add_catalog_args(index, default=SAMPLE_CATALOG)
    _add_workdir_arg(index)
    _add_index_args(index)
    index.add_argument(
        "--rebuild", action="store_true", help="build a fresh index"
    )
    index.set_defaults(run=_run_index)

    serve = commands.add_parser("serve", help="serve queries over gRPC")
    _add_workdir_arg(serve)
    _add_store_args(serve)
    _add_server_args(serve)
    serve.set_defaults(run=_run_serve)

    evaluate = commands.add_parser(
        "eval", help="measure retrieval quality against baselines"
    )
    _add_catalog_args(evaluate, default=SAMPLE_CATALOG)
    _add_workdir_arg(evaluate)
    _add_store_args(evaluate)
    evaluate.add_argument(
        "--queries",
        help="folder of query photos (with a CSV) searched against the "
        "catalog; default: the photos training held out",
    )
    evaluate.add_argument("--queries-csv", type=Path)
    evaluate.add_argument(
        "--attribute",
        action="append",
        dest="attributes",
        help="attribute that makes two products 'the same' (repeatable; "
        "default articleType and subCategory)",
    )
    evaluate.set_defaults(run=_run_eval)

    report = commands.add_parser(
        "report", help="draw the run's pictures and an HTML page"
    )
    _add_catalog_args(report, default=SAMPLE_CATALOG)
    _add_workdir_arg(report)
    _add_store_args(report)
    report.add_argument(
        "--show",
        action="append",
        metavar="ID",
        help="product to draw a nearest-neighbour strip for (repeatable)",
    )
    report.set_defaults(run=_run_report)

    query = commands.add_parser("query", help="ask a running server")
    what = query.add_mutually_exclusive_group(required=True)
    what.add_argument("--image", type=Path, help="photo to match")
    what.add_argument("--id", help="product ID to find neighbours of")
    query.add_argument(
        "--target",
        default=DEFAULT_TARGET,
        help="server address (default %(default)s)",
    )
    query.add_argument("--top-k", type=int, default=10)
    query.add_argument("--offset", type=int, default=0)
    query.add_argument(
        "--filter",
        action="append",
        default=[],
        metavar="EXPR",
        help="attribute filter, repeatable: articleType=Shirts, "
        "baseColour=Blue|Black, year>=2012, cluster=2, !gender=Men",
    )
    query.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="ID",
        help="product ID never to return",
    )
    query.add_argument("--timeout", type=float, default=10.0)
    query.set_defaults(run=_run_query)
    return parser


def _add_catalog_args(
    parser: argparse.ArgumentParser, default: str | None = None
) -> None:
    parser.add_argument(
        "--catalog",
        default=default,
        required=default is None,
        help="folder of product photos (or holding images/ and one CSV), "
        "or tfds:NAME[:SPLIT]" + (" (default %(default)s)" if default else ""),
    )
    parser.add_argument(
        "--csv", type=Path, help="product attributes CSV with an 'id' column"
    )
    parser.add_argument(
        "--limit", type=int, help="use only the first N products (by ID)"
    )


def _add_workdir_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(DEFAULT_WORKDIR),
        help="where the model, index and caches live (default %(default)s)",
    )


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="default",
        help="named model and training settings: 'default' (Lookalike's "
        "choice, fast), 'contrastive' (better neighbours, needs 8+ epochs), "
        "'attributes' (the best neighbours; also learns from the CSV's "
        "articleType, needs 8+ epochs) or 'research' (the notebook's "
        "model); see evaluation/RESULTS.md",
    )
    parser.add_argument(
        "--latent-dim", type=int, help="latent size (default: the preset's)"
    )
    parser.add_argument(
        "--dtype",
        choices=("float32", "bfloat16"),
        help="compute dtype; bfloat16 is mixed precision for a GPU/TPU "
        "(default: the preset's, float32)",
    )


def _add_train_args(parser: argparse.ArgumentParser, epochs: int) -> None:
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument(
        "--batch-size", type=int, help="default: the preset's (64)"
    )
    parser.add_argument(
        "--learning-rate", type=float, help="default: the preset's (1e-3)"
    )
    parser.add_argument("--seed", type=int, help="default: the preset's (0)")
    parser.add_argument(
        "--contrastive-weight",
        type=float,
        help="weight of the contrastive term on the latent; 0 trains a "
        "plain autoencoder (default: the preset's)",
    )
    parser.add_argument(
        "--label-attribute",
        metavar="COLUMN",
        help="CSV column (e.g. articleType) whose equal values count as "
        "matching pairs in the contrastive term; 'none' for self-supervised "
        "(default: the preset's)",
    )
    parser.add_argument(
        "--colour-jitter",
        action=argparse.BooleanOptionalAction,
        help="colour-jitter the contrastive term's second view, so that "
        "the latent ignores colour (default: the preset's; off only in "
        "'attributes')",
    )


def _add_store_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--qdrant-url",
        help="Qdrant server or cluster (default: embedded Qdrant Edge)",
    )
    parser.add_argument("--qdrant-api-key")
    parser.add_argument("--collection", default=IndexConfig.collection)


def _add_index_args(parser: argparse.ArgumentParser) -> None:
    _add_store_args(parser)
    parser.add_argument(
        "--clusters", type=int, default=IndexConfig.num_clusters
    )


def _add_server_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=ServerConfig.host)
    parser.add_argument("--port", type=int, default=ServerConfig.port)


def _configs(args: argparse.Namespace) -> dict:
    """Builds the configs whose settings the parsed command has."""
    configs = {}
    preset = PRESETS[getattr(args, "preset", "default")]
    if hasattr(args, "preset"):
        configs["model"] = dataclasses.replace(
            preset.model,
            latent_dim=args.latent_dim or preset.model.latent_dim,
            dtype=args.dtype or preset.model.dtype,
        )
    if hasattr(args, "epochs"):
        # Flags left out keep the preset's setting.
        flags = {
            "batch_size": args.batch_size,
            "learning_rate": args.learning_rate,
            "seed": args.seed,
            "contrastive_weight": args.contrastive_weight,
            "colour_jitter": args.colour_jitter,
        }
        flags = {name: v for name, v in flags.items() if v is not None}
        if args.label_attribute is not None:
            label = args.label_attribute
            flags["label_attribute"] = (
                None if label.lower() == "none" else label
            )
        configs["train"] = dataclasses.replace(
            preset.train, epochs=args.epochs, **flags
        )
    if hasattr(args, "clusters"):
        configs["index"] = IndexConfig(
            num_clusters=args.clusters, collection=args.collection
        )
    if hasattr(args, "port"):
        configs["server"] = ServerConfig(host=args.host, port=args.port)
    return configs


def _open_store(args: argparse.Namespace, workdir: "Workdir") -> "VectorStore":
    """The run's embedded index, or the Qdrant server the command names."""
    from lookalike import jobs

    return jobs.open_index(
        workdir,
        qdrant_url=args.qdrant_url,
        qdrant_api_key=args.qdrant_api_key,
        collection=args.collection,
    )


def _trained_model_catalog(
    args: argparse.Namespace, workdir: "Workdir"
) -> tuple[ModelConfig, "CatalogImages"]:
    """The trained model's config and the catalog at its input size."""
    from encoder.encode import Encoder
    from lookalike import jobs

    model_config = Encoder.load(workdir.model).config
    catalog = jobs.load_images(
        args.catalog,
        csv_path=args.csv,
        model_config=model_config,
        workdir=workdir,
        limit=args.limit,
    )
    return model_config, catalog


def _run_train(args: argparse.Namespace) -> int:
    from lookalike import jobs
    from lookalike.workdir import Workdir

    configs = _configs(args)
    workdir = Workdir(args.workdir)
    catalog = jobs.load_images(
        args.catalog,
        csv_path=args.csv,
        model_config=configs["model"],
        workdir=workdir,
        limit=args.limit,
    )
    result = jobs.train(catalog, workdir, configs["model"], configs["train"])
    print(
        f"trained {result.epochs_run} epochs; best validation loss "
        f"{result.best_val_loss:.5f} at epoch {result.best_epoch}; "
        f"model in {workdir.model}"
    )
    return 0


def _run_index(args: argparse.Namespace) -> int:
    from lookalike import jobs
    from lookalike.workdir import Workdir

    configs = _configs(args)
    workdir = Workdir(args.workdir)
    _, catalog = _trained_model_catalog(args, workdir)
    store = _open_store(args, workdir)
    try:
        report = jobs.index(
            catalog, workdir, store, configs["index"], rebuild=args.rebuild
        )
    finally:
        store.close()
    print(report.summary())
    return 0


def _run_serve(args: argparse.Namespace) -> int:
    from lookalike import jobs
    from lookalike.workdir import Workdir

    configs = _configs(args)
    workdir = Workdir(args.workdir)
    store = _open_store(args, workdir)
    try:
        jobs.run_server(
            workdir,
            store,
            configs["server"],
            ready=lambda port: print(
                f"serving lookalike.v1.Lookalike on "
                f"{configs['server'].host}:{port} (Ctrl-C to stop)",
                flush=True,
            ),
        )
    finally:
        store.close()
    return 0


def _run_eval(args: argparse.Namespace) -> int:
    from evaluation.evaluate import evaluate_run, format_table
    from lookalike import jobs
    from lookalike.workdir import Workdir

    workdir = Workdir(args.workdir)
    model_config, catalog = _trained_model_catalog(args, workdir)
    queries = None
    if args.queries:
        queries = jobs.load_images(
            args.queries,
            csv_path=args.queries_csv,
            model_config=model_config,
            workdir=workdir,
        )
    elif split := jobs.held_out_split(catalog, workdir):
        # Query with the photos training held out, against the others.
        catalog, queries = split
    store = _open_store(args, workdir)
    try:
        results = evaluate_run(
            workdir.root,
            catalog=catalog,
            queries=queries,
            store=store,
            attributes=tuple(args.attributes or ("articleType", "subCategory")),
        )
    finally:
        store.close()
    print(format_table(results))
    print(
        f"\nwritten: {workdir.root / 'eval.json'}, {workdir.root / 'eval.md'}"
    )
    return 0


def _run_report(args: argparse.Namespace) -> int:
    from evaluation.report import build_report
    from lookalike.workdir import Workdir

    workdir = Workdir(args.workdir)
    _, catalog = _trained_model_catalog(args, workdir)
    store = _open_store(args, workdir)
    try:
        page = build_report(
            workdir.root,
            catalog=catalog,
            products_to_show=args.show,
            store=store,
        )
    finally:
        store.close()
    print(f"report: {page}")
    return 0


def _run_query(args: argparse.Namespace) -> int:
    from server.client import LookalikeClient, format_results, parse_filter_args

    query_filter = parse_filter_args(args.filter)
    with LookalikeClient(args.target, timeout=args.timeout) as client:
        if args.image is not None:
            response = client.query_by_image(
                args.image.read_bytes(),
                top_k=args.top_k,
                offset=args.offset,
                filter=query_filter,
                exclude_ids=args.exclude,
            )
        else:
            response = client.query_by_id(
                args.id,
                top_k=args.top_k,
                offset=args.offset,
                filter=query_filter,
                exclude_ids=args.exclude,
            )
    print(format_results(response, offset=args.offset))
    return 0


def _run_demo(args: argparse.Namespace) -> int:
    from lookalike import demo

    configs = _configs(args)
    demo.run(
        catalog=args.catalog,
        csv_path=args.csv,
        workdir=args.workdir,
        limit=args.limit,
        model_config=configs["model"],
        train_config=configs["train"],
        index_config=configs["index"],
        server_config=configs["server"],
        qdrant_url=args.qdrant_url,
        qdrant_api_key=args.qdrant_api_key,
        serve_forever=not args.no_serve,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
