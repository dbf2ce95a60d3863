"""The autoencoder's shapes, parameter count and fast/reference equality."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from encoder.config import PRESETS, ModelConfig
from encoder.model import Autoencoder, UpConv, decoder_grid, param_count

# A small model: the same layers, compiled in a fraction of the time.
SMALL = ModelConfig(
    image_height=20,
    image_width=14,
    latent_dim=4,
    stem_channels=4,
    block_channels=(8, 16),
    decoder_channels=(16, 8),
)


def _images(n: int, config: ModelConfig, seed: int = 0) -> jax.Array:
    rng = np.random.default_rng(seed)
    shape = (n, config.image_height, config.image_width, 3)
    return jnp.asarray(rng.random(shape, np.float32))


def _abstract(config: ModelConfig) -> Autoencoder:
    """A model with shapes but no values, built without running init."""
    return nnx.eval_shape(lambda: Autoencoder(config, rngs=nnx.Rngs(0)))


def _jit_call(model: Autoencoder, method: str, *args):
    """Calls a model method compiled once, instead of op by op."""
    graphdef, state = nnx.split(model)
    return jax.jit(
        lambda state, *args: getattr(nnx.merge(graphdef, state), method)(*args)
    )(state, *args)


def _shape_of(model: Autoencoder, method: str, *args):
    """Output shapes of a model method, traced without computing."""
    graphdef, state = nnx.split(model)
    return jax.eval_shape(
        lambda state, *args: getattr(nnx.merge(graphdef, state), method)(*args),
        state,
        *args,
    )


def _pair(config: ModelConfig) -> tuple[Autoencoder, Autoencoder]:
    # Same seed, same layer order: identical parameters.
    fast = Autoencoder(config, rngs=nnx.Rngs(0), fast=True)
    reference = Autoencoder(config, rngs=nnx.Rngs(0), fast=False)
    return fast, reference


@pytest.mark.parametrize("latent_dim", [3, 10, 100])
def test_encode_shape(latent_dim):
    config = ModelConfig(latent_dim=latent_dim)
    model = _abstract(config)
    x = jax.ShapeDtypeStruct((2, 80, 60, 3), jnp.float32)
    assert _shape_of(model, "encode", x).shape == (2, latent_dim)


@pytest.mark.parametrize("latent_dim", [3, 10, 100])
def test_decode_shape(latent_dim):
    config = ModelConfig(latent_dim=latent_dim)
    model = _abstract(config)
    z = jax.ShapeDtypeStruct((2, latent_dim), jnp.float32)
    assert _shape_of(model, "decode", z).shape == (2, 80, 60, 3)


@pytest.mark.parametrize(
    ("height", "width"), [(80, 60), (64, 64), (50, 30), (17, 9)]
)
def test_reconstruction_matches_input_size(height, width):
    config = dataclasses.replace(SMALL, image_height=height, image_width=width)
    model = _abstract(config)
    x = jax.ShapeDtypeStruct((2, height, width, 3), jnp.float32)
    x_hat, _ = _shape_of(model, "__call__", x)
    assert x_hat.shape == (2, height, width, 3)


def test_decoder_grid_of_default_config():
    assert decoder_grid(ModelConfig()) == (5, 4)


def test_latent_is_in_unit_interval_with_sigmoid():
    config = dataclasses.replace(SMALL, latent_activation="sigmoid")
    model = Autoencoder(config, rngs=nnx.Rngs(0))
    z = np.asarray(_jit_call(model, "encode", _images(4, config)))
    assert z.min() >= 0.0 and z.max() <= 1.0


@pytest.mark.parametrize("preset", ["research", "default"])
def test_param_count_of_presets(preset):
    config = PRESETS[preset].model

    def encoder_block(cin, cout):
        depthwise1, pointwise1 = 9 * cin, cin * cout + cout
        depthwise2, pointwise2 = 9 * cout, cout * cout + cout
        norms, residual = 2 * 2 * cout, cin * cout + cout
        return (
            depthwise1
            + pointwise1
            + depthwise2
            + pointwise2
            + norms
            + (residual)
        )

    def decoder_block(cin, cout):
        conv = 9 * cin * cout + cout
        up_conv = 2 * 2 * cout * cout + cout
        norms, residual = 2 * 2 * cout, cin * cout + cout
        return conv + up_conv + norms + residual

    stem = 3 * 3 * 3 * 32 + 32 + 2 * 32
    encoder = sum(
        encoder_block(cin, cout)
        for cin, cout in [(32, 64), (64, 128), (128, 256)]
    )
    latent = config.latent_dim
    to_latent = 5 * 4 * 256 * latent + latent
    # A batch norm's scale and bias; its running statistics are not params.
    latent_norm = 2 * latent if config.latent_norm else 0
    from_latent = latent * 5 * 4 * 256 + 5 * 4 * 256
    decoder = sum(
        decoder_block(cin, cout)
        for cin, cout in [(256, 256), (256, 128), (128, 64), (64, 32)]
    )
    to_pixels = 3 * 3 * 32 * 3 + 3
    expected = (
        stem
        + encoder
        + to_latent
        + latent_norm
        + from_latent
        + decoder
        + to_pixels
    )
    if preset == "research":
        assert expected == 1_727_533
    model = _abstract(config)
    assert param_count(model) == expected


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_fast_matches_reference_default_config(mode):
    # No sigmoid on the latent, so that saturation cannot hide a difference.
    config = ModelConfig(latent_activation="none")
    fast, reference = _pair(config)
    getattr(fast, mode)()
    getattr(reference, mode)()
    x = _images(4, config)
    x_fast, z_fast = _jit_call(fast, "__call__", x)
    x_ref, z_ref = _jit_call(reference, "__call__", x)
    np.testing.assert_allclose(z_fast, z_ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(x_fast, x_ref, rtol=1e-4, atol=1e-5)


def test_fast_gradients_match_reference():
    config = dataclasses.replace(SMALL, latent_activation="none")
    x = _images(4, config)

    def grads(model):
        model.train()
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)

        def loss_fn(params):
            x_hat, _ = nnx.merge(graphdef, params, rest, copy=True)(x)
            return jnp.mean((x_hat - x) ** 2)

        return jax.jit(jax.grad(loss_fn))(params)

    fast, reference = _pair(config)
    for grad_fast, grad_ref in zip(
        jax.tree.leaves(grads(fast)),
        jax.tree.leaves(grads(reference)),
        strict=True,
    ):
        np.testing.assert_allclose(grad_fast, grad_ref, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("kernel_size", [2, 3, 4])
@pytest.mark.parametrize("size", [(5, 4), (3, 7)])
def test_subpixel_up_conv_matches_conv_transpose(kernel_size, size):
    layer = UpConv(
        6, 5, dtype=jnp.float32, rngs=nnx.Rngs(0), kernel_size=kernel_size
    )
    x = jnp.asarray(
        np.random.default_rng(1).standard_normal((2, *size, 6), np.float32)
    )
    np.testing.assert_allclose(
        layer(x, fast=True), layer(x, fast=False), rtol=1e-5, atol=1e-5
    )


def test_bfloat16_compute_keeps_float32_params_and_outputs():
    config = dataclasses.replace(SMALL, dtype="bfloat16")
    model = Autoencoder(config, rngs=nnx.Rngs(0))
    x_hat, z = _jit_call(model, "__call__", _images(2, config))
    params = jax.tree.leaves(nnx.state(model, nnx.Param))
    assert {p.dtype for p in params} == {jnp.dtype(jnp.float32)}
    assert (x_hat.dtype, z.dtype) == (jnp.float32, jnp.float32)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"dtype": "float16"}, "dtype"),
        ({"latent_activation": "tanh"}, "latent_activation"),
        ({"latent_dim": 0}, "latent_dim"),
        ({"block_channels": ()}, "block_channels"),
    ],
)
def test_invalid_config_is_refused(change, message):
    config = dataclasses.replace(SMALL, **change)
    with pytest.raises(ValueError, match=message):
        Autoencoder(config, rngs=nnx.Rngs(0))
