"""Does bfloat16 mixed precision train like float32?

Usage: .venv/bin/python -m benchmarks.precision [--images 1000] [--epochs 3]

Trains the default model three times on the same sample photos: float32
with seed 0, float32 with seed 1 (how much the loss curve moves for reasons
that have nothing to do with precision: another initialisation, shuffling
and validation split; the noise), and bfloat16 with seed 0. Prints the
validation loss per epoch of each and the largest gap between bfloat16 and
float32 next to the largest gap between the two float32 seeds. Meant for
a GPU or TPU, where bfloat16 is fast; it runs on a CPU too, slowly, as XLA
emulates most bfloat16 arithmetic there.
"""

import argparse
import dataclasses
import json
import logging
import tempfile
from pathlib import Path

import jax

from encoder.config import ModelConfig, TrainConfig
from encoder.train import train_and_evaluate
from lookalike import jobs
from lookalike.cli import DEFAULT_WORKDIR, SAMPLE_CATALOG
from lookalike.workdir import Workdir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--catalog", default=SAMPLE_CATALOG)
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(DEFAULT_WORKDIR),
        help="whose decoded-photo cache to use (default %(default)s)",
    )
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    runs = {
        "float32, seed 0": ("float32", 0),
        "float32, seed 1": ("float32", 1),
        "bfloat16, seed 0": ("bfloat16", 0),
    }
    model_config = ModelConfig()
    with tempfile.TemporaryDirectory() as tmp:
        catalog = jobs.load_images(
            args.catalog,
            csv_path=None,
            model_config=model_config,
            workdir=Workdir(args.workdir),
        )
        images = catalog.images[: args.images]
        curves = {}
        for name, (dtype, seed) in runs.items():
            print(f"training {name} on {len(images)} photos", flush=True)
            result = train_and_evaluate(
                images,
                dataclasses.replace(model_config, dtype=dtype),
                TrainConfig(epochs=args.epochs, seed=seed, patience=99),
                Path(tmp) / name.replace(", ", "-").replace(" ", ""),
            )
            curves[name] = [entry["val_loss"] for entry in result.history]

    def largest_gap(a: str, b: str) -> float:
        pairs = zip(curves[a], curves[b], strict=True)
        return max(abs(x - y) for x, y in pairs)

    summary = {
        "backend": jax.default_backend(),
        "images": len(images),
        "val_loss_per_epoch": curves,
        "gap_bfloat16_vs_float32": largest_gap(
            "bfloat16, seed 0", "float32, seed 0"
        ),
        "gap_between_float32_seeds": largest_gap(
            "float32, seed 1", "float32, seed 0"
        ),
    }
    print(json.dumps(summary, indent=2))
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
