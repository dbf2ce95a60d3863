"""Training of the autoencoder on a catalog's images.

``train_and_evaluate`` is the library entry point the command line and the
tests call: it splits the images into train and validation sets, trains
with Adam on the pixel MSE, keeps the checkpoint with the best validation
loss and writes config.json, history.json and reconstructions.npz into the
workdir.
"""

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm import tqdm

from encoder.checkpoint import CheckpointWriter
from encoder.config import ModelConfig, TrainConfig, save_json
from encoder.encode import Encoder
from encoder.model import Autoencoder, param_count, validate_config

logger = logging.getLogger(__name__)

# Validation images whose reconstructions are saved after every epoch.
NUM_RECONSTRUCTIONS = 8


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite."""


@dataclasses.dataclass
class TrainResult:
    workdir: Path
    best_epoch: int
    best_val_loss: float
    epochs_run: int
    history: list[dict[str, float]]
    # The best model, as Encoder.load(workdir) would return it.
    encoder: Encoder


@dataclasses.dataclass
class TrainState:
    """Everything a train step reads and updates, as a jax pytree."""

    params: Any  # nnx.State of nnx.Param, float32
    batch_stats: Any  # nnx.State of nnx.BatchStat, float32
    opt_state: Any  # optax Adam state over params


jax.tree_util.register_dataclass(
    TrainState,
    data_fields=["params", "batch_stats", "opt_state"],
    meta_fields=[],
)


def _batch_loss(x_hat: jax.Array, batch: jax.Array, weights: jax.Array):
    """Weighted mean over images of the per-image pixel MSE, in float32."""
    x = batch.astype(jnp.float32) / 255.0
    per_image = jnp.mean(
        jnp.square(x_hat.astype(jnp.float32) - x), axis=(1, 2, 3)
    )
    return jnp.sum(per_image * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def make_steps(model: Autoencoder, tx: optax.GradientTransformation):
    """Builds jitted (train_step, eval_step, reconstruct_step) for model.

    The steps are pure functions of a TrainState, which jax.jit compiles
    once per batch shape; the model's graph is closed over.
    """
    model.train()
    train_graph, _, _ = nnx.split(model, nnx.Param, nnx.BatchStat)
    model.eval()
    eval_graph, _, _ = nnx.split(model, nnx.Param, nnx.BatchStat)
    model.train()

    def train_step(state: TrainState, batch, weights):
        def loss_fn(params, batch_stats):
            model = nnx.merge(train_graph, params, batch_stats, copy=True)
            x_hat, _ = model(batch)
            loss = _batch_loss(x_hat, batch, weights)
            return loss, nnx.state(model, nnx.BatchStat)

        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, state.batch_stats
        )
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return TrainState(params, batch_stats, opt_state), loss

    def eval_step(state: TrainState, batch, weights):
        model = nnx.merge(eval_graph, state.params, state.batch_stats)
        x_hat, _ = model(batch)
        return _batch_loss(x_hat, batch, weights)

    def reconstruct_step(state: TrainState, batch):
        model = nnx.merge(eval_graph, state.params, state.batch_stats)
        x_hat, _ = model(batch)
        return jnp.round(x_hat * 255.0).astype(jnp.uint8)

    return (
        jax.jit(train_step, donate_argnums=0),
        jax.jit(eval_step),
        jax.jit(reconstruct_step),
    )


def create_state(
    model: Autoencoder, tx: optax.GradientTransformation
) -> TrainState:
    _, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    # Copies, because train_step donates the state's buffers and the model
    # must stay usable.
    params, batch_stats = jax.tree.map(jnp.copy, (params, batch_stats))
    return TrainState(params, batch_stats, tx.init(params))


def split_indices(
    num_images: int, validation_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic (train, validation) index arrays for a seed."""
    num_val = max(1, round(num_images * validation_fraction))
    num_val = min(num_val, num_images - 1)
    order = np.random.default_rng(seed).permutation(num_images)
    return np.sort(order[num_val:]), np.sort(order[:num_val])


