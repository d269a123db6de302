"""What an image file's header says, read without decoding a pixel: format, size, frame count, EXIF orientation.

`catdog.data.images` checks the pixel limit on it before TensorFlow allocates anything: TensorFlow decodes a GIF's every
frame onto its full canvas and a 1 MB PNG into 400 megapixels. The formats are those `tf.io.decode_image` reads
(JPEG, PNG, GIF, BMP, WebP); anything else, or a header cut short, is an `ImageError` here. No TensorFlow import.
"""

from __future__ import annotations

from dataclasses import dataclass

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers: C0-CF but for DHT (C4), JPG (C8) and DAC (CC).
JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
JPEG_STANDALONE = frozenset([0x01, 0xD8, *range(0xD0, 0xD8)])
EXIF_PREFIX = b"Exif\x00\x00"
ORIENTATION_TAG = 0x0112
GIF_TRAILER, GIF_EXTENSION, GIF_IMAGE = 0x3B, 0x21, 0x2C


class ImageError(ValueError):
    """One image cannot be used: bad base64, no image, a broken header, over the pixel limit, not decodable."""


@dataclass(frozen=True)
class Header:
    """An image's format, its size in pixels (the GIF canvas, the WebP canvas), frames and EXIF orientation (1-8)."""

    format: str
    width: int
    height: int
    frames: int = 1
    orientation: int = 1

    @property
    def pixels(self) -> int:
        """How many pixels TensorFlow's decoder allocates: every frame of the canvas."""
        return self.width * self.height * self.frames


def read_header(data: bytes) -> Header:
    """The header of an image file's bytes; an `ImageError` when there is none this module can read."""
    if not data:
        raise ImageError("empty file (0 bytes)")
    if data.startswith(b"\xff\xd8"):
        return _jpeg(data)
    if data.startswith(PNG_SIGNATURE):
        return _png(data)
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return _gif(data)
    if data.startswith(b"BM"):
        return _bmp(data)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp(data)
    raise ImageError("unknown image file format: not JPEG, PNG, GIF, BMP or WebP")


def _int(data: bytes, start: int, size: int, order: str = "big") -> int:
    if start + size > len(data):
        raise ImageError("truncated header")
    return int.from_bytes(data[start : start + size], order)


def _jpeg(data: bytes) -> Header:
    """The first frame header (SOFn) and, before it, an APP1 Exif segment's orientation."""
    pos, orientation = 2, 1
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise ImageError(f"corrupt JPEG header: no marker at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in JPEG_STANDALONE:
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, or scan data, before any frame header
            break
        end = pos + 2 + _int(data, pos + 2, 2)
        if end > len(data):
            break
        segment = data[pos + 4 : end]
        if marker == 0xE1 and segment.startswith(EXIF_PREFIX):
            orientation = exif_orientation(segment[len(EXIF_PREFIX) :])
        elif marker in JPEG_SOF:
            height, width = _int(segment, 1, 2), _int(segment, 3, 2)
            if not (height and width):
                raise ImageError(f"JPEG frame header gives {width} x {height} px; not supported")
            return Header("JPEG", width, height, orientation=orientation)
        pos = end
    raise ImageError("truncated JPEG: no frame header (SOF marker) before the image data")


def exif_orientation(tiff: bytes) -> int:
    """Tag 0x0112 of an Exif block's first IFD (1 when absent or malformed, as viewers read it)."""
    order = {b"II": "little", b"MM": "big"}.get(tiff[:2])
    if order is None or len(tiff) < 8:
        return 1
    ifd = int.from_bytes(tiff[4:8], order)
    if ifd + 2 > len(tiff):
        return 1
    for entry in range(ifd + 2, ifd + 2 + 12 * int.from_bytes(tiff[ifd : ifd + 2], order), 12):
        if entry + 12 > len(tiff):
            break
        if int.from_bytes(tiff[entry : entry + 2], order) == ORIENTATION_TAG:
            value = int.from_bytes(tiff[entry + 8 : entry + 10], order)  # a SHORT, left in its 4-byte field
            return value if 1 <= value <= 8 else 1
    return 1


def _png(data: bytes) -> Header:
    """IHDR's size, and an eXIf chunk's orientation if one comes before the image data."""
    if data[12:16] != b"IHDR":
        raise ImageError("corrupt PNG header: no IHDR chunk")
    width, height, orientation = _int(data, 16, 4), _int(data, 20, 4), 1
    pos = 8
    while pos + 8 <= len(data):
        length, kind = _int(data, pos, 4), data[pos + 4 : pos + 8]
        if kind == b"eXIf":
            tiff = data[pos + 8 : pos + 8 + length]
            orientation = exif_orientation(tiff.removeprefix(EXIF_PREFIX))
        if kind in (b"IDAT", b"IEND"):
            break
        pos += 12 + length
    return Header("PNG", width, height, orientation=orientation)


def _gif(data: bytes) -> Header:
    """The logical screen (TensorFlow's canvas for every frame) and the number of image blocks."""
    width, height, flags = _int(data, 6, 2, "little"), _int(data, 8, 2, "little"), data[10] if len(data) > 10 else 0
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    frames = 0
    while pos < len(data) and data[pos] != GIF_TRAILER:
        if data[pos] == GIF_IMAGE:
            frames += 1
            local = data[pos + 9] if pos + 9 < len(data) else 0
            pos += 10 + (3 << ((local & 7) + 1) if local & 0x80 else 0) + 1  # descriptor, colours, LZW code size
        elif data[pos] == GIF_EXTENSION:
            pos += 2
        else:
            break  # TensorFlow's decoder refuses what follows; the frames before it are all it can allocate
        while pos < len(data) and data[pos]:  # data sub-blocks, each led by its length
            pos += 1 + data[pos]
        pos += 1
    if not frames:
        raise ImageError("GIF without an image")
    return Header("GIF", width, height, frames=frames)


def _bmp(data: bytes) -> Header:
    """BITMAPCOREHEADER's 16-bit size, or any later header's signed 32-bit one (negative height: top-down)."""
    if _int(data, 14, 4, "little") == 12:
        return Header("BMP", _int(data, 18, 2, "little"), _int(data, 20, 2, "little"))
    _int(data, 22, 4)  # an `ImageError` when the header is cut short
    width = int.from_bytes(data[18:22], "little", signed=True)
    height = int.from_bytes(data[22:26], "little", signed=True)
    return Header("BMP", abs(width), abs(height))


def _webp(data: bytes) -> Header:
    """The canvas of an extended (VP8X) file and its animation frames, or a simple lossy/lossless file's size."""
    kind = data[12:16]
    if kind == b"VP8X":
        width, height = _int(data, 24, 3, "little") + 1, _int(data, 27, 3, "little") + 1
        frames, orientation, pos = 0, 1, 12
        while pos + 8 <= len(data):
            chunk, length = data[pos : pos + 4], _int(data, pos + 4, 4, "little")
            frames += chunk == b"ANMF"
            if chunk == b"EXIF":
                orientation = exif_orientation(data[pos + 8 : pos + 8 + length].removeprefix(EXIF_PREFIX))
            pos += 8 + length + (length & 1)
        return Header("WebP", width, height, frames=max(frames, 1), orientation=orientation)
    if kind == b"VP8L":
        bits = _int(data, 21, 4, "little")
        return Header("WebP", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    if kind == b"VP8 ":
        return Header("WebP", _int(data, 26, 2, "little") & 0x3FFF, _int(data, 28, 2, "little") & 0x3FFF)
    raise ImageError(f"corrupt WebP header: unknown first chunk {kind!r}")
