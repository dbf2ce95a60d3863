"""The convolutional autoencoder that turns a product photo into a latent.

Encoder: an Xception-style stack (a strided stem conv, then separable-conv
blocks that each halve the resolution with a max-pool and add a strided 1x1
residual), flattened into a dense layer with a sigmoid. Decoder: a dense
layer to a small grid, then blocks of transposed convs that each double the
resolution and add a 1x1 projection of their upsampled input, and a final
3x3 conv with a sigmoid, cropped to the image size.

Every layer has two implementations over the same parameters:

- ``fast=False`` ("reference"): plain ``nnx.Conv`` with
  ``feature_group_count``, ``nnx.ConvTranspose``, ``nnx.max_pool``.
- ``fast=True`` (default): the same maths written for XLA's CPU backend,
  which runs grouped convs and dilated (transposed) convs slowly. A depthwise
  conv becomes 9 shifted multiply-adds, a stride-2 transposed conv becomes a
  conv on the low-resolution input with 4x the channels followed by
  depth-to-space, a 1x1 projection of a nearest-upsampled input is computed
  before upsampling, and a max-pool is a maximum of 9 strided slices.

Both give the same outputs within float32 tolerance (tested), so a
checkpoint trained with one is served with the other.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from encoder.config import ModelConfig

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
_LATENT_ACTIVATIONS = ("sigmoid", "none")
# Keras's defaults, which the research model trained with.
_BN_MOMENTUM = 0.99
_BN_EPSILON = 1e-3
# Kernel size of the decoder's stride-2 transposed convs (see UpConv).
UP_KERNEL_SIZE = 2


def validate_config(config: ModelConfig) -> None:
    """Raises ValueError when a ModelConfig cannot build a model."""
    if config.dtype not in _DTYPES:
        raise ValueError(
            f"dtype {config.dtype!r} is not supported; "
            f"allowed: {sorted(_DTYPES)}"
        )
    if config.latent_activation not in _LATENT_ACTIVATIONS:
        raise ValueError(
            f"latent_activation {config.latent_activation!r} is not "
            f"supported; allowed: {list(_LATENT_ACTIVATIONS)}"
        )
    for name in ("image_height", "image_width", "latent_dim", "stem_channels"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be at least 1")
    for name in ("block_channels", "decoder_channels"):
        channels = getattr(config, name)
        if not channels or min(channels) < 1:
            raise ValueError(f"{name} must be a non-empty list of channels")


def _encoded_size(size: int, num_halvings: int) -> int:
    # Each "same"-padded stride-2 layer maps n to ceil(n / 2).
    for _ in range(num_halvings):
        size = math.ceil(size / 2)
    return size


def decoder_grid(config: ModelConfig) -> tuple[int, int]:
    """Height and width of the grid the decoder's dense layer fills."""
    factor = 2 ** len(config.decoder_channels)
    return (
        math.ceil(config.image_height / factor),
        math.ceil(config.image_width / factor),
    )


