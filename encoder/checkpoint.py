"""Saving and restoring the autoencoder's variables with Orbax.

A checkpoint holds two trees: ``params`` (trainable) and ``batch_stats``
(BatchNorm running averages), as plain nested dicts of arrays, so it can be
read without this package's module classes.
"""

import logging
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from flax import nnx

from encoder.config import ModelConfig
from encoder.model import Autoencoder

logger = logging.getLogger(__name__)


def model_variables(model: Autoencoder) -> dict[str, Any]:
    """The checkpointed trees of a model as plain dicts."""
    _, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    return {
        "params": nnx.to_pure_dict(params),
        "batch_stats": nnx.to_pure_dict(batch_stats),
    }


class CheckpointWriter:
    """Writes checkpoints in the background, one at a time, to one path."""

    def __init__(self, path: Path):
        self.path = Path(path).absolute()
        self._checkpointer = ocp.StandardCheckpointer()

    def save(self, variables: dict[str, Any]) -> None:
        # The previous write must finish before its directory is replaced.
        self._checkpointer.wait_until_finished()
        self._checkpointer.save(self.path, variables, force=True)

    def close(self) -> None:
        self._checkpointer.wait_until_finished()
        self._checkpointer.close()


def restore_model(
    path: Path, config: ModelConfig, *, fast: bool = True
) -> Autoencoder:
    """Builds the model for config and loads the checkpoint at path."""
    path = Path(path).absolute()
    if not path.is_dir():
        raise FileNotFoundError(
            f"no checkpoint at {path}; train a model into this workdir first"
        )
    abstract = nnx.eval_shape(
        lambda: Autoencoder(config, rngs=nnx.Rngs(0), fast=fast)
    )
    graphdef, params, batch_stats = nnx.split(
        abstract, nnx.Param, nnx.BatchStat
    )
    target = {
        "params": nnx.to_pure_dict(params),
        "batch_stats": nnx.to_pure_dict(batch_stats),
    }
    checkpointer = ocp.StandardCheckpointer()
    try:
        restored = checkpointer.restore(path, target)
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"checkpoint at {path} does not match the model in its "
            f"config.json ({error})"
        ) from error
    finally:
        checkpointer.close()
    _check_shapes(target, restored, path)
    nnx.replace_by_pure_dict(params, restored["params"])
    nnx.replace_by_pure_dict(batch_stats, restored["batch_stats"])
    return nnx.merge(graphdef, params, batch_stats)


def _check_shapes(target: Any, restored: Any, path: Path) -> None:
    expected = jax.tree.map(lambda leaf: tuple(leaf.shape), target)
    found = jax.tree.map(lambda leaf: tuple(leaf.shape), restored)
    if expected != found:
        raise ValueError(
            f"checkpoint at {path} has parameter shapes that do not match "
            "the model in its config.json; was config.json edited?"
        )
