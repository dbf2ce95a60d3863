"""The report's figures, one function per PNG.

Each function draws one figure with matplotlib's Agg backend (no display
needed), saves it and closes it, so that a long report does not keep
figures in memory.
"""

import collections
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from encoder.catalog import CatalogImages  # noqa: E402
from evaluation import metrics  # noqa: E402

DPI = 110
# Categories beyond this many are drawn grey as "other", since more colours
# than this cannot be told apart in a legend.
MAX_LEGEND_ENTRIES = 10
OTHER = "other"
MISSING = "(none)"
# Neighbours per strip and products per cluster row.
STRIP_NEIGHBOURS = 8
CLUSTER_SAMPLES = 10
# Rows of the reconstruction figures and epochs shown at most.
MAX_EXAMPLES = 8
MAX_EPOCH_COLUMNS = 8
CONFUSION_TYPES = 15
CONFUSION_NEIGHBOURS = 10
# Points drawn in the scatter plots; more only hide each other.
MAX_SCATTER_POINTS = 4000


def reconstructions(
    originals: np.ndarray, rebuilt: np.ndarray, path: Path
) -> None:
    """Originals (top row) above their reconstructions (bottom row)."""
    n = min(len(originals), MAX_EXAMPLES)
    fig, axes = plt.subplots(2, n, figsize=(1.4 * n + 1.2, 4.2), squeeze=False)
    for column in range(n):
        _show(axes[0, column], originals[column])
        _show(axes[1, column], rebuilt[column])
    axes[0, 0].set_ylabel("original", fontsize=11)
    axes[1, 0].set_ylabel("rebuilt", fontsize=11)
    fig.suptitle("Validation photos and their reconstructions")
    _save(fig, path)


