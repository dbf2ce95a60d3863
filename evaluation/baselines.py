"""Representations the autoencoder's latent has to beat.

Raw pixels answer "is a learned latent better than comparing photos
directly?"; PCA of the pixels at the latent's size answers "is it better
than the best linear code of the same length?". Both see exactly the
images the model sees (the catalog's decoded, padded 80x60 photos) and are
fit on the gallery only, as the model was trained on the catalog only.
"""

import dataclasses

import numpy as np

# Extra random directions and power iterations of the randomised SVD: with
# these the leading components match a full SVD to a few decimals, at a
# fraction of its cost on 8000 x 14400 pixel matrices.
PCA_OVERSAMPLING = 16
PCA_POWER_ITERATIONS = 4
# Images turned into float rows at once, to keep the peak memory of large
# catalogs near one float copy.
PIXEL_BLOCK = 2048


def pixel_vectors(images: np.ndarray) -> np.ndarray:
    """float32 [N, H*W*3] in [0, 1]: the photos as flat vectors."""
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(
            f"images must be [N, height, width, 3], got shape {images.shape}"
        )
    flat = np.empty((len(images), int(np.prod(images.shape[1:]))), np.float32)
    for start in range(0, len(images), PIXEL_BLOCK):
        block = np.asarray(images[start : start + PIXEL_BLOCK])
        flat[start : start + len(block)] = block.reshape(len(block), -1)
    flat /= 255.0
    return flat


@dataclasses.dataclass(frozen=True)
class PCA:
    mean: np.ndarray  # float32 [D]
    components: np.ndarray  # float32 [dim, D], orthonormal rows
    # Share of the gallery's variance each component explains.
    explained_variance_ratio: np.ndarray  # float32 [dim]

    @property
    def dim(self) -> int:
        return len(self.components)

    def transform(self, x: np.ndarray) -> np.ndarray:
        """float32 [N, dim]: coordinates of rows of x on the components."""
        return ((x - self.mean) @ self.components.T).astype(np.float32)


def fit_pca(x: np.ndarray, dim: int, *, seed: int = 0) -> PCA:
    """Principal components of the rows of x by randomised SVD.

    Halko, Martinsson & Tropp, "Finding structure with randomness" (2011),
    algorithm 4.4 (subspace iteration).
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"x must be 2-D [N, D], got shape {x.shape}")
    if not 1 <= dim <= min(x.shape):
        raise ValueError(
            f"PCA dimension must be between 1 and {min(x.shape)} (the "
            f"smaller of items and features), got {dim}"
        )
    rng = np.random.default_rng(seed)
    mean = x.mean(axis=0)
    centred = x - mean
    width = min(dim + PCA_OVERSAMPLING, min(x.shape))
    basis = centred @ rng.standard_normal((x.shape[1], width), np.float32)
    basis, _ = np.linalg.qr(basis)
    for _ in range(PCA_POWER_ITERATIONS):
        basis, _ = np.linalg.qr(centred.T @ basis)
        basis, _ = np.linalg.qr(centred @ basis)
    small = basis.T @ centred
    _, singular, vt = np.linalg.svd(small, full_matrices=False)
    total = float((centred.astype(np.float64) ** 2).sum())
    ratio = singular[:dim].astype(np.float64) ** 2 / max(total, 1e-30)
    return PCA(
        mean=mean,
        components=vt[:dim].astype(np.float32),
        explained_variance_ratio=ratio.astype(np.float32),
    )


def baseline_vectors(
    gallery_images: np.ndarray,
    *,
    pca_dims: tuple[int, ...] = (),
    include_pixels: bool = True,
    query_images: np.ndarray | None = None,
    seed: int = 0,
) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """Baseline vectors by name ("pixels", "pca-<dim>"): (gallery, queries).

    Every PCA is fit on the gallery alone; queries (held-out photos) are
    only projected. Dimensions larger than the gallery allows are skipped.
    """
    gallery = pixel_vectors(gallery_images)
    queries = None if query_images is None else pixel_vectors(query_images)
    results: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
    if include_pixels:
        results["pixels"] = (gallery, queries)
    usable = [dim for dim in pca_dims if 1 <= dim <= min(gallery.shape)]
    if usable:
        # One fit at the largest size serves every smaller one: the leading
        # components of a PCA do not depend on how many are kept.
        pca = fit_pca(gallery, max(usable), seed=seed)
        gallery_codes = pca.transform(gallery)
        query_codes = None if queries is None else pca.transform(queries)
        for dim in sorted(set(usable)):
            results[f"pca-{dim}"] = (
                gallery_codes[:, :dim],
                None if query_codes is None else query_codes[:, :dim],
            )
    return results
