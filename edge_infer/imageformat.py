"""The image formats this package reads: file suffixes, content signatures, and the pixel
dimensions read from each format's header before anything is decoded.

Only formats whose header is parsed here are decoded at all: OpenCV decodes TIFF, WebP, JPEG
2000, PxM, HDR (and GIF in 5.x) fully before any check of ours, so a 16 KB file declaring
30000x30000 pixels would cost gigabytes. Classify, watch, serve and training all use this list.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class ImageFormat:
    name: str
    suffixes: tuple[str, ...]
    matches: Callable[[bytes], bool]
    dimensions: Callable[[bytes], tuple[int, int] | None]


def _png(d: bytes) -> tuple[int, int] | None:
    if len(d) < 24 or d[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", d[16:24])


def _bmp(d: bytes) -> tuple[int, int] | None:
    if len(d) < 26:
        return None
    w, h = struct.unpack("<ii", d[18:26])
    return abs(w), abs(h)


def _gif(d: bytes) -> tuple[int, int] | None:
    return struct.unpack("<HH", d[6:10]) if len(d) >= 10 else None


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg(d: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 9 < len(d):
        if d[i] != 0xFF:
            i += 1
            continue
        marker = d[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
            i += 1 if marker == 0xFF else 2
            continue
        seg_len = struct.unpack(">H", d[i + 2 : i + 4])[0]
        if marker in _SOF:
            h, w = struct.unpack(">HH", d[i + 5 : i + 9])
            return w, h
        i += 2 + seg_len
    return None


def _tiff(d: bytes) -> tuple[int, int] | None:
    """Width and height of the first image (IFD) of a classic TIFF; the largest of all IFDs
    would be safer still, but OpenCV's imdecode reads only the first."""
    if len(d) < 8:
        return None
    e = "<" if d[:2] == b"II" else ">"
    (ifd,) = struct.unpack(e + "I", d[4:8])
    if ifd + 2 > len(d):
        return None
    (n,) = struct.unpack(e + "H", d[ifd : ifd + 2])
    dims: dict[int, int] = {}
    for k in range(n):
        off = ifd + 2 + 12 * k
        if off + 12 > len(d):
            break
        tag, typ = struct.unpack(e + "HH", d[off : off + 4])
        if tag in (256, 257):
            fmt = e + ("H" if typ == 3 else "I")
            size = 2 if typ == 3 else 4
            dims[tag] = struct.unpack(fmt, d[off + 8 : off + 8 + size])[0]
    if 256 in dims and 257 in dims:
        return dims[256], dims[257]
    return None


def _webp(d: bytes) -> tuple[int, int] | None:
    chunk = d[12:16]
    if chunk == b"VP8 " and len(d) >= 30:
        w, h = struct.unpack("<HH", d[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if chunk == b"VP8L" and len(d) >= 25:
        b = int.from_bytes(d[21:25], "little")
        return (b & 0x3FFF) + 1, ((b >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(d) >= 30:
        return int.from_bytes(d[24:27], "little") + 1, int.from_bytes(d[27:30], "little") + 1
    return None


FORMATS: tuple[ImageFormat, ...] = (
    ImageFormat("JPEG", (".jpg", ".jpeg"), lambda d: d[:3] == b"\xff\xd8\xff", _jpeg),
    ImageFormat("PNG", (".png",), lambda d: d[:8] == b"\x89PNG\r\n\x1a\n", _png),
    ImageFormat("BMP", (".bmp",), lambda d: d[:2] == b"BM", _bmp),
    ImageFormat("GIF", (".gif",), lambda d: d[:6] in (b"GIF87a", b"GIF89a"), _gif),
    ImageFormat("TIFF", (".tif", ".tiff"), lambda d: d[:4] in (b"II*\x00", b"MM\x00*"), _tiff),
    ImageFormat("WebP", (".webp",), lambda d: d[:4] == b"RIFF" and d[8:12] == b"WEBP", _webp),
)

#: file name suffixes of the formats above (lower case)
IMAGE_SUFFIXES = frozenset(s for f in FORMATS for s in f.suffixes)
#: bytes enough to recognise every signature above
SIGNATURE_BYTES = 16


def detect(head: bytes) -> ImageFormat | None:
    """The format whose signature starts `head`, or None."""
    return next((f for f in FORMATS if f.matches(head)), None)


def supported_names() -> str:
    return ", ".join(f.name for f in FORMATS)
