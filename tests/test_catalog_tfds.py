"""TFDS datasets as catalogs, on mocked data (no download, no TensorFlow)."""

import sys

import numpy as np
import pytest

from encoder.catalog import load_tfds_catalog

HEIGHT, WIDTH = 80, 60


@pytest.fixture(scope="module")
def mnist():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=12):
        yield load_tfds_catalog(
            "mnist", split="train", height=HEIGHT, width=WIDTH, limit=10
        )


def test_limit_and_shape(mnist) -> None:
    assert mnist.images.shape == (10, HEIGHT, WIDTH, 3)


def test_product_ids_name_dataset_and_index(mnist) -> None:
    ids = [p.product_id for p in mnist.products]
    assert ids == [f"mnist-{i}" for i in range(10)]


def test_labels_use_class_names(mnist) -> None:
    # MNIST's class names are the digits "0".."9".
    labels = {p.attributes["label"] for p in mnist.products}
    assert labels <= {str(digit) for digit in range(10)}


def test_grayscale_becomes_grey_rgb(mnist) -> None:
    channels = mnist.images.astype(int)
    assert (channels[..., 0] == channels[..., 1]).all()


def test_square_images_are_padded_with_white(mnist) -> None:
    # 28x28 fits 60 wide as 60x60, leaving 10 white rows above and below.
    assert (mnist.images[:, :10] == 255).all()


def test_missing_package_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    with pytest.raises(ImportError, match=r"lookalike\[tfds\]"):
        load_tfds_catalog("mnist", height=HEIGHT, width=WIDTH)


def test_bad_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        load_tfds_catalog("mnist", height=HEIGHT, width=WIDTH, limit=-2)


def test_images_are_uint8(mnist) -> None:
    assert mnist.images.dtype == np.uint8
