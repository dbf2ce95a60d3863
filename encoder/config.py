"""Settings of the autoencoder and of its training, with documented defaults.

Both are frozen dataclasses saved as JSON next to every checkpoint, so that
``index`` and ``serve`` rebuild exactly the model and preprocessing that were
trained.
"""

import dataclasses
import json
from pathlib import Path
from typing import Any, Self


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture and input preprocessing of the autoencoder."""

    # Images are resized to height x width, keeping aspect by padding with
    # white; 80x60 is what the research notebook used.
    image_height: int = 80
    image_width: int = 60
    # Size of the latent vector that describes a product. The research used
    # 10; 3 and 100 also work. 64 retrieves better (evaluation/RESULTS.md).
    latent_dim: int = 64
    # Xception-style encoder: a strided stem conv, then one separable block
    # per entry, each halving the resolution.
    stem_channels: int = 32
    block_channels: tuple[int, ...] = (64, 128, 256)
    # Decoder: a dense layer to a small grid, then one upsampling block per
    # entry, each doubling the resolution; the output is cropped to size.
    decoder_channels: tuple[int, ...] = (256, 128, 64, 32)
    # "sigmoid" (the research) or "none" (a batch-normalised linear latent).
    latent_activation: str = "none"
    # Batch-normalise the latent before its activation. Without it the
    # research's sigmoid saturates within an epoch or two: most latent
    # dimensions sit at 0 or 1 for every product and carry nothing.
    latent_norm: bool = True
    # Serve the latent PCA-whitened (encoder/whitening.py): decorrelated,
    # unit variance along each principal axis, fitted on the training
    # photos once training ends.
    whiten_latent: bool = False
    # Scale every latent to unit length (after any whitening). The index's
    # Euclidean distance then ranks neighbours by cosine similarity, the
    # measure the contrastive term trains.
    normalize_latent: bool = False
    # Compute dtype of convolutions: "float32", or "bfloat16" for mixed
    # precision on a GPU/TPU (parameters stay float32).
    dtype: str = "float32"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Self:
        return _from_dict(cls, values)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings."""

    # Upper bound; early stopping usually ends training sooner.
    epochs: int = 20
    batch_size: int = 64
    learning_rate: float = 1e-3
    # Share of the catalog held out to measure validation loss.
    validation_fraction: float = 0.1
    # Stop after this many epochs without a better validation loss.
    patience: int = 3
    # Seeds parameter initialisation, the split, the shuffling and the
    # random views.
    seed: int = 0
    # "constant", or "cosine": decay to zero over ``epochs`` epochs.
    lr_schedule: str = "constant"
    # Train on randomly flipped, zoomed and shifted copies of the photos
    # (encoder/augment.py); the reconstruction target follows the copy.
    augment: bool = False
    # Weight of a contrastive term on the latent (SimCLR's NT-Xent): the
    # latent of the photo as trained on (augmented or not) and that of a
    # second, zoomed, shifted and colour-jittered view should be nearer to
    # each other than to the rest of the batch. 0 trains a plain
    # autoencoder; the reconstruction loss always stays.
    contrastive_weight: float = 0.0
    # Temperature of the contrastive term's softmax over cosine similarity.
    contrastive_temperature: float = 0.2
    # Colour-jitter the second view (channel order, saturation, greyscale,
    # contrast). The latent then learns to ignore colour; without it only
    # zoom, shift and flip differ between the views.
    colour_jitter: bool = True
    # A catalog attribute (CSV column, e.g. "articleType") whose equal
    # values also count as matching pairs in the contrastive term: the
    # store's own taxonomy as weak labels. Products without the attribute
    # keep only their own second view. None: self-supervised.
    label_attribute: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Self:
        return _from_dict(cls, values)


def _from_dict(cls: type, values: dict[str, Any]) -> Any:
    """Builds a config from JSON values, refusing unknown keys."""
    fields = {field.name: field for field in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(
            f"unknown {cls.__name__} settings {unknown}; "
            f"allowed: {sorted(fields)}"
        )
    # JSON has no tuples; restore them where the default is one.
    converted = {
        name: tuple(value) if isinstance(value, list) else value
        for name, value in values.items()
    }
    return cls(**converted)


def save_json(path: Path, values: dict[str, Any]) -> None:
    """Writes values as indented JSON, atomically."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(values, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named pair of model and training settings. The command line's
    --epochs, --batch-size, --learning-rate and --seed replace the
    training settings of the same names."""

    model: ModelConfig
    train: TrainConfig


# "research" is the notebook's model as it was: a 10-dim sigmoid latent with
# no normalisation, trained on the pixel MSE alone. "default" is what
# Lookalike trains unless told otherwise: the MSE alone, fast enough for
# the demo's two epochs, with a whitened latent. "contrastive" adds
# augmentation and a self-supervised contrastive term, and serves the
# whitened latent at unit length: better neighbours, but it needs several
# epochs to pay. "attributes" also counts products of
# the same articleType as matching pairs and serves unit-length latents
# (cosine ranking), unwhitened: whitening would undo the geometry that
# term trains. It leaves colour unjittered, so that neighbours keep it.
# The best latent measured; it needs a CSV with that column
# (--label-attribute names another). evaluation/RESULTS.md has the
# measurements behind each.
PRESETS: dict[str, Preset] = {
    "research": Preset(
        ModelConfig(
            latent_dim=10, latent_activation="sigmoid", latent_norm=False
        ),
        TrainConfig(),
    ),
    "default": Preset(ModelConfig(whiten_latent=True), TrainConfig()),
    "contrastive": Preset(
        ModelConfig(whiten_latent=True, normalize_latent=True),
        TrainConfig(augment=True, contrastive_weight=0.5, lr_schedule="cosine"),
    ),
    "attributes": Preset(
        ModelConfig(normalize_latent=True),
        TrainConfig(
            augment=True,
            contrastive_weight=0.5,
            lr_schedule="cosine",
            label_attribute="articleType",
            colour_jitter=False,
        ),
    ),
}
