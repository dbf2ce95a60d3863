"""Batch encoding of catalog images and uploads with a trained autoencoder.

``Encoder`` holds the model's variables in evaluation mode and one compiled
function per padded batch size, so that a catalog is encoded with a single
compilation and a server encoding uploads one at a time does not pay for a
256-image batch.
"""

import hashlib
import json
import logging
import threading
from pathlib import Path
from typing import Any, Self

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm import tqdm

from encoder.checkpoint import restore_model
from encoder.config import ModelConfig
from encoder.model import Autoencoder
from encoder.whitening import Whitening

logger = logging.getLogger(__name__)

# Batch sizes with a compiled function; a smaller batch is padded to the
# next one. Powers of two keep padding below 2x and compilations few.
BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# Written beside the checkpoint by training when the config whitens.
WHITENING_FILE = "whitening.npz"


def _fingerprint(config: ModelConfig, state: Any, white: Any = None) -> str:
    values = config.to_dict()
    # Models trained before these options existed keep their fingerprint,
    # and with it the indexes built with them.
    for option in ("whiten_latent", "normalize_latent"):
        if not values[option]:
            del values[option]
    digest = hashlib.sha256()
    digest.update(json.dumps(values, sort_keys=True).encode())
    leaves = jax.tree_util.tree_leaves_with_path(state)
    if white is not None:
        leaves += jax.tree_util.tree_leaves_with_path({"whitening": white})
    for path, leaf in sorted(leaves, key=lambda item: str(item[0])):
        array = np.asarray(leaf)
        digest.update(jax.tree_util.keystr(path).encode())
        digest.update(str(array.dtype).encode())
        digest.update(str(array.shape).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def bucket_size(n: int, batch_size: int) -> int:
    """The padded batch size used for a chunk of n <= batch_size images."""
    for size in BUCKETS:
        if n <= size <= batch_size:
            return size
    return batch_size


class Encoder:
    """A trained autoencoder ready to encode uint8 images.

    Thread-safe: the variables are immutable arrays and compiled functions
    may be called from several threads at once.
    """

    def __init__(
        self,
        model: Autoencoder,
        config: ModelConfig,
        whitening: Whitening | None = None,
    ):
        if config.whiten_latent and whitening is None:
            raise ValueError(
                "the model config whitens its latent; pass the Whitening "
                "fitted after training"
            )
        if whitening is not None and not config.whiten_latent:
            raise ValueError("whitening given but the config does not whiten")
        dim = config.latent_dim
        if whitening is not None and (
            whitening.mean.shape != (dim,)
            or whitening.matrix.shape != (dim, dim)
        ):
            raise ValueError(
                f"the whitening is for {whitening.mean.shape} latents; the "
                f"model's latent has {dim} dimensions"
            )
        model = nnx.clone(model)
        # Running averages, not batch statistics, so that an image's latent
        # does not depend on the other images in its batch.
        model.eval()
        graphdef, state = nnx.split(model)
        # On the device once, not transferred again with every batch.
        state = jax.device_put(state)
        white = None
        if whitening is not None:
            white = jax.device_put((whitening.mean, whitening.matrix))
        self.config = config
        self.fingerprint = _fingerprint(config, state, white)
        self._state = (state, white)
        # Counts traces (= compilations) of the jitted functions, for tests.
        self.trace_count = 0
        self._lock = threading.Lock()

        def encode_fn(variables, images):
            self._count_trace()
            state, white = variables
            z = nnx.merge(graphdef, state).encode(images)
            if white is not None:
                mean, matrix = white
                z = (z - mean) @ matrix
            if config.normalize_latent:
                # A zero latent stays zero rather than becoming NaN.
                norm = jnp.linalg.norm(z, axis=-1, keepdims=True)
                z = z / jnp.maximum(norm, 1e-12)
            return z

        def reconstruct_fn(variables, images):
            self._count_trace()
            state, _ = variables
            x_hat, _ = nnx.merge(graphdef, state)(images)
            return jnp.round(x_hat * 255.0).astype(jnp.uint8)

        self._encode_fn = jax.jit(encode_fn)
        self._reconstruct_fn = jax.jit(reconstruct_fn)

    def _count_trace(self) -> None:
        with self._lock:
            self.trace_count += 1

    @classmethod
    def from_model(
        cls,
        model: Autoencoder,
        config: ModelConfig,
        whitening: Whitening | None = None,
    ) -> Self:
        """Wraps an in-memory model (e.g. right after training)."""
        return cls(model, config, whitening)

    @classmethod
    def load(cls, workdir: Path, *, fast: bool = True) -> Self:
        """Loads config.json and the best checkpoint written by training."""
        workdir = Path(workdir)
        config_path = workdir / "config.json"
        if not config_path.is_file():
            raise FileNotFoundError(
                f"no trained model in {workdir}: {config_path.name} is "
                "missing; run `lookalike train` with this workdir first"
            )
        try:
            values = json.loads(config_path.read_text())
            config = ModelConfig.from_dict(values["model"])
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise ValueError(
                f"{config_path} is not a training config with a 'model' "
                f"section ({error})"
            ) from error
        model = restore_model(workdir / "checkpoint", config, fast=fast)
        whitening = None
        if config.whiten_latent:
            path = workdir / WHITENING_FILE
            if not path.is_file():
                raise FileNotFoundError(
                    f"{path} is missing: the model whitens its latent but "
                    "training did not finish writing it; train again"
                )
            whitening = Whitening.load(path)
        encoder = cls(model, config, whitening)
        logger.info(
            "loaded model %s from %s (latent_dim=%d)",
            encoder.fingerprint,
            workdir,
            config.latent_dim,
        )
        return encoder

    def _check_images(self, images: np.ndarray) -> None:
        expected = (self.config.image_height, self.config.image_width, 3)
        if images.dtype != np.uint8 or images.ndim != 4:
            raise ValueError(
                "images must be a uint8 array [N, H, W, 3]; got "
                f"{images.dtype} with shape {images.shape}"
            )
        if images.shape[1:] != expected:
            raise ValueError(
                f"images must be {expected[0]}x{expected[1]} RGB as the "
                f"model was trained; got shape {images.shape[1:]}"
            )

    def _run(
        self,
        fn,
        images: np.ndarray,
        batch_size: int,
        progress: bool,
        desc: str,
    ) -> list[tuple[jax.Array, int]]:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self._check_images(images)
        outputs = []
        starts = range(0, len(images), batch_size)
        for start in tqdm(
            starts, desc=desc, unit="batch", disable=not progress
        ):
            # Copy one chunk from a (possibly memory-mapped) array at a time.
            chunk = np.asarray(images[start : start + batch_size])
            valid = len(chunk)
            # A catalog is padded to full batches (one compiled shape); a
            # single small request to the nearest bucket.
            if len(images) > batch_size:
                size = batch_size
            else:
                size = bucket_size(valid, batch_size)
            if size > valid:
                pad = np.zeros((size - valid, *chunk.shape[1:]), np.uint8)
                chunk = np.concatenate([chunk, pad])
            # Dispatch is asynchronous: the next chunk is read while this
            # one is computed.
            outputs.append((fn(self._state, chunk), valid))
        return outputs

    def encode(
        self,
        images: np.ndarray,
        batch_size: int = 256,
        progress: bool = False,
    ) -> np.ndarray:
        """uint8 images [N, H, W, 3] -> float32 latents [N, latent_dim]."""
        outputs = self._run(
            self._encode_fn, images, batch_size, progress, "encoding"
        )
        if not outputs:
            return np.zeros((0, self.config.latent_dim), np.float32)
        return np.concatenate(
            [np.asarray(z[:n], np.float32) for z, n in outputs]
        )

    def reconstruct(
        self, images: np.ndarray, batch_size: int = 256
    ) -> np.ndarray:
        """uint8 images [N, H, W, 3] -> their uint8 reconstructions."""
        outputs = self._run(
            self._reconstruct_fn, images, batch_size, False, "reconstructing"
        )
        if not outputs:
            return np.zeros((0, *images.shape[1:]), np.uint8)
        return np.concatenate([np.asarray(x[:n]) for x, n in outputs])
