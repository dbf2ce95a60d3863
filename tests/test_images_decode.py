"""Decoding and preprocessing of product photos (encoder/images.py)."""

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from encoder.images import (
    ImageError,
    decode_image,
    decode_image_file,
    preprocess,
    to_rgb,
)

HEIGHT, WIDTH = 80, 60
RED = (200, 30, 40)
WHITE = (255, 255, 255)


def encode(image: Image.Image, image_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def decode(data: bytes, **options) -> np.ndarray:
    return decode_image(data, height=HEIGHT, width=WIDTH, **options)


def centre(pixels: np.ndarray) -> np.ndarray:
    return pixels[pixels.shape[0] // 2, pixels.shape[1] // 2].astype(int)


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height, with no real pixel data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + chunk(b"IEND", b"")
    )


def palette_with_transparency() -> Image.Image:
    # Left half palette index 0 (red, opaque), right half index 1 (clear).
    image = Image.new("P", (40, 40), 0)
    image.putpalette(list(RED) + [0, 0, 255] + [0, 0, 0] * 254)
    image.paste(1, (20, 0, 40, 40))
    image.info["transparency"] = 1
    return image


@pytest.mark.parametrize("image_format", ["JPEG", "PNG", "WEBP"])
def test_decodes_allowed_formats_to_uint8_rgb(image_format: str) -> None:
    data = encode(Image.new("RGB", (30, 40), RED), image_format)
    pixels = decode(data)
    assert (pixels.shape, pixels.dtype) == ((HEIGHT, WIDTH, 3), np.uint8)


@pytest.mark.parametrize(
    ("name", "image", "image_format", "expected"),
    [
        (
            "P",
            Image.new("RGB", (40, 40), RED).convert(
                "P", palette=Image.Palette.ADAPTIVE
            ),
            "PNG",
            RED,
        ),
        ("L", Image.new("L", (40, 40), 100), "PNG", (100, 100, 100)),
        ("1", Image.new("1", (40, 40), 0), "PNG", (0, 0, 0)),
        ("RGBA clear", Image.new("RGBA", (40, 40), (0, 0, 0, 0)), "PNG", WHITE),
        (
            "RGBA half",
            Image.new("RGBA", (40, 40), (255, 0, 0, 128)),
            "PNG",
            (255, 127, 127),
        ),
        ("LA clear", Image.new("LA", (40, 40), (0, 0)), "PNG", WHITE),
        ("LA opaque", Image.new("LA", (40, 40), (0, 255)), "PNG", (0, 0, 0)),
        (
            "CMYK",
            Image.new("CMYK", (40, 40), (255, 0, 0, 0)),
            "JPEG",
            (0, 255, 255),
        ),
        (
            "I;16",
            Image.fromarray(np.full((40, 40), 30000, np.uint16)),
            "PNG",
            (117, 117, 117),
        ),
        ("RGBA webp", Image.new("RGBA", (40, 40), (0, 0, 0, 0)), "WEBP", WHITE),
    ],
)
def test_modes_become_rgb_over_white(
    name: str, image: Image.Image, image_format: str, expected: tuple
) -> None:
    pixels = decode(encode(image, image_format))
    np.testing.assert_allclose(centre(pixels), expected, atol=3)


def test_palette_transparency_becomes_white() -> None:
    pixels = decode(encode(palette_with_transparency(), "PNG"))
    np.testing.assert_array_equal(pixels[40, 50], WHITE)


def test_palette_opaque_entries_keep_their_colour() -> None:
    pixels = decode(encode(palette_with_transparency(), "PNG"))
    np.testing.assert_array_equal(pixels[40, 10], RED)


@pytest.mark.parametrize(
    ("name", "image", "expected"),
    [
        (
            "PA clear",
            palette_with_transparency().crop((20, 0, 40, 40)).convert("PA"),
            WHITE,
        ),
        ("I 8-bit", Image.fromarray(np.full((8, 8), 100, np.int32)), 100),
        ("I 16-bit", Image.fromarray(np.full((8, 8), 65535, np.int32)), 255),
        ("I negative", Image.fromarray(np.full((8, 8), -5, np.int32)), 0),
        ("F unit", Image.fromarray(np.full((8, 8), 0.5, np.float32)), 128),
        ("F 8-bit", Image.fromarray(np.full((8, 8), 200.0, np.float32)), 200),
        ("F nan", Image.fromarray(np.full((8, 8), np.nan, np.float32)), 0),
        ("YCbCr", Image.new("RGB", (8, 8), RED).convert("YCbCr"), RED),
    ],
)
def test_to_rgb_maps_other_modes(
    name: str, image: Image.Image, expected: int | tuple
) -> None:
    rgb = to_rgb(image)
    assert rgb.mode == "RGB"
    pixel = rgb.getpixel((6, 4))
    target = (expected,) * 3 if isinstance(expected, int) else expected
    np.testing.assert_allclose(pixel, target, atol=3)


def test_exif_orientation_is_applied() -> None:
    # Stored landscape: red left, blue right. Orientation 6 means "rotate
    # 90 degrees clockwise to display", which puts red on top.
    stored = Image.new("RGB", (80, 40), (255, 0, 0))
    stored.paste((0, 0, 255), (40, 0, 80, 40))
    exif = Image.Exif()
    exif[0x0112] = 6
    pixels = decode_image(
        encode(stored, "JPEG", exif=exif.tobytes()), height=80, width=40
    )
    np.testing.assert_allclose(pixels[10, 20], (255, 0, 0), atol=40)
    np.testing.assert_allclose(pixels[70, 20], (0, 0, 255), atol=40)


def test_aspect_is_kept_by_padding_with_white() -> None:
    # 100x50 fits the 60-wide box as 60x30, centred in 80 rows.
    pixels = decode(encode(Image.new("RGB", (100, 50), RED), "PNG"))
    assert (pixels[:24] == 255).all() and (pixels[56:] == 255).all()


def test_aspect_fit_fills_the_other_dimension() -> None:
    pixels = decode(encode(Image.new("RGB", (100, 50), RED), "PNG"))
    np.testing.assert_array_equal(pixels[25:55].reshape(-1, 3).min(0), RED)


@pytest.mark.parametrize("size", [(1000, 1), (1, 1000), (1, 1)])
def test_extreme_aspect_ratios_decode(size: tuple[int, int]) -> None:
    pixels = decode(encode(Image.new("RGB", size, RED), "PNG"))
    assert pixels.shape == (HEIGHT, WIDTH, 3)


def test_upscales_small_images() -> None:
    pixels = decode(encode(Image.new("L", (28, 28), 0), "PNG"))
    assert (pixels[10:70] == 0).all()


@pytest.mark.parametrize(
    ("file_name", "image_format"),
    [("photo.jpg", "PNG"), ("photo.png", "JPEG"), ("photo", "WEBP")],
)
def test_format_is_sniffed_not_taken_from_the_name(
    tmp_path: Path, file_name: str, image_format: str
) -> None:
    path = tmp_path / file_name
    path.write_bytes(encode(Image.new("RGB", (30, 40), RED), image_format))
    pixels = decode_image_file(path, height=HEIGHT, width=WIDTH)
    np.testing.assert_allclose(centre(pixels), RED, atol=4)


@pytest.mark.parametrize(
    ("name", "data", "reason", "message"),
    [
        ("empty", b"", "empty", "empty"),
        (
            "garbage",
            b"\x00not an image at all" * 10,
            "unsupported format",
            "JPEG",
        ),
        (
            "gif",
            encode(Image.new("RGB", (8, 8)), "GIF"),
            "unsupported format",
            "GIF",
        ),
        (
            "bmp",
            encode(Image.new("RGB", (8, 8)), "BMP"),
            "unsupported format",
            "BMP",
        ),
        (
            "truncated jpeg",
            encode(Image.effect_noise((64, 64), 50).convert("RGB"), "JPEG")[
                :400
            ],
            "corrupt",
            "JPEG",
        ),
        ("png header only", png_header(32, 32), "corrupt", "PNG"),
    ],
)
def test_bad_data_raises_image_error(
    name: str, data: bytes, reason: str, message: str
) -> None:
    with pytest.raises(ImageError, match=message) as caught:
        decode(data)
    assert caught.value.reason == reason


def test_over_max_pixels_is_refused_before_decoding() -> None:
    # The pixel data is invalid, so only a header check can say "too large".
    with pytest.raises(ImageError, match="at most 1000000 pixels") as caught:
        decode(png_header(5000, 5000), max_pixels=1_000_000)
    assert caught.value.reason == "too large"


def test_decompression_bomb_is_refused_without_max_pixels() -> None:
    with pytest.raises(ImageError) as caught:
        decode(png_header(30000, 30000))
    assert caught.value.reason == "too large"


def test_missing_file_raises_image_error(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="cannot read") as caught:
        decode_image_file(tmp_path / "absent.jpg", height=HEIGHT, width=WIDTH)
    assert caught.value.reason == "unreadable"


@pytest.mark.parametrize(("height", "width"), [(0, 60), (80, -1), (80, 2.5)])
def test_bad_target_size_is_refused(height: int, width: int) -> None:
    with pytest.raises(ValueError, match="positive integer"):
        preprocess(Image.new("RGB", (4, 4)), height=height, width=width)


def test_real_photo_decodes_like_the_sample(small_catalog) -> None:
    image_dir, _ = small_catalog
    path = sorted(image_dir.iterdir())[0]
    pixels = decode_image_file(path, height=HEIGHT, width=WIDTH)
    # Catalog photos are on white, so the corners stay white.
    assert (pixels[0, 0] > 240).all() and (pixels[-1, -1] > 240).all()
