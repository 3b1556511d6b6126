"""What the server reads from a request, apart from serving it: the upload in a raw or
multipart body (a few dozen lines instead of the email package: its parser cost 100 CPU
seconds on a 20 MB body of 400,000 tiny parts), and the host names of the Host and Origin
headers."""

from __future__ import annotations

import ipaddress
import re
from http import HTTPStatus

from .limits import MAX_PARTS


class BadRequest(Exception):
    def __init__(self, status: HTTPStatus, reason: str, extra=()) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.extra = extra


def _header_params(value: str) -> tuple[str, dict[str, str]]:
    """`type; a=b; c="d"` -> ("type", {"a": "b", "c": "d"})."""
    main, *rest = value.split(";")
    params = {}
    for item in rest:
        k, _, v = item.strip().partition("=")
        params[k.strip().lower()] = v.strip().strip('"')
    return main.strip().lower(), params


def extract_multipart(content_type: str, body: bytes) -> tuple[bytes, str]:
    """The first file part (or the part named "image") of a multipart/form-data body.

    A few dozen lines instead of the email package: its parser cost 100 CPU seconds on a 20 MB
    body of 400,000 tiny parts; this one splits once and refuses more than MAX_PARTS parts."""
    boundary = _header_params(content_type)[1].get("boundary", "")
    if not boundary or len(boundary) > 200:
        raise BadRequest(HTTPStatus.BAD_REQUEST, "multipart body without a valid boundary")
    delimiter = b"--" + boundary.encode("latin-1")
    pieces = body.split(delimiter, MAX_PARTS + 2)
    if len(pieces) < 3:
        raise BadRequest(HTTPStatus.BAD_REQUEST, "malformed multipart body")
    if len(pieces) > MAX_PARTS + 2:
        raise BadRequest(HTTPStatus.BAD_REQUEST, f"more than {MAX_PARTS} parts in the body")
    for piece in pieces[1:-1]:
        head, sep, payload = piece.partition(b"\r\n\r\n")
        if not sep:
            continue
        headers = {}
        for line in head.decode("latin-1").split("\r\n"):
            k, _, v = line.partition(":")
            if k:
                headers[k.strip().lower()] = v.strip()
        _, disp = _header_params(headers.get("content-disposition", ""))
        if "filename" in disp or disp.get("name") == "image":
            if payload.endswith(b"\r\n"):
                payload = payload[:-2]
            return payload, disp.get("filename") or "upload"
    raise BadRequest(HTTPStatus.BAD_REQUEST, "no file field in the multipart body")


def extract_upload(content_type: str, body: bytes) -> tuple[bytes, str]:
    """The image bytes and a display name from a raw or multipart/form-data body."""
    kind = content_type.split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        return extract_multipart(content_type, body)
    if kind in ("", "application/octet-stream") or kind.startswith("image/"):
        return body, "upload"
    raise BadRequest(
        HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
        f"unsupported content type '{content_type}': send an image body or multipart/form-data",
    )


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def host_of(value: str) -> str:
    """The host part of a Host header or an Origin's netloc (IPv6 brackets removed)."""
    m = re.match(r"^\[([^\]]+)\](?::\d+)?$|^([^:]+)(?::\d+)?$", value.strip())
    return (m.group(1) or m.group(2) or "").lower() if m else ""
