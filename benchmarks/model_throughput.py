"""Section 1: encoding and training-step throughput, Lookalike vs Keras.

Lookalike is timed in this process through the same functions training and
indexing use (``encoder.train.make_steps`` and ``Encoder.encode``); the
Keras reference runs in a subprocess (benchmarks.keras_reference), so the
two runtimes never share a process or its thread pools.
"""

import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import numpy as np
import optax
from flax import nnx

from benchmarks.timing import time_calls
from encoder.config import ModelConfig
from encoder.encode import Encoder
from encoder.model import Autoencoder, param_count
from encoder.train import create_state, make_steps

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]


def measure_lookalike(
    images: np.ndarray,
    config: ModelConfig,
    *,
    train_batch: int,
    encode_batch: int,
    reps: int,
    warmup: int,
) -> dict:
    """Images/s of ``Encoder.encode`` and of one jitted train step."""
    model = Autoencoder(config, rngs=nnx.Rngs(0))
    encoder = Encoder.from_model(model, config)
    encode_images = np.resize(images, (encode_batch, *images.shape[1:]))
    logger.info("timing Lookalike encode (batch %d)", encode_batch)
    encode = time_calls(
        lambda: encoder.encode(encode_images, batch_size=encode_batch),
        reps=reps,
        warmup=warmup,
    )

    tx = optax.adam(1e-3)
    train_step, _, _ = make_steps(model, tx)
    # A dict, so the closure can replace the state the step donates.
    holder = {"state": create_state(model, tx)}
    batch = np.resize(images, (train_batch, *images.shape[1:]))
    weights = np.ones(train_batch, np.float32)
    key = jax.random.key(0)

    def step() -> None:
        holder["state"], losses = train_step(
            holder["state"], batch, weights, key
        )
        jax.block_until_ready(losses["loss"])

    logger.info("timing Lookalike train step (batch %d)", train_batch)
    train = time_calls(step, reps=reps, warmup=warmup)
    return {
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "params": param_count(model),
        "encode": {
            **encode,
            "batch": encode_batch,
            "images_per_s": encode_batch / encode["median_s"],
        },
        "train_step": {
            **train,
            "batch": train_batch,
            "images_per_s": train_batch / train["median_s"],
        },
    }


def measure_keras(
    images: np.ndarray,
    config: ModelConfig,
    *,
    train_batch: int,
    encode_batch: int,
    reps: int,
    warmup: int,
    up_kernel_size: int,
    timeout_s: float = 900.0,
) -> dict:
    """The Keras reference's numbers, or {"installed": False, ...}."""
    logger.info(
        "timing the Keras reference (%dx%d upsampling convs) in a subprocess",
        up_kernel_size,
        up_kernel_size,
    )
    with tempfile.TemporaryDirectory() as tmp:
        images_path = Path(tmp) / "images.npy"
        np.save(images_path, images)
        config_path = Path(tmp) / "model.json"
        config_path.write_text(json.dumps(config.to_dict()))
        command = [
            sys.executable,
            "-m",
            "benchmarks.keras_reference",
            f"--images={images_path}",
            f"--model-config={config_path}",
            f"--train-batch={train_batch}",
            f"--encode-batch={encode_batch}",
            f"--reps={reps}",
            f"--warmup={warmup}",
            f"--up-kernel-size={up_kernel_size}",
        ]
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        try:
            done = subprocess.run(
                command,
                cwd=REPO_ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return {"installed": True, "error": f"timed out after {timeout_s}s"}
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = done.stderr.strip().splitlines()[-3:]
        logger.warning("the Keras reference failed: %s", " | ".join(tail))
        return {"installed": True, "error": " | ".join(tail) or "no output"}
    return json.loads(lines[-1])


def ratios(lookalike: dict, keras: dict) -> dict:
    """Lookalike's images/s over Keras's, per measurement (None without
    Keras numbers)."""
    result = {}
    for name in ("encode", "train_step"):
        theirs = keras.get(name, {}).get("images_per_s")
        ours = lookalike[name]["images_per_s"]
        result[name] = ours / theirs if theirs else None
    return result
