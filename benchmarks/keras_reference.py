"""The research's Keras autoencoder, rebuilt to time it against Lookalike.

The layers follow encoder/model.py's description of the research model: a
strided 3x3 stem conv, Xception-style blocks (two separable convs, a
stride-2 max-pool and a strided 1x1 residual), a dense sigmoid latent; a
dense layer to a 5x4 grid, blocks of a 3x3 transposed conv and a 3x3
stride-2 transposed conv with an upsampled 1x1 residual, and a sigmoid 3x3
conv cropped to 80x60. ``up_kernel_size=2`` gives Lookalike's variant of
the upsampling conv, for a same-architecture comparison.

Trained and run the way a Keras user would: ``compile`` with Adam and MSE
(Keras picks its defaults, which on a CPU-only TensorFlow means no XLA),
``train_on_batch`` and ``predict_on_batch``.

Run in its own process (TensorFlow and JAX each want every core)::

  python -m benchmarks.keras_reference --images batch.npy --reps 5

prints one JSON object: images/s of encoding and of a train step.
TensorFlow is the optional extra ``bench`` (tensorflow-cpu).
"""

import argparse
import json
import math
import os
import sys

import numpy as np

from benchmarks.timing import time_calls
from encoder.config import ModelConfig


def build_autoencoder(config: ModelConfig, *, up_kernel_size: int = 3):
    """Returns (autoencoder, encoder) Keras models of config's shapes;
    inputs are float32 in [0, 1], NHWC."""
    import keras
    from keras import layers

    height, width = config.image_height, config.image_width
    inputs = keras.Input((height, width, 3))
    x = layers.Conv2D(config.stem_channels, 3, strides=2, padding="same")(
        inputs
    )
    x = layers.Activation("relu")(layers.BatchNormalization()(x))
    for channels in config.block_channels:
        residual = layers.Conv2D(channels, 1, strides=2, padding="same")(x)
        for _ in range(2):
            x = layers.Activation("relu")(x)
            x = layers.SeparableConv2D(channels, 3, padding="same")(x)
            x = layers.BatchNormalization()(x)
        x = layers.MaxPooling2D(3, strides=2, padding="same")(x)
        x = layers.add([x, residual])
    latent = layers.Dense(config.latent_dim, activation="sigmoid")(
        layers.Flatten()(x)
    )

    factor = 2 ** len(config.decoder_channels)
    grid = (
        math.ceil(height / factor),
        math.ceil(width / factor),
        config.decoder_channels[0],
    )
    x = layers.Dense(math.prod(grid))(latent)
    x = layers.Reshape(grid)(x)
    for channels in config.decoder_channels:
        residual = layers.Conv2D(channels, 1, padding="same")(
            layers.UpSampling2D(2)(x)
        )
        x = layers.Activation("relu")(x)
        x = layers.Conv2DTranspose(channels, 3, padding="same")(x)
        x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
        x = layers.Conv2DTranspose(
            channels, up_kernel_size, strides=2, padding="same"
        )(x)
        x = layers.BatchNormalization()(x)
        x = layers.add([x, residual])
    x = layers.Activation("relu")(x)
    x = layers.Conv2D(3, 3, padding="same", activation="sigmoid")(x)
    x = layers.Cropping2D(
        ((0, grid[0] * factor - height), (0, grid[1] * factor - width))
    )(x)

    autoencoder = keras.Model(inputs, x, name="autoencoder")
    encoder = keras.Model(inputs, latent, name="encoder")
    return autoencoder, encoder


def measure(
    images: np.ndarray,
    *,
    train_batch: int,
    encode_batch: int,
    reps: int,
    warmup: int,
    up_kernel_size: int,
    config: ModelConfig | None = None,
) -> dict:
    """Times predict_on_batch and train_on_batch on uint8 images."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    config = config or ModelConfig()
    autoencoder, encoder = build_autoencoder(
        config, up_kernel_size=up_kernel_size
    )
    autoencoder.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")

    encode_images = _take(images, encode_batch)
    train_batch_images = _take(images, train_batch).astype(np.float32) / 255

    # Scaling to [0, 1] is timed, as Lookalike's encode takes uint8 too.
    encode = time_calls(
        lambda: encoder.predict_on_batch(
            encode_images.astype(np.float32) / 255
        ),
        reps=reps,
        warmup=warmup,
    )
    train = time_calls(
        lambda: autoencoder.train_on_batch(
            train_batch_images, train_batch_images
        ),
        reps=reps,
        warmup=warmup,
    )
    return {
        "installed": True,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "up_kernel_size": up_kernel_size,
        "jit_compile": bool(autoencoder.jit_compile),
        "params": int(autoencoder.count_params()),
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


def _take(images: np.ndarray, n: int) -> np.ndarray:
    """n images, repeating the given ones when there are fewer."""
    return np.resize(images, (n, *images.shape[1:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--images", required=True, help=".npy of uint8 images [N, 80, 60, 3]"
    )
    parser.add_argument(
        "--model-config",
        help="JSON of a ModelConfig (default: the default ModelConfig)",
    )
    parser.add_argument("--train-batch", type=int, default=64)
    parser.add_argument("--encode-batch", type=int, default=256)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--up-kernel-size", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    try:
        import tensorflow  # noqa: F401
    except ImportError as error:
        json.dump({"installed": False, "error": str(error)}, sys.stdout)
        return
    images = np.load(args.images)
    config = ModelConfig()
    if args.model_config:
        with open(args.model_config) as file:
            config = ModelConfig.from_dict(json.load(file))
    result = measure(
        images,
        train_batch=args.train_batch,
        encode_batch=args.encode_batch,
        reps=args.reps,
        warmup=args.warmup,
        up_kernel_size=args.up_kernel_size,
        config=config,
    )
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
