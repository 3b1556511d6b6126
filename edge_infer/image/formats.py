"""The image formats this package reads: file suffixes, content signatures, and the pixel
dimensions read from each format's header before anything is decoded.

Only formats whose header is parsed here are decoded at all: OpenCV decodes TIFF, WebP, JPEG
2000, PxM, HDR (and GIF in 5.x) fully before any check of ours, so a 16 KB file declaring
30000x30000 pixels would cost gigabytes. Classify, watch, serve and training all use this list.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple


class Header(NamedTuple):
    """What a header says the decoder will allocate: the size, the bytes of each decoded
    pixel (channels x bytes per sample, as OpenCV's ANYDEPTH|ANYCOLOR decode keeps them) and,
    for JPEG, how many scans the decoder will run over the whole image."""

    width: int
    height: int
    bytes_per_pixel: int = 3
    scans: int = 1


class HeaderRefused(ValueError):
    """A header that must not reach the decoder (the reason is the message)."""


@dataclass(frozen=True)
class ImageFormat:
    name: str
    suffixes: tuple[str, ...]
    matches: Callable[[bytes], bool]
    header: Callable[[bytes], Header | None]


#: decoded channels of a PNG colour type (a palette may decode with alpha)
_PNG_CHANNELS = {0: 1, 2: 3, 3: 4, 4: 2, 6: 4}


def _png(d: bytes) -> Header | None:
    if len(d) < 26 or d[12:16] != b"IHDR":
        return None
    w, h = struct.unpack(">II", d[16:24])
    depth, colour = d[24], d[25]
    return Header(w, h, _PNG_CHANNELS.get(colour, 4) * (2 if depth == 16 else 1))


def _bmp(d: bytes) -> Header | None:
    if len(d) < 30:
        return None
    w, h = struct.unpack("<ii", d[18:26])
    (bits,) = struct.unpack("<H", d[28:30])
    return Header(abs(w), abs(h), 4 if bits == 32 else 3)


def _gif(d: bytes) -> Header | None:
    return Header(*struct.unpack("<HH", d[6:10]), 4) if len(d) >= 10 else None


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
#: frames decoded in one pass per component (baseline, extended, lossless; Huffman and
#: arithmetic): never more scans than components
_SEQUENTIAL_SOF = {0xC0, 0xC1, 0xC3, 0xC9, 0xCB}
#: the next marker after entropy-coded data: FF followed by anything but a stuffed 00, a
#: restart marker or another fill byte
_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


class JpegLayout(NamedTuple):
    header: Header | None
    complete: bool  # the walk reached the end-of-image marker


def jpeg_layout(d: bytes) -> JpegLayout:
    """Walk a JPEG's segments from the start as a decoder does: the frame header's size and
    the number of scans (a progressive file repeating its last scan a thousand times costs a
    thousand passes over the image), and whether the end-of-image marker is reached. Bytes
    after that marker (camera metadata) are never looked at, so an FF DA among them is not a
    scan. Entropy-coded data is skipped by a regular expression, not byte by byte; a
    sequential (baseline) frame, whose scans the format bounds (one per component), is not
    walked past its first scan: it is complete when an end-of-image marker follows (FF D9
    cannot occur inside entropy-coded data), looked for from the end of the file."""
    size: tuple[int, int, int, int] | None = None
    sequential = False
    scans = 0
    i = 2
    n = len(d)
    while i + 1 < n:
        if d[i] != 0xFF:  # stray bytes between segments: decoders skip to the next marker
            j = d.find(b"\xff", i)
            if j < 0:
                break
            i = j
            continue
        marker = d[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0xD9:
            return JpegLayout(_jpeg_header(size, scans), True)
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        if i + 4 > n:
            break
        (seg_len,) = struct.unpack(">H", d[i + 2 : i + 4])
        if marker in _SOF and size is None and i + 10 <= n:
            precision = d[i + 4]
            h, w = struct.unpack(">HH", d[i + 5 : i + 9])
            size = (w, h, d[i + 9], precision)
            sequential = marker in _SEQUENTIAL_SOF
        if marker == 0xDA and sequential:
            # an end-of-image marker anywhere after the scan's header: rfind finds it from the
            # end of the file at once (a forward search would read the whole image)
            return JpegLayout(_jpeg_header(size, 1), d.rfind(b"\xff\xd9") >= i + 2 + seg_len)
        if marker == 0xDA:
            scans += 1
            m = _NEXT_MARKER.search(d, i + 2 + seg_len)
            if m is None:
                break
            i = m.start()
            continue
        i += 2 + seg_len
    return JpegLayout(_jpeg_header(size, scans), False)


def _jpeg_header(size: tuple[int, int, int, int] | None, scans: int) -> Header | None:
    if size is None:
        return None
    w, h, _components, precision = size
    return Header(w, h, 3 * (2 if precision > 8 else 1), max(scans, 1))


def _jpeg(d: bytes) -> Header | None:
    return jpeg_layout(d).header


_TIFF_TYPE_SIZE = {3: 2, 4: 4}


def _tiff(d: bytes) -> Header | None:
    """Size and sample layout of the first image (IFD) of a classic TIFF, the one OpenCV's
    imdecode reads. A tag given twice is refused: libtiff keeps the first value, a reader
    keeping the last would check another size than the one decoded."""
    if len(d) < 8:
        return None
    e = "<" if d[:2] == b"II" else ">"
    (ifd,) = struct.unpack(e + "I", d[4:8])
    if ifd + 2 > len(d):
        return None
    (n,) = struct.unpack(e + "H", d[ifd : ifd + 2])
    values: dict[int, list[int]] = {}
    for k in range(n):
        off = ifd + 2 + 12 * k
        if off + 12 > len(d):
            break
        tag, typ, count = struct.unpack(e + "HHI", d[off : off + 8])
        if tag not in (256, 257, 258, 277):
            continue
        if tag in values:
            raise HeaderRefused(f"TIFF header gives tag {tag} twice")
        size = _TIFF_TYPE_SIZE.get(typ)
        if size is None or count < 1:
            raise HeaderRefused(f"TIFF tag {tag} has an unexpected type or count")
        count = min(count, 16)
        at = off + 8
        if size * count > 4:
            (at,) = struct.unpack(e + "I", d[off + 8 : off + 12])
        if at + size * count > len(d):
            raise HeaderRefused(f"TIFF tag {tag} points outside the file")
        fmt = e + ("H" if size == 2 else "I") * count
        values[tag] = list(struct.unpack(fmt, d[at : at + size * count]))
    if 256 not in values or 257 not in values:
        return None
    samples = values.get(277, [1])[0]
    bits = max(values.get(258, [8]))
    return Header(values[256][0], values[257][0], max(1, samples) * max(1, -(-bits // 8)))


def _webp(d: bytes) -> Header | None:
    chunk = d[12:16]
    if chunk == b"VP8 " and len(d) >= 30:
        w, h = struct.unpack("<HH", d[26:30])
        return Header(w & 0x3FFF, h & 0x3FFF, 4)
    if chunk == b"VP8L" and len(d) >= 25:
        b = int.from_bytes(d[21:25], "little")
        return Header((b & 0x3FFF) + 1, ((b >> 14) & 0x3FFF) + 1, 4)
    if chunk == b"VP8X" and len(d) >= 30:
        w = int.from_bytes(d[24:27], "little") + 1
        return Header(w, int.from_bytes(d[27:30], "little") + 1, 4)
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
