"""Training of the autoencoder on a catalog's images.

``train_and_evaluate`` is the library entry point the command line and the
tests call: it splits the images into train and validation sets, trains
with Adam on the pixel MSE (plus, when configured, a contrastive term on
the latent of augmented views, optionally told by a catalog attribute which
products belong together), keeps the checkpoint with the best
validation loss and writes config.json, history.json, reconstructions.npz
and, for a whitened latent, whitening.npz into the workdir.
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

from encoder import augment
from encoder.checkpoint import CheckpointWriter
from encoder.config import ModelConfig, TrainConfig, save_json
from encoder.encode import WHITENING_FILE, Encoder
from encoder.model import Autoencoder, param_count, validate_config
from encoder.whitening import Whitening

logger = logging.getLogger(__name__)

# Validation images whose reconstructions are saved after every epoch.
NUM_RECONSTRUCTIONS = 8
# Folded into key(seed) for the random views; far from the small counters
# nnx.Rngs folds in for parameter initialisation.
_VIEW_STREAM = 2**31 - 1


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


def _batch_loss(x_hat: jax.Array, target: jax.Array, weights: jax.Array):
    """Weighted mean over images of the per-image pixel MSE, in float32.

    ``target`` is uint8 or float in [0, 1].
    """
    if target.dtype == jnp.uint8:
        target = target.astype(jnp.float32) / 255.0
    per_image = jnp.mean(
        jnp.square(x_hat.astype(jnp.float32) - target), axis=(1, 2, 3)
    )
    return jnp.sum(per_image * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def contrastive_loss(
    z1: jax.Array,
    z2: jax.Array,
    weights: jax.Array,
    temperature: float,
    labels: jax.Array | None = None,
) -> jax.Array:
    """NT-Xent over a batch of latent pairs [N, D], weighted per image.

    Each of the 2N views should find its partner, by cosine similarity,
    among the other 2N - 1; padding (weight 0) is neither a query nor a
    negative. With int ``labels`` [N] (-1: unknown) every other view of the
    same label is a positive too, averaged as in supervised contrastive
    learning (Khosla et al. 2020); without labels this is SimCLR's loss.
    """
    n = z1.shape[0]
    z = jnp.concatenate([z1, z2]).astype(jnp.float32)
    z = z / jnp.maximum(jnp.linalg.norm(z, axis=1, keepdims=True), 1e-6)
    w = jnp.concatenate([weights, weights])
    logits = z @ z.T / temperature
    valid = (w[None, :] > 0) & ~jnp.eye(2 * n, dtype=bool)
    # A large finite value rather than -inf keeps padded rows free of NaN.
    logits = jnp.where(valid, logits, -1e9)
    log_prob = logits - jax.nn.logsumexp(logits, axis=1, keepdims=True)
    partner = jnp.concatenate([jnp.arange(n) + n, jnp.arange(n)])
    positive = (
        jnp.zeros((2 * n, 2 * n), bool).at[jnp.arange(2 * n), partner].set(True)
    )
    if labels is not None:
        both = jnp.concatenate([labels, labels])
        same = (both[:, None] == both[None, :]) & (both[:, None] >= 0)
        positive = positive | same
    positive = positive & valid
    per_view = -jnp.sum(jnp.where(positive, log_prob, 0.0), axis=1) / (
        jnp.maximum(jnp.sum(positive, axis=1), 1)
    )
    return jnp.sum(per_view * w) / jnp.maximum(jnp.sum(w), 1.0)


def make_optimizer(
    train_config: TrainConfig, steps_per_epoch: int
) -> optax.GradientTransformation:
    """Adam at the configured learning rate and schedule."""
    if train_config.lr_schedule == "cosine":
        rate = optax.cosine_decay_schedule(
            train_config.learning_rate,
            decay_steps=train_config.epochs * steps_per_epoch,
        )
        return optax.adam(rate)
    return optax.adam(train_config.learning_rate)


def make_steps(
    model: Autoencoder,
    tx: optax.GradientTransformation,
    train_config: TrainConfig | None = None,
):
    """Builds jitted (train_step, eval_step, reconstruct_step) for model.

    The steps are pure functions of a TrainState, which jax.jit compiles
    once per batch shape; the model's graph is closed over. train_step
    takes a PRNG key for the random views that ``train_config`` asks for,
    optionally int labels [N] for the contrastive term (-1: unknown), and
    returns the new state and the batch's losses: "reconstruction"
    (pixel MSE, comparable with eval_step), "contrastive" (0 when off) and
    "loss", the weighted sum that is minimised.
    """
    train_config = train_config or TrainConfig()
    model.train()
    train_graph, _, _ = nnx.split(model, nnx.Param, nnx.BatchStat)
    model.eval()
    eval_graph, _, _ = nnx.split(model, nnx.Param, nnx.BatchStat)
    model.train()
    contrastive = train_config.contrastive_weight > 0.0

    def second_view_loss(encode, photos, z, weights, key, labels=None):
        """Contrastive term between latents z of the photos' first views
        and a second, independently drawn (and colour-jittered) view."""
        view_key, colour_key = jax.random.split(key)
        other = augment.geometric_view(view_key, photos)
        if train_config.colour_jitter:
            other = augment.photometric_view(colour_key, other)
        return contrastive_loss(
            z,
            encode(other),
            weights,
            train_config.contrastive_temperature,
            labels,
        )

    def total(losses):
        return (
            losses["reconstruction"]
            + train_config.contrastive_weight * losses["contrastive"]
        )

    def train_step(state: TrainState, batch, weights, key, labels=None):
        photos = batch.astype(jnp.float32) / 255.0
        view_key, other_key = jax.random.split(key)
        images = photos
        if train_config.augment:
            images = augment.geometric_view(view_key, photos)

        def loss_fn(params, batch_stats):
            model = nnx.merge(train_graph, params, batch_stats, copy=True)
            x_hat, z = model(images)
            losses = {
                "reconstruction": _batch_loss(x_hat, images, weights),
                "contrastive": jnp.zeros((), jnp.float32),
            }
            if contrastive:
                # A copy of its own encodes the jittered view: its batch
                # statistics normalise that view but stay out of the
                # running averages that serving uses.
                other = nnx.merge(train_graph, params, batch_stats, copy=True)
                losses["contrastive"] = second_view_loss(
                    other.encode, photos, z, weights, other_key, labels
                )
            losses["loss"] = total(losses)
            return losses["loss"], (nnx.state(model, nnx.BatchStat), losses)

        (_, (batch_stats, losses)), grads = jax.value_and_grad(
            loss_fn, has_aux=True
        )(state.params, state.batch_stats)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return TrainState(params, batch_stats, opt_state), losses

    def eval_step(state: TrainState, batch, weights, key):
        # The same losses as train_step, on the unchanged photos; without
        # labels, so that the held-out photos' attributes never steer
        # training, not even through the choice of the best epoch.
        model = nnx.merge(eval_graph, state.params, state.batch_stats)
        photos = batch.astype(jnp.float32) / 255.0
        x_hat, z = model(photos)
        losses = {
            "reconstruction": _batch_loss(x_hat, photos, weights),
            "contrastive": jnp.zeros((), jnp.float32),
        }
        if contrastive:
            losses["contrastive"] = second_view_loss(
                model.encode, photos, z, weights, key
            )
        losses["loss"] = total(losses)
        return losses

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
    num_train = len(
        split_indices(
            len(images), train_config.validation_fraction, train_config.seed
        )[0]
    )
    if model_config.whiten_latent and num_train < model_config.latent_dim:
        # Too few latents to estimate every direction's spread: the
        # whitening still works but blows up noise in the unseen ones.
        logger.warning(
            "whitening a %d-dim latent from only %d training images; "
            "a smaller --latent-dim or more photos would suit better",
            model_config.latent_dim,
            num_train,
        )
    if train_config.lr_schedule not in ("constant", "cosine"):
        raise ValueError(
            "lr_schedule must be 'constant' or 'cosine', got "
            f"{train_config.lr_schedule!r}"
        )
    if not train_config.contrastive_weight >= 0.0:
        raise ValueError(
            "contrastive_weight must be >= 0, got "
            f"{train_config.contrastive_weight}"
        )
    if (
        train_config.label_attribute is not None
        and not train_config.contrastive_weight > 0.0
    ):
        raise ValueError(
            "label_attribute steers the contrastive term; give it a "
            "contrastive_weight above 0"
        )
    if not train_config.contrastive_temperature > 0.0:
        raise ValueError(
            "contrastive_temperature must be positive, got "
            f"{train_config.contrastive_temperature}"
        )
    if not train_config.learning_rate > 0.0:
        raise ValueError(
            f"learning_rate must be positive, got {train_config.learning_rate}"
        )


def _padded_batches(
    images: np.ndarray, indices: np.ndarray, batch_size: int, fill: np.ndarray
):
    """Yields (uint8 batch, float32 weights, the images' indices) of
    exactly batch_size images.

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
        chunk = chunk[order]
        yield np.asarray(images[chunk]), weights[order], chunk


class _LossSums:
    """Image-weighted running means of a step's losses."""

    def __init__(self):
        self.sums: dict[str, float] = {}
        self.weight = 0.0

    def add(self, losses: dict, weights: np.ndarray) -> dict[str, float]:
        """Adds one batch; returns its losses as floats."""
        losses = {name: float(value) for name, value in losses.items()}
        weight = float(weights.sum())
        for name, value in losses.items():
            self.sums[name] = self.sums.get(name, 0.0) + value * weight
        self.weight += weight
        return losses

    def mean(self) -> dict[str, float]:
        return {
            name: total / max(self.weight, 1.0)
            for name, total in self.sums.items()
        }


def _check_finite(loss: float, where: str, train_config: TrainConfig):
    if not math.isfinite(loss):
        raise TrainingDivergedError(
            f"loss became {loss} at {where}; lower learning_rate (now "
            f"{train_config.learning_rate}) or check the input images"
        )


def _fit_whitening(
    model: Autoencoder,
    model_config: ModelConfig,
    images: np.ndarray,
    train_idx: np.ndarray,
) -> Whitening:
    """Whitening fitted on the training images' raw latents."""
    logger.info("fitting the latent whitening on %d images", len(train_idx))
    raw = Encoder.from_model(
        model,
        dataclasses.replace(
            model_config, whiten_latent=False, normalize_latent=False
        ),
    )
    # Encoding every image reads a memory-mapped catalog in chunks; taking
    # the training rows first would copy them all into memory.
    return Whitening.fit(raw.encode(images)[train_idx])


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
    labels: np.ndarray | None = None,
    on_epoch_end: Callable[[dict[str, float]], None] | None = None,
) -> TrainResult:
    """Trains the autoencoder on uint8 images [N, H, W, 3].

    ``labels`` (int [N], -1 where unknown) are the values of
    ``train_config.label_attribute`` for the contrastive term; only the
    training images' labels are used. Writes workdir/checkpoint (best
    validation loss), config.json, history.json and reconstructions.npz;
    returns a TrainResult. ``on_epoch_end`` receives each epoch's history
    entry.
    """
    _validate(images, model_config, train_config)
    if (labels is None) != (train_config.label_attribute is None):
        raise ValueError(
            "labels must be given exactly when train_config.label_attribute "
            f"is set (it is {train_config.label_attribute!r})"
        )
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (len(images),) or labels.dtype.kind != "i":
            raise ValueError(
                f"labels must be ints, one per image ({len(images)}); got "
                f"{labels.dtype} with shape {labels.shape}"
            )
        labels = labels.astype(np.int32)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    save_json(
        workdir / "config.json",
        {"model": model_config.to_dict(), "train": train_config.to_dict()},
    )
    # A previous run's whitening must not be served with this run's
    # checkpoints if this one stops early; it is rewritten at the end.
    (workdir / WHITENING_FILE).unlink(missing_ok=True)

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
    tx = make_optimizer(train_config, steps_per_epoch)
    train_step, eval_step, reconstruct_step = make_steps(
        model, tx, train_config
    )
    # nnx.Rngs(seed) derives the initial parameters by folding small
    # counters into key(seed); the random views draw from a stream of their
    # own. Validation keys are the same every epoch, so that validation
    # losses compare like with like.
    step_keys, val_keys = jax.random.split(
        jax.random.fold_in(jax.random.key(train_config.seed), _VIEW_STREAM)
    )
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
            sums = _LossSums()
            for batch_num, (batch, weights, chunk) in enumerate(bar, start=1):
                step += 1
                if step == 1:
                    logger.info("compiling the first step")
                state, losses = train_step(
                    state,
                    batch,
                    weights,
                    jax.random.fold_in(step_keys, step),
                    None if labels is None else labels[chunk],
                )
                losses = sums.add(losses, weights)
                _check_finite(
                    losses["loss"],
                    f"step {step} (epoch {epoch}, batch {batch_num})",
                    train_config,
                )
                if step == 1:
                    logger.info(
                        "first step done after %.1fs",
                        time.perf_counter() - start,
                    )
                bar.set_postfix(loss=f"{sums.mean()['loss']:.4f}")
            train_losses = sums.mean()

            sums = _LossSums()
            for batch_num, (batch, weights, _) in enumerate(
                _padded_batches(images, val_idx, eval_batch_size, val_idx)
            ):
                sums.add(
                    eval_step(
                        state,
                        batch,
                        weights,
                        jax.random.fold_in(val_keys, batch_num),
                    ),
                    weights,
                )
            val_losses = sums.mean()
            train_loss, val_loss = train_losses["loss"], val_losses["loss"]
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
                "train_reconstruction": train_losses["reconstruction"],
                "val_reconstruction": val_losses["reconstruction"],
                "train_contrastive": train_losses["contrastive"],
                "val_contrastive": val_losses["contrastive"],
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
    best_model = nnx.merge(graphdef, params, batch_stats)
    whitening = None
    if model_config.whiten_latent:
        whitening = _fit_whitening(best_model, model_config, images, train_idx)
        whitening.save(workdir / WHITENING_FILE)
    encoder = Encoder.from_model(best_model, model_config, whitening)
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
