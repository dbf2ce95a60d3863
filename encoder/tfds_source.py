"""TensorFlow Datasets image datasets as catalogs, for quick experiments.

Uses ``tfds.data_source`` (random access over ArrayRecord files), which
works without TensorFlow. Needs the optional ``tfds`` extra.
"""

import collections
import logging
from typing import Any

import numpy as np
import tqdm
from PIL import Image

from encoder import images as images_lib
from encoder.catalog import CatalogImages, Product

logger = logging.getLogger(__name__)

_LABEL_KEY = "label"


def load_tfds_catalog(
    name: str,
    *,
    split: str = "train",
    height: int,
    width: int,
    limit: int | None = None,
) -> CatalogImages:
    """Loads the first ``limit`` examples of a TFDS split as a catalog."""
    if limit is not None and (not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be a non-negative integer, got {limit!r}")
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise ImportError(
            "loading TFDS datasets needs tensorflow-datasets; install the "
            "optional extra: pip install 'lookalike[tfds]'"
        ) from error

    try:
        source = tfds.data_source(name, split=split)
    except Exception as error:
        raise ValueError(
            f"cannot open TFDS dataset {name!r} split {split!r}: {error}"
        ) from error
    features = source.dataset_info.features
    image_key = _image_key(features, tfds)
    label_names = _label_names(features, tfds)

    count = len(source) if limit is None else min(limit, len(source))
    images = np.empty((count, height, width, 3), dtype=np.uint8)
    products: list[Product] = []
    skipped: collections.Counter[str] = collections.Counter()
    with tqdm.tqdm(
        total=count, desc="decoding", unit="img", disable=None
    ) as bar:
        for index in range(count):
            example = source[index]
            bar.update(1)
            try:
                pixels = _to_pixels(example[image_key], height, width)
            except images_lib.ImageError as error:
                logger.warning("skipping %s[%d]: %s", name, index, error)
                skipped[f"image {error.reason}"] += 1
                continue
            images[len(products)] = pixels
            products.append(
                Product(
                    product_id=f"{name}-{index}",
                    file_name=f"{name}/{split}/{index}",
                    attributes=_attributes(example, label_names),
                )
            )

    catalog = CatalogImages(
        images=images[: len(products)], products=products, skipped=skipped
    )
    logger.info("TFDS %s[%s]: %s", name, split, catalog.summary())
    return catalog


def _image_key(features: Any, tfds: Any) -> str:
    keys = [
        key
        for key, feature in features.items()
        if isinstance(feature, tfds.features.Image)
    ]
    if not keys:
        raise ValueError(
            f"dataset has no image feature; its features are {list(features)}"
        )
    return "image" if "image" in keys else keys[0]


def _label_names(features: Any, tfds: Any) -> list[str] | None:
    # FeaturesDict is not a Mapping: it has no .get().
    feature = features[_LABEL_KEY] if _LABEL_KEY in features else None  # noqa: SIM401
    if isinstance(feature, tfds.features.ClassLabel):
        return list(feature.names)
    return None


def _to_pixels(array: Any, height: int, width: int) -> np.ndarray:
    pixels = np.asarray(array)
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3):
        raise images_lib.ImageError(
            f"expected uint8 [H, W] or [H, W, 1|3|4] pixels, got "
            f"{pixels.dtype} {list(pixels.shape)}"
        )
    try:
        image = Image.fromarray(pixels)
    except (TypeError, ValueError) as error:
        raise images_lib.ImageError(
            f"cannot use pixels of shape {list(pixels.shape)}: {error}"
        ) from error
    return images_lib.preprocess(image, height=height, width=width)


def _attributes(
    example: dict[str, Any], label_names: list[str] | None
) -> dict[str, str | int | float]:
    if _LABEL_KEY not in example:
        return {}
    label = np.asarray(example[_LABEL_KEY])
    if label.ndim != 0:
        return {}
    value = label.item()
    if label_names is not None and 0 <= value < len(label_names):
        return {_LABEL_KEY: label_names[value]}
    return {_LABEL_KEY: value}
