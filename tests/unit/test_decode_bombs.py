"""Round-2 decoding attacks (issue 24, items 1-3 and 15): each file is made here, refused
from its header before any decoding, with a reason; ordinary files still decode."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest

from edge_infer.errors import ImageError
from edge_infer.image.decode import (
    MAX_DECODED_BYTES,
    MAX_JPEG_SCANS,
    decode_image,
    incomplete_reason,
)

IMG = (np.random.default_rng(1).random((120, 160, 3)) * 255).astype(np.uint8)


def tiff(entries: list[tuple[int, int, int, int]], extra: bytes = b"") -> bytes:
    """A little-endian TIFF whose first IFD holds `entries` (tag, type, count, value)."""
    ifd = struct.pack("<H", len(entries))
    ifd += b"".join(struct.pack("<HHII", *e) for e in entries) + b"\0\0\0\0"
    return b"II*\x00" + struct.pack("<I", 8) + ifd + extra + b"\0" * 4000


def test_tiff_giving_its_size_twice_is_refused():
    """libtiff decodes the first ImageWidth/ImageLength (30000), a last-value reader checks
    the second (100): the file must not reach the decoder at all."""
    data = tiff([(256, 4, 1, 30000), (257, 4, 1, 30000), (256, 4, 1, 100), (257, 4, 1, 100)])
    with pytest.raises(ImageError, match="tag 256 twice"):
        decode_image(data, "dup.tif")


def test_float_tiff_bounded_by_decoded_bytes_not_pixels():
    # 5000 x 5000 (25 MP, under the pixel cap) x 3 samples of 32 bits: 300 MB decoded
    bits_at = 8 + 2 + 12 * 4 + 4
    data = tiff(
        [(256, 4, 1, 5000), (257, 4, 1, 5000), (258, 3, 3, bits_at), (277, 3, 1, 3)],
        struct.pack("<HHH", 32, 32, 32),
    )
    with pytest.raises(ImageError, match="12 bytes per pixel.*decoded-size limit"):
        decode_image(data, "float.tif")


def png_header_only(w: int, h: int, depth: int, colour: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    body = struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))
    end = struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))
    return b"\x89PNG\r\n\x1a\n" + body + end


def test_16_bit_rgba_png_bounded_by_decoded_bytes():
    with pytest.raises(ImageError, match="8 bytes per pixel"):
        decode_image(png_header_only(5000, 5000, 16, 6), "deep.png")
    assert MAX_DECODED_BYTES >= 5000 * 5000 * 3  # an 8-bit RGB frame of 25 MP still fits


def test_ordinary_16_bit_png_and_tiff_still_decode():
    deep = (IMG.astype(np.uint16) * 257)[:, :, :3]
    for ext in (".png", ".tiff"):
        data = cv2.imencode(ext, deep)[1].tobytes()
        assert decode_image(data, "deep" + ext).shape == IMG.shape


def progressive(img: np.ndarray = IMG) -> bytes:
    return cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()


def test_progressive_jpeg_repeating_its_last_scan_is_refused():
    data = progressive()
    last_scan = data[data.rfind(b"\xff\xda") : data.rfind(b"\xff\xd9")]
    bomb = data[: data.rfind(b"\xff\xd9")] + last_scan * 1000 + b"\xff\xd9"
    with pytest.raises(ImageError, match=r"progressive JPEG with 10\d\d scans"):
        decode_image(bomb, "scans.jpg")
    # the bound is far above what encoders write
    assert data.count(b"\xff\xda") * 4 <= MAX_JPEG_SCANS
    assert decode_image(data, "ok.jpg").shape == IMG.shape


def test_trailing_bytes_holding_a_start_of_scan_are_not_a_truncation():
    """A camera's trailer after the end-of-image marker may contain FF DA: it is not a scan."""
    for data in (cv2.imencode(".jpg", IMG)[1].tobytes(), progressive()):
        blob = data + b"\xff\xda\x00\x08vendor trailer\xff\xda"
        assert incomplete_reason(blob) is None
        assert decode_image(blob, "trailer.jpg").shape == IMG.shape


def test_truncation_found_on_every_cut():
    """Any strict prefix of a JPEG (past its first marker) is truncated; the whole file, or
    the file with bytes appended after its end marker, is not."""
    for data in (cv2.imencode(".jpg", IMG)[1].tobytes(), progressive()):
        for n in [*range(2, len(data), 37), len(data) - 1]:
            assert incomplete_reason(data[:n]) is not None, n
        assert incomplete_reason(data) is None


def test_many_scans_of_a_large_frame_are_over_the_decoding_budget():
    """Scans x pixels bound the decoder's work: a 25 MP progressive JPEG may not have 64."""
    from edge_infer.image.decode import MAX_SCAN_PIXELS

    big = cv2.resize(IMG, (5000, 5000), interpolation=cv2.INTER_NEAREST)
    data = progressive(big)
    end = data.rfind(b"\xff\xd9")
    last = data[data.rfind(b"\xff\xda") : end]
    bomb = data[:end] + last * (64 - data.count(b"\xff\xda")) + b"\xff\xd9"
    with pytest.raises(ImageError, match="decoding budget"):
        decode_image(bomb, "big.jpg")
    assert MAX_SCAN_PIXELS >= 25_000_000 * 10  # an ordinary 10-scan 25 MP file still fits