def reconstruction_epochs(
    originals: np.ndarray,
    per_epoch: Sequence[np.ndarray],
    epochs: Sequence[int],
    path: Path,
) -> None:
    """One row per photo: the original, then its reconstruction by epoch."""
    # Long runs: first, last and evenly spaced epochs in between.
    shown = np.unique(
        np.linspace(0, len(epochs) - 1, min(len(epochs), MAX_EPOCH_COLUMNS))
        .round()
        .astype(int)
    )
    rows = min(len(originals), MAX_EXAMPLES // 2 + 2)
    columns = 1 + len(shown)
    fig, axes = plt.subplots(
        rows,
        columns,
        figsize=(1.3 * columns + 0.6, 1.65 * rows + 0.8),
        squeeze=False,
    )
    for row in range(rows):
        _show(axes[row, 0], originals[row])
        for column, index in enumerate(shown, start=1):
            _show(axes[row, column], per_epoch[index][row])
    axes[0, 0].set_title("original", fontsize=9)
    for column, index in enumerate(shown, start=1):
        axes[0, column].set_title(f"epoch {epochs[index]}", fontsize=9)
    fig.suptitle("Reconstructions as training goes on")
    _save(fig, path)


def loss_curves(
    history: Sequence[Mapping[str, float]],
    path: Path,
    label_attribute: str | None = None,
) -> None:
    """Training and validation loss by epoch, best epoch marked: the
    reconstruction MSE, and beside it the contrastive term when training
    had one. With ``label_attribute`` the training term also counted
    products sharing that attribute as pairs; validation never does, so
    the two contrastive curves measure different things."""
    epochs = [entry.get("epoch", i + 1) for i, entry in enumerate(history)]
    # Histories written before the contrastive term have only the MSE.
    panels = [("reconstruction", "reconstruction loss (MSE)")]
    if any(entry.get("train_contrastive") for entry in history):
        panels.append(("contrastive", "contrastive loss (NT-Xent)"))
    best = int(np.argmin([entry["val_loss"] for entry in history]))
    fig, axes = plt.subplots(
        1, len(panels), figsize=(7 * len(panels), 4.2), squeeze=False
    )
    for ax, (name, label) in zip(axes[0], panels, strict=True):
        train = [
            entry.get(f"train_{name}", entry["train_loss"]) for entry in history
        ]
        val = [entry.get(f"val_{name}", entry["val_loss"]) for entry in history]
        train_label, val_label = "training", "validation"
        if name == "contrastive" and label_attribute:
            train_label += f" (photo and same-{label_attribute} pairs)"
            val_label += " (photo pairs only)"
        ax.plot(epochs, train, "o-", label=train_label)
        ax.plot(epochs, val, "s-", label=val_label)
        ax.plot(
            [epochs[best]],
            [val[best]],
            "*",
            markersize=16,
            color="crimson",
            label=f"kept (epoch {epochs[best]}, {val[best]:.4f})",
        )
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_xticks(epochs if len(epochs) <= 20 else ax.get_xticks())
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("Training curves")
    _save(fig, path)


def latent_scatter(
    latents: np.ndarray,
    colourings: Mapping[str, Sequence[object]],
    path: Path,
    dims: int,
) -> None:
    """Latents on their first ``dims`` (2 or 3) principal components, one
    panel per colouring, each with its own legend below it."""
    coords = _principal_coordinates(latents, dims)
    rng = np.random.default_rng(0)
    shown = np.arange(len(latents))
    if len(shown) > MAX_SCATTER_POINTS:
        shown = np.sort(rng.choice(shown, MAX_SCATTER_POINTS, replace=False))
    panels = len(colourings)
    fig = plt.figure(figsize=(5.2 * panels, 6.4))
    for panel, (name, labels) in enumerate(colourings.items(), start=1):
        names, colours = _palette([labels[i] for i in shown])
        if dims == 3:
            ax = fig.add_subplot(1, panels, panel, projection="3d")
        else:
            ax = fig.add_subplot(1, panels, panel)
        for label in names:
            members = shown[colours == label]
            if not len(members):
                continue
            points = [coords[members, d] for d in range(dims)]
            ax.scatter(
                *points,
                s=7,
                alpha=0.7,
                color=names[label],
                label=f"{label} ({len(members)})",
            )
        ax.set_title(f"coloured by {name}")
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
        if dims == 3:
            ax.set_zlabel("PC 3")
            ax.tick_params(labelsize=7)
        ax.legend(
            loc="upper center",
            bbox_to_anchor=(0.5, -0.12),
            ncol=2,
            fontsize=8,
            markerscale=2.5,
            frameon=False,
        )
    title = f"Product latents, first {dims} principal components"
    if len(shown) < len(latents):
        title += f" ({len(shown)} of {len(latents)} shown)"
    fig.suptitle(title)
    _save(fig, path)


def cluster_grid(
    images: np.ndarray,
    latents: np.ndarray,
    centroids: np.ndarray,
    clusters: np.ndarray,
    path: Path,
) -> None:
    """One row per cluster: its products nearest to the centre."""
    k = len(centroids)
    fig, axes = plt.subplots(
        k,
        CLUSTER_SAMPLES,
        figsize=(1.05 * CLUSTER_SAMPLES + 1.6, 1.45 * k + 0.7),
        squeeze=False,
    )
    for c in range(k):
        members = np.flatnonzero(clusters == c)
        distance = np.linalg.norm(latents[members] - centroids[c], axis=1)
        members = members[np.argsort(distance, kind="stable")]
        for column in range(CLUSTER_SAMPLES):
            ax = axes[c, column]
            if column < len(members):
                _show(ax, images[members[column]])
            else:
                ax.axis("off")
        axes[c, 0].axis("on")
        axes[c, 0].set_xticks([])
        axes[c, 0].set_yticks([])
        axes[c, 0].set_ylabel(
            f"cluster {c}\n{len(members)} products", fontsize=9
        )
    fig.suptitle("Products nearest to each cluster centre")
    _save(fig, path)


def neighbour_strips(
    catalog: CatalogImages,
    latents: np.ndarray,
    rows: Sequence[int],
    path: Path,
) -> None:
    """For each chosen product: it, then its nearest other products."""
    k = min(STRIP_NEIGHBOURS, len(latents) - 1)
    found = metrics.nearest_neighbors(latents, latents, k, exclude_self=True)
    fig, axes = plt.subplots(
        len(rows),
        k + 1,
        figsize=(1.35 * (k + 1) + 0.4, 2.05 * len(rows) + 0.6),
        squeeze=False,
    )
    for strip, row in enumerate(rows):
        product = catalog.products[row]
        _show(axes[strip, 0], catalog.images[row])
        axes[strip, 0].set_title(
            _short(f"{product.product_id}\n{_type(product)}"),
            fontsize=8,
            color="crimson",
        )
        for column in range(k):
            neighbour = int(found.indices[row, column])
            other = catalog.products[neighbour]
            _show(axes[strip, column + 1], catalog.images[neighbour])
            axes[strip, column + 1].set_title(
                _short(f"d={found.distances[row, column]:.3f}\n{_type(other)}"),
                fontsize=8,
            )
    fig.suptitle("Query product (left, red) and its nearest look-alikes")
    _save(fig, path)


def neighbour_confusion(
    latents: np.ndarray, types: Sequence[object], path: Path
) -> None:
    """Heat map: for the most frequent types, the share of their products'
    nearest neighbours that have each type."""
    keep = np.flatnonzero(~metrics.missing_mask(types))
    labels = [str(types[i]) for i in keep]
    vectors = latents[keep]
    k = min(CONFUSION_NEIGHBOURS, len(keep) - 1)
    found = metrics.nearest_neighbors(vectors, vectors, k, exclude_self=True)
    counts = collections.Counter(labels)
    top = [name for name, _ in counts.most_common(CONFUSION_TYPES)]
    columns = top + ([OTHER] if len(counts) > len(top) else [])
    position = {name: i for i, name in enumerate(top)}
    matrix = np.zeros((len(top), len(columns)))
    for query, neighbours in enumerate(found.indices):
        if labels[query] not in position:
            continue
        for neighbour in neighbours:
            column = position.get(labels[neighbour], len(columns) - 1)
            matrix[position[labels[query]], column] += 1
    matrix /= np.maximum(matrix.sum(axis=1, keepdims=True), 1)

    size = 0.55 * len(columns) + 3.5
    fig, ax = plt.subplots(figsize=(size + 1.5, 0.5 * len(top) + 3))
    image = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(columns)))
    ax.set_xticklabels(columns, rotation=45, ha="right", fontsize=9)
    ax.set_yticks(range(len(top)))
    ax.set_yticklabels([f"{name} ({counts[name]})" for name in top], fontsize=9)
    for i in range(len(top)):
        for j in range(len(columns)):
            if matrix[i, j] >= 0.005:
                ax.text(
                    j,
                    i,
                    f"{100 * matrix[i, j]:.0f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if matrix[i, j] > 0.5 else "black",
                )
    ax.set_xlabel("article type of a neighbour")
    ax.set_ylabel("article type of the product (count)")
    ax.set_title(
        f"Where the {k} nearest neighbours of each type land (% of row)"
    )
    fig.colorbar(image, ax=ax, fraction=0.035, label="share of neighbours")
    _save(fig, path)


