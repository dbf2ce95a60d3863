"""Raw-pixel and PCA baselines."""

import numpy as np
import pytest

from evaluation import baselines


def _images(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 8, 6, 3), dtype=np.uint8)


def test_pixel_vectors_are_flat():
    assert baselines.pixel_vectors(_images(5)).shape == (5, 8 * 6 * 3)


def test_pixel_vectors_map_255_to_one():
    images = np.zeros((2, 8, 6, 3), dtype=np.uint8)
    images[1, 0, 0, 0] = 255
    flat = baselines.pixel_vectors(images)
    assert (flat.min(), flat.max()) == (0.0, 1.0)


@pytest.mark.parametrize("dim", [1, 3, 10])
def test_pca_codes_have_the_asked_dimension(dim):
    x = baselines.pixel_vectors(_images(30))
    pca = baselines.fit_pca(x, dim)
    assert pca.transform(x).shape == (30, dim)


def test_pca_components_are_orthonormal():
    pca = baselines.fit_pca(baselines.pixel_vectors(_images(30)), 5)
    np.testing.assert_allclose(
        pca.components @ pca.components.T, np.eye(5), atol=1e-4
    )


def test_pca_matches_a_full_svd():
    x = baselines.pixel_vectors(_images(40))
    pca = baselines.fit_pca(x, 4)
    _, singular, _ = np.linalg.svd(x - x.mean(axis=0), full_matrices=False)
    expected = singular[:4] ** 2 / (singular**2).sum()
    np.testing.assert_allclose(
        pca.explained_variance_ratio, expected, rtol=1e-3
    )


def test_pca_larger_than_the_data_is_refused():
    with pytest.raises(ValueError, match="between 1 and 10"):
        baselines.fit_pca(baselines.pixel_vectors(_images(10)), 11)


def test_baselines_are_named_and_sized():
    vectors = baselines.baseline_vectors(_images(30), pca_dims=(10, 3))
    shapes = {name: gallery.shape for name, (gallery, _) in vectors.items()}
    assert shapes == {
        "pixels": (30, 144),
        "pca-3": (30, 3),
        "pca-10": (30, 10),
    }


def test_queries_are_projected_with_the_gallery_fit():
    gallery, queries = _images(30), _images(4, seed=1)
    vectors = baselines.baseline_vectors(
        gallery, pca_dims=(5,), query_images=queries
    )
    pca = baselines.fit_pca(baselines.pixel_vectors(gallery), 5)
    np.testing.assert_allclose(
        vectors["pca-5"][1],
        pca.transform(baselines.pixel_vectors(queries)),
        atol=1e-4,
    )


def test_pca_sizes_beyond_the_gallery_are_skipped():
    vectors = baselines.baseline_vectors(
        _images(12), pca_dims=(5, 64), include_pixels=False
    )
    assert list(vectors) == ["pca-5"]
