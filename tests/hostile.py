"""Hostile and odd image files, generated: what a served model meets in the wild. Each `Case` says what its file
must get: a label (`error=None`), or an error row whose message holds `error` (lower case)."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
OVER_THE_LIMIT = "over the limit of 40 megapixels (max_pixels=40000000)"


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes
    error: str | None  # None: the file gets a label


def picture(seed: int, width: int = 48, height: int = 36) -> np.ndarray:
    """A colour gradient plus noise, (height, width, 3) uint8, asymmetric (no rotation or mirror maps it onto
    itself)."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 1, width)[None, :, None] * rng.uniform(60, 255, 3)
    ramp = ramp + np.linspace(0, 1, height)[:, None, None] ** 2 * 120
    return np.clip(ramp + rng.normal(0, 8, (height, width, 3)), 0, 255).astype("uint8")


def encode(pixels: np.ndarray, fmt: str, mode: str = "RGB", **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png(width: int, height: int, rows: Iterator[bytes], bit_depth: int = 8, colour_type: int = 0) -> bytes:
    """A PNG written row by row (each row unfiltered), compressed as it streams: a 400-megapixel one never exists
    uncompressed, here or anywhere but in a decoder that believes its header."""
    compressor, parts = zlib.compressobj(9), []
    for row in rows:
        parts.append(compressor.compress(b"\x00" + row))
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return PNG_SIGNATURE + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", b"".join(parts)) + png_chunk(b"IEND", b"")


def bomb_png(width: int, height: int) -> bytes:
    """A black greyscale PNG of width x height: about a thousandth of its pixels in bytes."""
    row = bytes(width)
    return png(width, height, (row for _ in range(height)))


def rgb16_png(pixels: np.ndarray) -> bytes:
    """16-bit RGB (which PIL cannot write): each 8-bit value v as v * 257, big-endian."""
    wide = (pixels.astype(">u2") * 257).reshape(pixels.shape[0], -1)
    return png(pixels.shape[1], pixels.shape[0], (r.tobytes() for r in wide), bit_depth=16, colour_type=2)


def gif_bomb(width: int, height: int, frames: int) -> bytes:
    """A GIF whose canvas is width x height with `frames` one-pixel frames: a few bytes each, a full canvas each in
    TensorFlow's decoder."""
    screen = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"  # one pixel, colour 0
    return screen + frame * frames + b"\x3b"


def jpeg_claiming(width: int, height: int) -> bytes:
    """A small JPEG whose frame header claims width x height."""
    data = bytearray(encode(picture(9), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def animated_gif(seed: int) -> bytes:
    frames = [Image.fromarray(picture(seed + i)) for i in range(3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buffer.getvalue()


def palette_png_with_transparency(seed: int) -> bytes:
    image = Image.fromarray(picture(seed)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", transparency=0)
    return buffer.getvalue()


def corpus() -> list[Case]:
    """The hostile and odd files, each with what it must get. The bombs stay within a few hundred MB should the
    limit ever stop refusing them: a failing test, not a machine out of memory."""
    jpeg = encode(picture(1, 160, 120), "JPEG", quality=90)
    frame_header = jpeg.index(b"\xff\xc0")
    return [
        Case("empty.jpg", b"", "empty file"),
        Case("truncated.jpg", jpeg[: len(jpeg) // 2], "jpeg"),
        Case("no-frame-header.jpg", jpeg[:frame_header], "truncated jpeg: no frame header"),
        Case("png-named.jpg", encode(picture(2), "PNG"), None),
        Case("text.png", b"<html>502 Bad Gateway</html>", "unknown image file format"),
        Case("cmyk.jpg", encode(picture(3), "JPEG", mode="CMYK"), None),
        Case("grey16.png", encode(picture(4)[:, :, 0].astype("uint16") * 257, "PNG", mode="I;16"), None),
        Case("rgb16.png", rgb16_png(picture(5)), None),
        Case("palette-transparent.png", palette_png_with_transparency(6), None),
        Case("animated.gif", animated_gif(7), None),
        Case("bomb-100mp.png", bomb_png(10_000, 10_000), OVER_THE_LIMIT),
        Case("bomb-gif-frames.gif", gif_bomb(1_600, 1_600, 20), OVER_THE_LIMIT),
        Case("lying-header.jpg", jpeg_claiming(12_000, 12_000), OVER_THE_LIMIT),
    ]