def _validate(
    images: np.ndarray, model_config: ModelConfig, train_config: TrainConfig
) -> None:
    validate_config(model_config)
    expected = (model_config.image_height, model_config.image_width, 3)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(
            "images must be a uint8 array [N, H, W, 3]; got "
            f"{images.dtype} with shape {images.shape}"
        )
    if images.shape[1:] != expected:
        raise ValueError(
            f"images are {images.shape[1:]} but the model config expects "
            f"{expected}"
        )
    if len(images) < 2:
        raise ValueError(
            f"need at least 2 images (one to train, one to validate), "
            f"got {len(images)}"
        )
    if train_config.epochs < 1 or train_config.batch_size < 1:
        raise ValueError("epochs and batch_size must be at least 1")
    if not 0.0 < train_config.validation_fraction < 1.0:
        raise ValueError(
            "validation_fraction must be between 0 and 1 (exclusive), got "
            f"{train_config.validation_fraction}"
        )
    if train_config.patience < 1:
        raise ValueError(f"patience must be >= 1, got {train_config.patience}")
    if not train_config.learning_rate > 0.0:
        raise ValueError(
            f"learning_rate must be positive, got {train_config.learning_rate}"
        )


def _padded_batches(
    images: np.ndarray, indices: np.ndarray, batch_size: int, fill: np.ndarray
):
    """Yields (uint8 batch, float32 weights) of exactly batch_size images.

    A short last batch is completed with images from ``fill`` at weight
    zero: one compiled shape for the whole run, and BatchNorm statistics
    still computed over real images.
    """
    for start in range(0, len(indices), batch_size):
        chunk = indices[start : start + batch_size]
        weights = np.ones(batch_size, np.float32)
        if len(chunk) < batch_size:
            weights[len(chunk) :] = 0.0
            extra = np.resize(fill, batch_size - len(chunk))
            chunk = np.concatenate([chunk, extra])
        # Sorted reads are kinder to a memory-mapped catalog; the order of
        # images inside a batch does not change its gradient.
        order = np.argsort(chunk, kind="stable")
        yield np.asarray(images[chunk[order]]), weights[order]


def _check_finite(loss: float, where: str, train_config: TrainConfig):
    if not math.isfinite(loss):
        raise TrainingDivergedError(
            f"loss became {loss} at {where}; lower learning_rate (now "
            f"{train_config.learning_rate}) or check the input images"
        )


def _save_history(path: Path, history: list[dict[str, float]]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(history, indent=2) + "\n")
    tmp.replace(path)


