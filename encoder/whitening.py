"""PCA whitening of the latent, fitted once after training.

The autoencoder's latent dimensions are correlated and unequally spread, so
Euclidean distance between raw latents is dominated by a few directions.
Whitening rotates the latent onto its principal axes and scales each to
unit variance; on the sample catalog it raised held-out precision@10 by
0.01-0.025 (evaluation/RESULTS.md). It is a fixed linear map, so the index
and the server use it exactly like the encoder's own output.
"""

import dataclasses
from pathlib import Path
from typing import Self

import numpy as np

# Added to every variance, as a share of the largest: directions with much
# less variance than that are scaled up at most 1/sqrt(EPSILON_RATIO) times
# as much as the main ones, so that near-constant noise stays small.
EPSILON_RATIO = 1e-3


@dataclasses.dataclass(frozen=True)
class Whitening:
    """z -> (z - mean) @ matrix, for latents z [N, D]."""

    mean: np.ndarray  # float32 [D]
    matrix: np.ndarray  # float32 [D, D]

    @classmethod
    def fit(cls, latents: np.ndarray, epsilon_ratio: float = EPSILON_RATIO):
        """Fits the whitening of latents [N, D] (N >= 2)."""
        latents = np.asarray(latents, np.float64)
        if latents.ndim != 2 or len(latents) < 2:
            raise ValueError(
                "whitening needs latents [N, D] with N >= 2, got shape "
                f"{latents.shape}"
            )
        mean = latents.mean(axis=0)
        covariance = np.atleast_2d(np.cov(latents - mean, rowvar=False))
        variances, axes = np.linalg.eigh(covariance)
        variances = np.maximum(variances, 0.0)
        floor = epsilon_ratio * max(float(variances.max()), 1e-12)
        matrix = axes / np.sqrt(variances + floor)
        return cls(mean.astype(np.float32), matrix.astype(np.float32))

    def apply(self, latents: np.ndarray) -> np.ndarray:
        return (np.asarray(latents, np.float32) - self.mean) @ self.matrix

    def save(self, path: Path) -> None:
        tmp = Path(path).with_suffix(".tmp.npz")
        np.savez(tmp, mean=self.mean, matrix=self.matrix)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> Self:
        with np.load(path) as saved:
            return cls(
                saved["mean"].astype(np.float32),
                saved["matrix"].astype(np.float32),
            )
