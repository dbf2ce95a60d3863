"""Decoding of product photos into the model's fixed-size RGB input.

Every image, whether it comes from the catalog folder, a gRPC request or a
TFDS dataset, goes through ``preprocess`` so that training, indexing and
serving see exactly the same pixels.
"""

import io
import math
import numbers
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

# Bump when the pixels preprocess produces change, so caches of decoded
# catalogs are rebuilt rather than silently mixed with new ones.
PREPROCESS_VERSION = 1

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP")
_ALLOWED_TEXT = "JPEG, PNG or WebP"
_WHITE = (255, 255, 255)

# Signatures of common formats we refuse, to name them in the error instead
# of a bare "unrecognised".
_KNOWN_SIGNATURES = (
    (0, b"GIF8", "GIF"),
    (0, b"BM", "BMP"),
    (0, b"II*\x00", "TIFF"),
    (0, b"MM\x00*", "TIFF"),
    (0, b"%PDF", "PDF"),
    (4, b"ftypheic", "HEIC"),
    (4, b"ftypavif", "AVIF"),
)

# EXIF orientations 5-8 swap width and height.
_TRANSPOSING_ORIENTATIONS = frozenset({5, 6, 7, 8})
_EXIF_ORIENTATION_TAG = 0x0112


class ImageError(ValueError):
    """An image that cannot be used, with a short machine-friendly reason.

    ``reason`` is one of a few fixed strings ("empty", "unsupported format",
    "too large", "corrupt", "unreadable") so that jobs can count failures by
    kind; the message says what exactly was wrong.
    """

    def __init__(self, message: str, *, reason: str = "corrupt") -> None:
        super().__init__(message)
        self.reason = reason


def decode_image(
    data: bytes, *, height: int, width: int, max_pixels: int | None = None
) -> np.ndarray:
    """Decodes JPEG/PNG/WebP bytes into uint8 [height, width, 3] RGB.

    The format is taken from the bytes, never from a file name. The pixel
    count is checked from the header before any pixel is decoded; with
    ``max_pixels=None`` Pillow's own decompression-bomb limit applies.
    """
    _check_size(height, width)
    if not data:
        raise ImageError(
            f"image is empty (0 bytes); expected {_ALLOWED_TEXT} data",
            reason="empty",
        )
    try:
        image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except Image.DecompressionBombError as error:
        raise ImageError(
            f"image is too large: {error}", reason="too large"
        ) from error
    except Image.UnidentifiedImageError as error:
        raise ImageError(
            f"{_describe_unsupported(data)}; allowed formats: {_ALLOWED_TEXT}",
            reason="unsupported format",
        ) from error
    except Exception as error:
        # Pillow raises many exception types on hostile headers.
        raise ImageError(
            f"cannot read image header ({error}); expected {_ALLOWED_TEXT}"
        ) from error

    with image:
        image_width, image_height = image.size
        limit = max_pixels if max_pixels is not None else Image.MAX_IMAGE_PIXELS
        if limit is not None and image_width * image_height > limit:
            raise ImageError(
                f"image is {image_width}x{image_height} = "
                f"{image_width * image_height} pixels; at most {limit} "
                "pixels are allowed",
                reason="too large",
            )
        try:
            _draft(image, height=height, width=width)
            # exif_transpose loads the pixels, so truncation shows up here.
            image = ImageOps.exif_transpose(image)
            return preprocess(image, height=height, width=width)
        except ImageError:
            raise
        except Exception as error:
            raise ImageError(
                f"cannot decode {image.format} image: {error}"
            ) from error


def decode_image_file(
    path: Path, *, height: int, width: int, max_pixels: int | None = None
) -> np.ndarray:
    """Reads and decodes one image file; see ``decode_image``."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise ImageError(
            f"cannot read {path}: {error.strerror or error}",
            reason="unreadable",
        ) from error
    try:
        return decode_image(
            data, height=height, width=width, max_pixels=max_pixels
        )
    except ImageError as error:
        raise ImageError(f"{path}: {error}", reason=error.reason) from error


def preprocess(image: Image.Image, *, height: int, width: int) -> np.ndarray:
    """Converts a loaded image to RGB and fits it into height x width.

    The aspect ratio is kept: the image is scaled to fit and centred on a
    white canvas, since catalog photos are shot on white.
    """
    _check_size(height, width)
    rgb = to_rgb(image)
    scale = min(width / rgb.width, height / rgb.height)
    size = (
        min(width, max(1, round(rgb.width * scale))),
        min(height, max(1, round(rgb.height * scale))),
    )
    if size != rgb.size:
        # Pillow's bilinear filter widens its support when shrinking, so it
        # antialiases; reducing_gap first box-averages by an integer factor,
        # which is much faster on large photos and looks the same.
        rgb = rgb.resize(
            size, resample=Image.Resampling.BILINEAR, reducing_gap=3.0
        )
    if size != (width, height):
        canvas = Image.new("RGB", (width, height), _WHITE)
        canvas.paste(rgb, ((width - size[0]) // 2, (height - size[1]) // 2))
        rgb = canvas
    return np.asarray(rgb, dtype=np.uint8)


def to_rgb(image: Image.Image) -> Image.Image:
    """Converts any Pillow mode to 8-bit RGB, compositing alpha over white."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return Image.fromarray(_high_depth_to_uint8(image), mode="L").convert(
            "RGB"
        )
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode == "P" and "transparency" in image.info
    )
    if has_alpha:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, _WHITE + (255,))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    # P without transparency, L, 1, CMYK, YCbCr, LAB, HSV.
    return image.convert("RGB")


def _high_depth_to_uint8(image: Image.Image) -> np.ndarray:
    """Maps 16-bit, 32-bit integer and float grey levels to 0..255.

    A fixed mapping per mode, not a per-image stretch, so a dark photo stays
    dark: 16-bit modes use the full 16-bit range; 32-bit integers are read
    as 8-bit when they fit and as 16-bit otherwise; floats are read as 0..1
    when they fit and as 0..255 otherwise. Out-of-range values are clipped.
    """
    values = np.asarray(image).astype(np.float64)
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    peak = float(values.max()) if values.size else 0.0
    if image.mode.startswith("I;16"):
        values = values / 257.0
    elif image.mode == "I":
        if peak > 255:
            values = values / 257.0
    elif peak <= 1.0:
        values = values * 255.0
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _draft(image: Image.Image, *, height: int, width: int) -> None:
    """Lets the JPEG decoder skip detail the target size cannot show.

    JPEG can decode at 1/2, 1/4 or 1/8 scale almost for free; we ask for
    twice the final size so the remaining resize still antialiases.
    """
    if image.format != "JPEG":
        return
    raw_width, raw_height = image.size
    oriented_width, oriented_height = raw_width, raw_height
    orientation = image.getexif().get(_EXIF_ORIENTATION_TAG)
    if orientation in _TRANSPOSING_ORIENTATIONS:
        oriented_width, oriented_height = raw_height, raw_width
    scale = min(width / oriented_width, height / oriented_height)
    image.draft(
        None,
        (
            math.ceil(raw_width * scale * 2),
            math.ceil(raw_height * scale * 2),
        ),
    )


def _describe_unsupported(data: bytes) -> str:
    for offset, signature, name in _KNOWN_SIGNATURES:
        if data[offset : offset + len(signature)] == signature:
            return f"{name} images are not supported"
    return "data is not a recognisable image"


def _check_size(height: int, width: int) -> None:
    for name, value in (("height", height), ("width", width)):
        if not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(
                f"target {name} must be a positive integer, got {value!r}"
            )
