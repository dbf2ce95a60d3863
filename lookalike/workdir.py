"""Where a run keeps its files.

One work directory holds everything a catalog's run produces::

    workdir/
      model/    checkpoint, config.json, history.json, reconstructions.npz,
                held_out.json and, for a whitened latent, whitening.npz
      index/    the embedded Qdrant Edge shard and its metadata
      cache/    the decoded, resized catalog as a uint8 memory map
      report/   pictures and the HTML page of ``lookalike report``
"""

import dataclasses
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class Workdir:
    root: Path

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def index(self) -> Path:
        return self.root / "index"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def report(self) -> Path:
        return self.root / "report"


def resolve_catalog(
    catalog: Path, csv_path: Path | None = None
) -> tuple[Path, Path | None]:
    """Finds the image folder and attribute CSV of a catalog folder.

    ``catalog`` is either the folder of images itself or a folder holding an
    ``images/`` sub-folder; without an explicit ``csv_path`` the one CSV file
    next to the images (or in ``catalog``) is used, when there is exactly
    one.
    """
    if not catalog.is_dir():
        raise ValueError(f"catalog folder {catalog} does not exist")
    image_dir = catalog / "images" if (catalog / "images").is_dir() else catalog
    if csv_path is not None:
        if not csv_path.is_file():
            raise ValueError(f"CSV file {csv_path} does not exist")
        return image_dir, csv_path
    candidates = sorted({*catalog.glob("*.csv"), *image_dir.glob("*.csv")})
    return image_dir, candidates[0] if len(candidates) == 1 else None
