"""A small generated catalog: coloured product-like shapes on white.

Tests use it when the sample photos are absent, and it lets a new user try
the whole pipeline in seconds. Each article type has its own silhouette, so
similar-looking products really are similar.
"""

import csv
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# Same columns as the sample catalog's styles.csv.
COLUMNS = (
    "id",
    "gender",
    "masterCategory",
    "subCategory",
    "articleType",
    "baseColour",
    "season",
    "year",
    "usage",
    "productDisplayName",
)
COLOURS = {
    "Red": (200, 30, 40),
    "Blue": (30, 60, 190),
    "Green": (40, 150, 60),
    "Black": (25, 25, 25),
    "Yellow": (230, 200, 30),
    "Purple": (120, 50, 150),
}
# articleType -> (masterCategory, subCategory).
ARTICLE_TYPES = {
    "Tshirts": ("Apparel", "Topwear"),
    "Trousers": ("Apparel", "Bottomwear"),
    "Watches": ("Accessories", "Watches"),
    "Casual Shoes": ("Footwear", "Shoes"),
    "Handbags": ("Accessories", "Bags"),
}
_SIZE = 112
_FIRST_ID = 50000


def write_synthetic_catalog(
    root: Path, n: int, *, seed: int = 0
) -> tuple[Path, Path]:
    """Writes n JPEG photos and a styles.csv-like CSV under root.

    Returns (image_dir, csv_path). Like the sample, some rows have an empty
    year, usage "NA" and a display name with a comma.
    """
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    root = Path(root)
    image_dir = root / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    csv_path = root / "styles.csv"
    rng = np.random.default_rng(seed)
    types = list(ARTICLE_TYPES)
    colours = list(COLOURS)

    with csv_path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(COLUMNS)
        for index in range(n):
            product_id = str(_FIRST_ID + index)
            article_type = types[index % len(types)]
            colour = colours[int(rng.integers(len(colours)))]
            image = _draw(article_type, COLOURS[colour], rng)
            image.save(image_dir / f"{product_id}.jpg", quality=90)
            master, sub = ARTICLE_TYPES[article_type]
            writer.writerow(
                (
                    product_id,
                    ("Men", "Women", "Unisex")[index % 3],
                    master,
                    sub,
                    article_type,
                    colour,
                    ("Summer", "Winter")[index % 2],
                    "" if index % 7 == 3 else 2011 + index % 4,
                    "NA" if index % 5 == 4 else "Casual",
                    f"Synthetic {colour} {article_type}, style {index}",
                )
            )
    return image_dir, csv_path


def _draw(
    article_type: str, colour: tuple[int, int, int], rng: np.random.Generator
) -> Image.Image:
    image = Image.new("RGB", (_SIZE, _SIZE), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    # A little jitter in position and size, so no two photos are identical.
    dx, dy = (int(v) for v in rng.integers(-6, 7, size=2))
    s = 1.0 + float(rng.uniform(-0.1, 0.1))

    def box(x0: float, y0: float, x1: float, y1: float) -> list[float]:
        c = _SIZE / 2
        return [
            c + (x0 - c) * s + dx,
            c + (y0 - c) * s + dy,
            c + (x1 - c) * s + dx,
            c + (y1 - c) * s + dy,
        ]

    if article_type == "Tshirts":
        draw.rectangle(box(36, 30, 76, 92), fill=colour)
        draw.rectangle(box(16, 30, 36, 50), fill=colour)
        draw.rectangle(box(76, 30, 96, 50), fill=colour)
    elif article_type == "Trousers":
        draw.rectangle(box(34, 16, 78, 34), fill=colour)
        draw.rectangle(box(34, 34, 53, 98), fill=colour)
        draw.rectangle(box(59, 34, 78, 98), fill=colour)
    elif article_type == "Watches":
        draw.rectangle(box(48, 10, 64, 102), fill=(60, 60, 60))
        draw.ellipse(box(34, 34, 78, 78), fill=colour, outline=(0, 0, 0))
    elif article_type == "Casual Shoes":
        draw.polygon(
            [(x * s + dx, y * s + dy) for x, y in _SHOE],
            fill=colour,
        )
        draw.rectangle(box(14, 74, 100, 82), fill=(240, 240, 240))
    else:
        draw.arc(box(38, 18, 74, 58), 180, 360, fill=colour, width=5)
        draw.rectangle(box(24, 38, 88, 94), fill=colour)
    return image


_SHOE = ((14, 74), (16, 56), (40, 50), (60, 62), (96, 66), (100, 74))
