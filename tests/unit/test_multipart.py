"""Multipart extraction: the file part found, junk refused, part count bounded."""

from __future__ import annotations

import pytest

from edge_infer.serve.http import BadRequest, extract_upload
from edge_infer.serve.limits import MAX_PARTS


def body(parts: list[tuple[str, bytes]], boundary: str = "b0und") -> tuple[str, bytes]:
    chunks = [
        f"--{boundary}\r\nContent-Disposition: {d}\r\n\r\n".encode() + payload + b"\r\n"
        for d, payload in parts
    ]
    chunks.append(f"--{boundary}--\r\n".encode())
    return f"multipart/form-data; boundary={boundary}", b"".join(chunks)


def test_file_part_is_found():
    ctype, data = body(
        [('form-data; name="note"', b"hi"), ('form-data; name="f"; filename="a.jpg"', b"\xff\xd8x")]
    )
    assert extract_upload(ctype, data) == (b"\xff\xd8x", "a.jpg")


def test_raw_body_and_media_types():
    assert extract_upload("image/png", b"abc") == (b"abc", "upload")
    with pytest.raises(BadRequest):
        extract_upload("text/plain", b"abc")


def test_too_many_parts_refused_fast():
    ctype, data = body([('form-data; name="x"', b"")] * 400_000)
    # the split stops after MAX_PARTS + 2 pieces (the email parser spent 100 CPU s on this)
    with pytest.raises(BadRequest, match="parts"):
        extract_upload(ctype, data)


@pytest.mark.parametrize(
    "ctype", ["multipart/form-data", "multipart/form-data; boundary=" + "x" * 300]
)
def test_bad_boundary(ctype):
    with pytest.raises(BadRequest):
        extract_upload(ctype, b"--x\r\n\r\n")


def test_no_file_part():
    ctype, data = body([('form-data; name="note"', b"hi")] * (MAX_PARTS - 1))
    with pytest.raises(BadRequest, match="no file field"):
        extract_upload(ctype, data)
