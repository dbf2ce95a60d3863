"""Random views of product photos for training, computed inside the jit.

Two kinds of change, both on float images in [0, 1], NHWC:

- ``geometric_view``: a horizontal flip, a zoom and a small shift. A
  product photographed a little larger, smaller or off-centre is the same
  product, and the reconstruction target follows the view.
- ``photometric_view``: colour changes (channel order, saturation,
  contrast). Used only for the second view of the contrastive term, so that
  the latent learns that a red and a blue shirt are both shirts while the
  decoder still sees true colours.

The background of catalog photos is white, so every change keeps white
white: zooming out pads with white and contrast pivots around white.
"""

import jax
import jax.numpy as jnp
import numpy as np

# A zoom of 0.8 shows the product at 80% of its size; 1.05 crops slightly.
ZOOM_RANGE = (0.8, 1.05)
# Largest shift, as a fraction of the image height and width.
MAX_SHIFT = 0.08
# Contrast around white and saturation factors; 0 saturation is grey.
CONTRAST_RANGE = (0.7, 1.3)
SATURATION_RANGE = (0.3, 1.3)
GREYSCALE_PROBABILITY = 0.2
# The six orders of the R, G, B channels: a cheap, strong hue change.
_CHANNEL_ORDERS = np.array(
    [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]]
)
# ITU-R BT.601 luma weights.
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def geometric_view(key: jax.Array, images: jax.Array) -> jax.Array:
    """Randomly flipped, zoomed and shifted copies of images [N, H, W, 3]."""
    n, height, width, _ = images.shape
    flip_key, zoom_key, shift_key = jax.random.split(key, 3)
    flip = jax.random.bernoulli(flip_key, 0.5, (n, 1, 1, 1))
    images = jnp.where(flip, images[:, :, ::-1], images)

    zoom = jax.random.uniform(
        zoom_key, (n,), minval=ZOOM_RANGE[0], maxval=ZOOM_RANGE[1]
    )
    size = jnp.array([height, width], jnp.float32)
    shift = (
        jax.random.uniform(
            shift_key, (n, 2), minval=-MAX_SHIFT, maxval=MAX_SHIFT
        )
        * size
    )
    # Output pixel = input pixel * zoom + translation; zoom about the centre.
    translation = size / 2 * (1 - zoom[:, None]) + shift

    def transform(image, zoom, translation):
        # Resampling fills outside the image with 0; on the inverted image
        # that is white.
        inverted = jax.image.scale_and_translate(
            1.0 - image,
            image.shape,
            spatial_dims=(0, 1),
            scale=jnp.stack([zoom, zoom]),
            translation=translation,
            method="linear",
        )
        return 1.0 - inverted

    return jax.vmap(transform)(images, zoom, translation)


def photometric_view(key: jax.Array, images: jax.Array) -> jax.Array:
    """Colour-jittered copies of images [N, H, W, 3], white kept white."""
    n = images.shape[0]
    order_key, sat_key, grey_key, contrast_key = jax.random.split(key, 4)
    orders = jnp.asarray(_CHANNEL_ORDERS)[
        jax.random.randint(order_key, (n,), 0, 6)
    ]
    images = jnp.take_along_axis(images, orders[:, None, None, :], axis=3)

    saturation = jax.random.uniform(
        sat_key,
        (n, 1, 1, 1),
        minval=SATURATION_RANGE[0],
        maxval=SATURATION_RANGE[1],
    )
    grey = jax.random.bernoulli(grey_key, GREYSCALE_PROBABILITY, (n, 1, 1, 1))
    saturation = jnp.where(grey, 0.0, saturation)
    luma = jnp.sum(images * _LUMA, axis=-1, keepdims=True)
    images = luma + saturation * (images - luma)

    contrast = jax.random.uniform(
        contrast_key,
        (n, 1, 1, 1),
        minval=CONTRAST_RANGE[0],
        maxval=CONTRAST_RANGE[1],
    )
    images = 1.0 - contrast * (1.0 - images)
    return jnp.clip(images, 0.0, 1.0)