def _principal_coordinates(x: np.ndarray, dims: int) -> np.ndarray:
    """x on its first ``dims`` principal axes (zeros past its rank)."""
    centred = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    coords = centred @ vt[:dims].T
    if coords.shape[1] < dims:
        pad = np.zeros((len(x), dims - coords.shape[1]))
        coords = np.concatenate([coords, pad], axis=1)
    return coords


def _palette(
    labels: Sequence[object],
) -> tuple[dict[str, tuple], np.ndarray]:
    """Colours for the most frequent labels, grey for the rest.

    Returns {shown label: colour} in legend order and each item's shown
    label.
    """
    text = [MISSING if metrics.is_missing(v) else str(v) for v in labels]
    counts = collections.Counter(text)
    if len(counts) <= MAX_LEGEND_ENTRIES:
        top = sorted(counts, key=_natural)
    else:
        top = sorted(
            (name for name, _ in counts.most_common(MAX_LEGEND_ENTRIES - 1)),
            key=_natural,
        )
    cmap = plt.get_cmap("tab10")
    names = {name: cmap(i % 10) for i, name in enumerate(top)}
    shown = np.array([name if name in names else OTHER for name in text])
    if (shown == OTHER).any():
        names[OTHER] = (0.6, 0.6, 0.6, 1.0)
    return names, shown


def _natural(name: str) -> tuple:
    # "cluster 10" after "cluster 9".
    head, _, tail = name.rpartition(" ")
    return (head, int(tail), "") if tail.isdigit() else (name, -1, name)


def _type(product) -> str:
    return str(product.attributes.get("articleType", ""))


def _short(text: str, width: int = 16) -> str:
    return "\n".join(
        line if len(line) <= width else line[: width - 1] + "…"
        for line in text.split("\n")
    )


def _show(ax, image: np.ndarray) -> None:
    ax.imshow(np.asarray(image), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    # "tight" keeps legends placed below their axes inside the picture.
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
