"""Training and encoding throughput of the autoencoder, fast vs reference.

Usage: .venv/bin/python -m benchmarks.model_speed [--reps 5] [--impl fast]

Prints images/s of one train step (batch 64) and of encoding (batch 256),
the median of several timed repetitions after a warm-up call that
compiles. Random uint8 images; the default ModelConfig.
"""

import argparse
import statistics
import time

import jax
import numpy as np
import optax
from flax import nnx

from encoder.config import ModelConfig
from encoder.encode import Encoder
from encoder.model import Autoencoder
from encoder.train import create_state, make_steps


def _median_seconds(fn, reps: int) -> tuple[float, float]:
    start = time.perf_counter()
    jax.block_until_ready(fn())
    compile_seconds = time.perf_counter() - start
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times), compile_seconds


def bench_train(fast: bool, batch_size: int, reps: int) -> None:
    config = ModelConfig()
    model = Autoencoder(config, rngs=nnx.Rngs(0), fast=fast)
    tx = optax.adam(1e-3)
    train_step, _, _ = make_steps(model, tx)
    holder = {"state": create_state(model, tx)}
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, (batch_size, 80, 60, 3), dtype=np.uint8)
    weights = np.ones(batch_size, np.float32)
    key = jax.random.key(0)

    def step():
        holder["state"], losses = train_step(
            holder["state"], batch, weights, key
        )
        return losses["loss"]

    seconds, compile_seconds = _median_seconds(step, reps)
    print(
        f"train  {'fast' if fast else 'reference':9s} batch {batch_size:3d}: "
        f"{batch_size / seconds:7.1f} img/s "
        f"(step {seconds * 1000:.0f} ms, first call {compile_seconds:.1f}s)"
    )


def bench_encode(fast: bool, batch_size: int, reps: int) -> None:
    config = ModelConfig()
    model = Autoencoder(config, rngs=nnx.Rngs(0), fast=fast)
    encoder = Encoder.from_model(model, config)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch_size, 80, 60, 3), dtype=np.uint8)
    seconds, compile_seconds = _median_seconds(
        lambda: encoder.encode(images, batch_size=batch_size), reps
    )
    print(
        f"encode {'fast' if fast else 'reference':9s} batch {batch_size:3d}: "
        f"{batch_size / seconds:7.1f} img/s "
        f"(batch {seconds * 1000:.0f} ms, first call {compile_seconds:.1f}s)"
    )
    seconds, _ = _median_seconds(lambda: encoder.encode(images[:1]), reps * 4)
    print(
        f"encode {'fast' if fast else 'reference':9s} batch   1: "
        f"{seconds * 1000:.1f} ms per image"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--train-batch", type=int, default=64)
    parser.add_argument("--encode-batch", type=int, default=256)
    parser.add_argument(
        "--impl",
        choices=("fast", "reference", "both"),
        default="both",
    )
    parser.add_argument(
        "--only", choices=("train", "encode", "both"), default="both"
    )
    args = parser.parse_args()
    impls = {"fast": [True], "reference": [False], "both": [True, False]}
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}")
    for fast in impls[args.impl]:
        if args.only in ("encode", "both"):
            bench_encode(fast, args.encode_batch, args.reps)
        if args.only in ("train", "both"):
            bench_train(fast, args.train_batch, args.reps)


if __name__ == "__main__":
    main()