def _shifted_taps(x: jax.Array, size: int, stride: int, pad_value: float):
    """Yields the size x size "same"-padded windows of x, one per tap."""
    height, width = x.shape[1:3]
    out_h = math.ceil(height / stride)
    out_w = math.ceil(width / stride)
    pad_h = max((out_h - 1) * stride + size - height, 0)
    pad_w = max((out_w - 1) * stride + size - width, 0)
    padded = jnp.pad(
        x,
        (
            (0, 0),
            (pad_h // 2, pad_h - pad_h // 2),
            (pad_w // 2, pad_w - pad_w // 2),
            (0, 0),
        ),
        constant_values=pad_value,
    )
    for dy in range(size):
        for dx in range(size):
            yield (
                dy,
                dx,
                padded[
                    :,
                    dy : dy + (out_h - 1) * stride + 1 : stride,
                    dx : dx + (out_w - 1) * stride + 1 : stride,
                    :,
                ],
            )


def _conv(x: jax.Array, kernel: jax.Array, stride: int = 1) -> jax.Array:
    return jax.lax.conv_general_dilated(
        x,
        kernel,
        window_strides=(stride, stride),
        padding="SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )


def _upsample(x: jax.Array) -> jax.Array:
    """Nearest-neighbour 2x upsampling."""
    n, h, w, c = x.shape
    x = jnp.broadcast_to(x[:, :, None, :, None, :], (n, h, 2, w, 2, c))
    return x.reshape(n, 2 * h, 2 * w, c)


def _max_pool(x: jax.Array, fast: bool) -> jax.Array:
    if not fast:
        return nnx.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
    # reduce_window's gradient (select-and-scatter) is slow on CPU; a chain
    # of maxima is fused into one loop.
    pooled = None
    for _, _, tap in _shifted_taps(x, 3, 2, -jnp.inf):
        pooled = tap if pooled is None else jnp.maximum(pooled, tap)
    return pooled


def _subpixel_taps(kernel_size: int) -> tuple[np.ndarray, int, int]:
    """Maps a stride-2 "same" transposed conv onto a low-resolution conv.

    Output pixel 2i + p of ``lax.conv_transpose`` reads input pixel i + d
    through kernel tap 2d + pad - p (pad as lax computes it for "SAME"), so
    each output phase p is an ordinary conv of the input with a subset of
    the taps. Returns a [taps, 2] index of kernel taps (kernel_size stands
    for a zero tap) and the low-resolution padding before and after.
    """
    pad_len = kernel_size
    pad = kernel_size - 1 if kernel_size < 3 else math.ceil(pad_len / 2)
    offsets = {
        p: [
            d
            for d in range(-kernel_size, kernel_size + 1)
            if 0 <= 2 * d + pad - p < kernel_size
        ]
        for p in (0, 1)
    }
    low = min(min(ds) for ds in offsets.values())
    high = max(max(ds) for ds in offsets.values())
    index = np.full((high - low + 1, 2), kernel_size)
    for p, ds in offsets.items():
        for d in ds:
            index[d - low, p] = 2 * d + pad - p
    return index, -low, high


def depthwise_conv3x3(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """A "same" 3x3 depthwise conv; x [N, H, W, C], kernel [3, 3, C].

    Nine shifted multiply-adds, which XLA fuses into one loop.
    """
    # TODO: a hand-written VJP (flipped-kernel taps for the input gradient,
    # one reduction per tap for the kernel) ran 2x faster in isolation but
    # made no measurable difference to a whole train step on a shared
    # machine; revisit with a quiet benchmark.
    y = None
    for dy, dx, tap in _shifted_taps(x, 3, 1, 0.0):
        term = tap * kernel[dy, dx]
        y = term if y is None else y + term
    return y


class SeparableConv(nnx.Module):
    """Depthwise 3x3 conv followed by a pointwise 1x1 conv."""

    def __init__(self, in_features: int, out_features: int, *, dtype, rngs):
        self.depthwise = nnx.Conv(
            in_features,
            in_features,
            (3, 3),
            feature_group_count=in_features,
            use_bias=False,
            dtype=dtype,
            rngs=rngs,
        )
        self.pointwise = nnx.Conv(
            in_features, out_features, (1, 1), dtype=dtype, rngs=rngs
        )
        self.dtype = dtype

    def __call__(self, x: jax.Array, fast: bool) -> jax.Array:
        if not fast:
            return self.pointwise(self.depthwise(x))
        x = x.astype(self.dtype)
        depthwise = self.depthwise.kernel[...].astype(self.dtype)
        y = depthwise_conv3x3(x, depthwise[:, :, 0])
        pointwise = self.pointwise.kernel[...].astype(self.dtype)
        return y @ pointwise[0, 0] + self.pointwise.bias[...].astype(self.dtype)


class UpConv(nnx.Module):
    """A 2x2 stride-2 transposed conv that doubles the resolution.

    The research used 3x3 kernels here. With 2x2, every output pixel reads
    exactly one input pixel, so the layer is one matmul followed by
    depth-to-space; 3x3 works too (the sub-pixel form handles any size) but
    its gradient costs several times more on CPU for no measured gain.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        dtype,
        rngs,
        kernel_size: int = UP_KERNEL_SIZE,
    ):
        self.conv = nnx.ConvTranspose(
            in_features,
            out_features,
            (kernel_size, kernel_size),
            strides=(2, 2),
            padding="SAME",
            dtype=dtype,
            rngs=rngs,
        )
        self.dtype = dtype

    def __call__(self, x: jax.Array, fast: bool) -> jax.Array:
        if not fast:
            return self.conv(x)
        # Sub-pixel form: one conv at the input resolution produces the four
        # output phases as channels, then depth-to-space interleaves them.
        # This skips the 3/4 zeros a dilated full-resolution conv multiplies.
        kernel = self.conv.kernel[...].astype(self.dtype)
        size, _, cin, cout = kernel.shape
        index, pad_before, pad_after = _subpixel_taps(size)
        padded_kernel = jnp.pad(kernel, ((0, 1), (0, 1), (0, 0), (0, 0)))
        taps = index.shape[0]
        # low[ty, tx, cin, py, px, cout] = kernel[index[ty, py], index[tx, px]]
        low = padded_kernel[
            index[:, None, :, None], index[None, :, None, :]
        ]  # [ty, tx, py, px, cin, cout]
        low = low.transpose(0, 1, 4, 2, 3, 5).reshape(taps, taps, cin, 4 * cout)
        if taps == 1:
            y = x.astype(self.dtype) @ low[0, 0]
        else:
            y = jax.lax.conv_general_dilated(
                x.astype(self.dtype),
                low,
                window_strides=(1, 1),
                padding=((pad_before, pad_after), (pad_before, pad_after)),
                dimension_numbers=("NHWC", "HWIO", "NHWC"),
            )
        n, h, w, _ = y.shape
        y = y.reshape(n, h, w, 2, 2, cout).transpose(0, 1, 3, 2, 4, 5)
        y = y.reshape(n, 2 * h, 2 * w, cout)
        return y + self.conv.bias[...].astype(self.dtype)


class EncoderBlock(nnx.Module):
    """Two separable convs, a stride-2 max-pool and a strided residual."""

    def __init__(self, in_features: int, out_features: int, *, dtype, rngs):
        def norm():
            return nnx.BatchNorm(
                out_features,
                momentum=_BN_MOMENTUM,
                epsilon=_BN_EPSILON,
                dtype=dtype,
                rngs=rngs,
            )

        self.sep1 = SeparableConv(
            in_features, out_features, dtype=dtype, rngs=rngs
        )
        self.norm1 = norm()
        self.sep2 = SeparableConv(
            out_features, out_features, dtype=dtype, rngs=rngs
        )
        self.norm2 = norm()
        self.residual = nnx.Conv(
            in_features,
            out_features,
            (1, 1),
            strides=(2, 2),
            dtype=dtype,
            rngs=rngs,
        )
        self.dtype = dtype

    def __call__(self, x: jax.Array, fast: bool) -> jax.Array:
        # Pre-activation as in Xception: the block input is a sum, so it is
        # rectified here while the residual reads it unrectified.
        y = self.norm1(self.sep1(nnx.relu(x), fast))
        y = self.norm2(self.sep2(nnx.relu(y), fast))
        y = _max_pool(y, fast)
        if fast:
            # A strided 1x1 conv only reads every other pixel.
            kernel = self.residual.kernel[...].astype(self.dtype)
            residual = x[:, ::2, ::2].astype(self.dtype) @ kernel[0, 0]
            residual += self.residual.bias[...].astype(self.dtype)
        else:
            residual = self.residual(x)
        return y + residual


class DecoderBlock(nnx.Module):
    """A transposed conv, a stride-2 transposed conv and a 1x1 residual."""

    def __init__(self, in_features: int, out_features: int, *, dtype, rngs):
        def norm():
            return nnx.BatchNorm(
                out_features,
                momentum=_BN_MOMENTUM,
                epsilon=_BN_EPSILON,
                dtype=dtype,
                rngs=rngs,
            )

        self.conv1 = nnx.ConvTranspose(
            in_features, out_features, (3, 3), dtype=dtype, rngs=rngs
        )
        self.norm1 = norm()
        self.conv2 = UpConv(out_features, out_features, dtype=dtype, rngs=rngs)
        self.norm2 = norm()
        self.residual = nnx.Conv(
            in_features, out_features, (1, 1), dtype=dtype, rngs=rngs
        )
        self.dtype = dtype

    def __call__(self, x: jax.Array, fast: bool) -> jax.Array:
        if fast:
            # A stride-1 "same" transposed conv without kernel transposition
            # is a plain conv with the same kernel.
            y = _conv(
                nnx.relu(x).astype(self.dtype),
                self.conv1.kernel[...].astype(self.dtype),
            )
            y += self.conv1.bias[...].astype(self.dtype)
        else:
            y = self.conv1(nnx.relu(x))
        y = self.norm1(y)
        y = self.norm2(self.conv2(nnx.relu(y), fast))
        if fast:
            # A 1x1 conv commutes with nearest upsampling: project first,
            # on 4x fewer pixels.
            residual = _upsample(self.residual(x))
        else:
            residual = self.residual(_upsample(x))
        return y + residual


class Autoencoder(nnx.Module):
    """Convolutional autoencoder; images are float in [0, 1], NHWC.

    ``fast`` selects the XLA-CPU-friendly layer implementations; it changes
    no parameter, so ``fast=False`` serves as the reference for tests.
    """

    def __init__(
        self, config: ModelConfig, *, rngs: nnx.Rngs, fast: bool = True
    ):
        validate_config(config)
        dtype = _DTYPES[config.dtype]
        self.config = config
        self.fast = fast
        self.dtype = dtype

        self.stem = nnx.Conv(
            3,
            config.stem_channels,
            (3, 3),
            strides=(2, 2),
            dtype=dtype,
            rngs=rngs,
        )
        self.stem_norm = nnx.BatchNorm(
            config.stem_channels,
            momentum=_BN_MOMENTUM,
            epsilon=_BN_EPSILON,
            dtype=dtype,
            rngs=rngs,
        )
        channels = (config.stem_channels, *config.block_channels)
        self.encoder_blocks = nnx.List(
            [
                EncoderBlock(cin, cout, dtype=dtype, rngs=rngs)
                for cin, cout in zip(channels[:-1], channels[1:], strict=True)
            ]
        )
        encoded_h = _encoded_size(config.image_height, len(channels))
        encoded_w = _encoded_size(config.image_width, len(channels))
        self.to_latent = nnx.Linear(
            encoded_h * encoded_w * channels[-1],
            config.latent_dim,
            rngs=rngs,
        )

        self.latent_norm = (
            nnx.BatchNorm(
                config.latent_dim,
                momentum=_BN_MOMENTUM,
                epsilon=_BN_EPSILON,
                rngs=rngs,
            )
            if config.latent_norm
            else None
        )

        grid_h, grid_w = decoder_grid(config)
        self.grid = (grid_h, grid_w, config.decoder_channels[0])
        self.from_latent = nnx.Linear(
            config.latent_dim, grid_h * grid_w * self.grid[2], rngs=rngs
        )
        channels = (config.decoder_channels[0], *config.decoder_channels)
        self.decoder_blocks = nnx.List(
            [
                DecoderBlock(cin, cout, dtype=dtype, rngs=rngs)
                for cin, cout in zip(channels[:-1], channels[1:], strict=True)
            ]
        )
        self.to_pixels = nnx.Conv(
            config.decoder_channels[-1], 3, (3, 3), dtype=dtype, rngs=rngs
        )

    def encode(self, x: jax.Array) -> jax.Array:
        """Images [N, H, W, 3] (float in [0, 1] or uint8) -> [N, latent]."""
        if x.dtype == jnp.uint8:
            x = x.astype(jnp.float32) / 255.0
        x = nnx.relu(self.stem_norm(self.stem(x.astype(self.dtype))))
        for block in self.encoder_blocks:
            x = block(x, self.fast)
        z = self.to_latent(x.reshape(x.shape[0], -1).astype(jnp.float32))
        if self.latent_norm is not None:
            z = self.latent_norm(z)
        if self.config.latent_activation == "sigmoid":
            z = nnx.sigmoid(z)
        return z

    def decode(self, z: jax.Array) -> jax.Array:
        """Latents [N, latent] -> images [N, H, W, 3], float32 in [0, 1]."""
        x = self.from_latent(z.astype(jnp.float32))
        x = x.reshape(x.shape[0], *self.grid).astype(self.dtype)
        for block in self.decoder_blocks:
            x = block(x, self.fast)
        x = nnx.sigmoid(self.to_pixels(nnx.relu(x)).astype(jnp.float32))
        return x[:, : self.config.image_height, : self.config.image_width]

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        z = self.encode(x)
        return self.decode(z), z


def param_count(model: nnx.Module) -> int:
    """Number of trainable parameters (batch statistics excluded)."""
    params = nnx.state(model, nnx.Param)
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(params))
