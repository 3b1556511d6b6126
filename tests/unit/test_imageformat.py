"""Image sizes read from headers, so bombs in every accepted format are refused before any
decoding; formats whose header we do not parse are not decoded at all."""

from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest

from edge_infer.errors import ImageError
from edge_infer.image.decode import MAX_PIXELS, decode_image
from edge_infer.image.formats import IMAGE_SUFFIXES, detect

IMG = (np.random.default_rng(0).random((40, 56, 3)) * 255).astype(np.uint8)


@pytest.mark.parametrize("ext", [".jpg", ".png", ".bmp", ".tiff", ".webp"])
def test_header_dimensions_match_the_decoded_image(ext):
    ok, buf = cv2.imencode(ext, IMG)
    data = buf.tobytes()
    fmt = detect(data[:16])
    assert fmt is not None and ext in fmt.suffixes + (".tiff",)
    assert fmt.header(data)[:2] == (56, 40)
    assert decode_image(data, "x").shape == IMG.shape


def tiff_bomb(w: int, h: int) -> bytes:
    """A tiny little-endian TIFF header declaring w x h pixels (strips omitted)."""
    entries = [(256, 4, 1, w), (257, 4, 1, h), (258, 3, 1, 16), (277, 3, 1, 3)]
    ifd = (
        struct.pack("<H", len(entries))
        + b"".join(struct.pack("<HHII", *e) for e in entries)
        + b"\0\0\0\0"
    )
    return b"II*\x00" + struct.pack("<I", 8) + ifd + b"\0" * 16000


def webp_bomb(w: int, h: int) -> bytes:
    chunk = b"VP8X" + struct.pack("<I", 10) + b"\0" * 4
    chunk += (w - 1).to_bytes(3, "little") + (h - 1).to_bytes(3, "little")
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk + b"\0" * 9000


@pytest.mark.parametrize("data", [tiff_bomb(30000, 30000), webp_bomb(16000, 16000)])
def test_bombs_refused_before_decoding(data):
    with pytest.raises(ImageError, match="pixel limit"):
        decode_image(data, "bomb")


@pytest.mark.parametrize(
    "data",
    [
        b"\x00\x00\x00\x0cjP  \r\n\x87\n" + b"\0" * 100,  # JPEG 2000
        b"P6\n30000 30000\n255\n" + b"\0" * 100,  # PPM
        b"#?RADIANCE\n" + b"\0" * 100,  # HDR
    ],
)
def test_formats_without_a_parsed_header_are_not_decoded(data):
    with pytest.raises(ImageError, match="not a supported image format"):
        decode_image(data, "other")


def test_trailing_bytes_after_the_end_marker_are_accepted():
    ok, buf = cv2.imencode(".jpg", IMG)
    assert decode_image(buf.tobytes() + b"camera metadata" * 10, "x").shape == IMG.shape
    ok, buf = cv2.imencode(".png", IMG)
    assert decode_image(buf.tobytes() + b"\0" * 100, "x").shape == IMG.shape


def test_pixel_limit_is_a_camera_frame():
    assert 20_000_000 <= MAX_PIXELS <= 40_000_000
    assert {".jpg", ".png", ".tif", ".webp"} <= IMAGE_SUFFIXES