def train_and_evaluate(
    images: np.ndarray,
    model_config: ModelConfig,
    train_config: TrainConfig,
    workdir: Path,
    *,
    on_epoch_end: Callable[[dict[str, float]], None] | None = None,
) -> TrainResult:
    """Trains the autoencoder on uint8 images [N, H, W, 3].

    Writes workdir/checkpoint (best validation loss), config.json,
    history.json and reconstructions.npz; returns a TrainResult.
    ``on_epoch_end`` receives each epoch's history entry.
    """
    _validate(images, model_config, train_config)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    save_json(
        workdir / "config.json",
        {"model": model_config.to_dict(), "train": train_config.to_dict()},
    )

    train_idx, val_idx = split_indices(
        len(images), train_config.validation_fraction, train_config.seed
    )
    # A catalog smaller than a batch trains with one batch of all of it.
    batch_size = min(train_config.batch_size, len(train_idx))
    steps_per_epoch = math.ceil(len(train_idx) / batch_size)
    eval_batch_size = min(train_config.batch_size, len(val_idx))
    logger.info(
        "training on %d images, validating on %d; batch %d, %d steps/epoch",
        len(train_idx),
        len(val_idx),
        batch_size,
        steps_per_epoch,
    )
    shown = val_idx[:NUM_RECONSTRUCTIONS]
    originals = np.asarray(images[shown])
    reconstructions = {"originals": originals}

    logger.info("creating model")
    rng = np.random.default_rng(train_config.seed)
    model = Autoencoder(model_config, rngs=nnx.Rngs(train_config.seed))
    logger.info("model has %d parameters", param_count(model))
    tx = optax.adam(train_config.learning_rate)
    train_step, eval_step, reconstruct_step = make_steps(model, tx)
    state = create_state(model, tx)
    writer = CheckpointWriter(workdir / "checkpoint")

    history: list[dict[str, float]] = []
    best_epoch, best_val_loss, step = 0, math.inf, 0
    best_variables: dict[str, Any] = {}
    try:
        for epoch in range(1, train_config.epochs + 1):
            start = time.perf_counter()
            order = rng.permutation(train_idx)
            bar = tqdm(
                _padded_batches(images, order, batch_size, order),
                total=steps_per_epoch,
                desc=f"epoch {epoch}",
                unit="batch",
                leave=False,
            )
            loss_sum, seen = 0.0, 0.0
            for batch_num, (batch, weights) in enumerate(bar, start=1):
                step += 1
                if step == 1:
                    logger.info("compiling the first step")
                state, loss = train_step(state, batch, weights)
                loss = float(loss)
                _check_finite(
                    loss,
                    f"step {step} (epoch {epoch}, batch {batch_num})",
                    train_config,
                )
                if step == 1:
                    logger.info(
                        "first step done after %.1fs",
                        time.perf_counter() - start,
                    )
                loss_sum += loss * float(weights.sum())
                seen += float(weights.sum())
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}")
            train_loss = loss_sum / len(train_idx)

            val_sum = 0.0
            for batch, weights in _padded_batches(
                images, val_idx, eval_batch_size, val_idx
            ):
                val_sum += float(eval_step(state, batch, weights)) * float(
                    weights.sum()
                )
            val_loss = val_sum / len(val_idx)
            _check_finite(
                val_loss, f"validation after epoch {epoch}", train_config
            )
            reconstructions[f"epoch_{epoch}"] = np.asarray(
                reconstruct_step(state, originals)
            )
            np.savez(workdir / "reconstructions.npz", **reconstructions)

            seconds = time.perf_counter() - start
            entry = {
                "epoch": epoch,
                "train_loss": train_loss,
                "val_loss": val_loss,
                "seconds": seconds,
                "images_per_second": len(train_idx) / seconds,
            }
            history.append(entry)
            _save_history(workdir / "history.json", history)
            improved = val_loss < best_val_loss
            logger.info(
                "epoch %d: train_loss=%.5f val_loss=%.5f%s (%.1fs, %.1f img/s)",
                epoch,
                train_loss,
                val_loss,
                " (best)" if improved else "",
                seconds,
                entry["images_per_second"],
            )
            if improved:
                best_epoch, best_val_loss = epoch, val_loss
                # Host copies: the next train step donates these buffers.
                best_variables = jax.device_get(
                    {
                        "params": nnx.to_pure_dict(state.params),
                        "batch_stats": nnx.to_pure_dict(state.batch_stats),
                    }
                )
                writer.save(best_variables)
            if on_epoch_end is not None:
                on_epoch_end(entry)
            if epoch - best_epoch >= train_config.patience:
                logger.info(
                    "stopping early: no better validation loss for %d epochs",
                    train_config.patience,
                )
                break
    finally:
        writer.close()

    graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    nnx.replace_by_pure_dict(params, best_variables["params"])
    nnx.replace_by_pure_dict(batch_stats, best_variables["batch_stats"])
    encoder = Encoder.from_model(
        nnx.merge(graphdef, params, batch_stats), model_config
    )
    logger.info(
        "trained %d epochs; best val_loss=%.5f at epoch %d; saved to %s",
        len(history),
        best_val_loss,
        best_epoch,
        workdir,
    )
    return TrainResult(
        workdir=workdir,
        best_epoch=best_epoch,
        best_val_loss=best_val_loss,
        epochs_run=len(history),
        history=history,
        encoder=encoder,
    )
