"""`edge-infer serve`: a local page and a JSON API, on the standard library's HTTP server.

A lab PC serves one or a few users, so ThreadingHTTPServer is enough and keeps the runtime's
dependency list short. Uploads stay in memory (never written under a client-chosen name); every
request is handled in its own thread and any error in it becomes a JSON error response, so a
malformed request cannot stop the server.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import json
import logging
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import parse_qs, urlparse

import cv2

from .classifier import Classifier
from .errors import ImageError
from .preprocess import explain_overlay, load_image

log = logging.getLogger("edge_infer.serve")

MAX_BODY_BYTES = 20 * 1024 * 1024
#: an oversized body up to this size is read and discarded before the 413; beyond it the
#: connection is closed at once
DRAIN_LIMIT = 128 * 1024 * 1024
STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/style.css": ("style.css", "text/css; charset=utf-8"),
}


class BadRequest(Exception):
    def __init__(self, status: HTTPStatus, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def static_file(name: str) -> bytes:
    return (resources.files("edge_infer") / "static" / name).read_bytes()


def extract_upload(content_type: str, body: bytes) -> tuple[bytes, str]:
    """The image bytes and a display name from a raw or multipart/form-data body."""
    if content_type.startswith("multipart/form-data"):
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
        )
        if not msg.is_multipart():
            raise BadRequest(HTTPStatus.BAD_REQUEST, "malformed multipart body")
        for part in msg.iter_parts():
            if (
                part.get_filename() is not None
                or part.get_param("name", header="content-disposition") == "image"
            ):
                data = part.get_payload(decode=True) or b""
                return data, part.get_filename() or "upload"
        raise BadRequest(HTTPStatus.BAD_REQUEST, "no file field in the multipart body")
    if content_type.split(";")[0].strip() in (
        "",
        "application/octet-stream",
    ) or content_type.startswith("image/"):
        return body, "upload"
    raise BadRequest(
        HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
        f"unsupported content type '{content_type}': send an image body or multipart/form-data",
    )


def png_data_url(bgr) -> str:
    ok, buf = cv2.imencode(".png", bgr)
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


class Handler(BaseHTTPRequestHandler):
    server_version = "edge-infer"
    classifier: Classifier  # set on the subclass made by make_server
    max_body = MAX_BODY_BYTES

    def log_message(self, fmt: str, *args) -> None:
        log.info("%s %s", self.address_string(), fmt % args)

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj) -> None:
        self._send(status, json.dumps(obj).encode("utf-8"), "application/json")

    def _error(self, status: HTTPStatus, reason: str) -> None:
        self._json(status, {"error": reason, "status": int(status)})

    def do_GET(self) -> None:
        try:
            path = urlparse(self.path).path
            if path in STATIC:
                name, ctype = STATIC[path]
                self._send(200, static_file(name), ctype)
            elif path == "/healthz":
                self._json(200, {"status": "ok", "model": self.classifier.version})
            elif path == "/api/model":
                self._json(
                    200, {"path": self.classifier.info.path, **self.classifier.info.metadata}
                )
            else:
                self._error(HTTPStatus.NOT_FOUND, f"no such page: {path}")
        except Exception as exc:  # never let one request take the server down
            log.exception("GET %s failed", self.path)
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error: {type(exc).__name__}")

    do_HEAD = do_GET

    def do_POST(self) -> None:
        try:
            url = urlparse(self.path)
            if url.path != "/api/classify":
                self._error(HTTPStatus.NOT_FOUND, f"no such endpoint: {url.path}")
                return
            body = self._read_body()
            data, name = extract_upload(self.headers.get("Content-Type", ""), body)
            query = parse_qs(url.query)
            want_overlay = query.get("overlay", ["0"])[0] in ("1", "true")
            tta = query.get("tta", ["0"])[0] in ("1", "true")
            try:
                bgr = load_image(data, name)
                pred = self.classifier.predict(bgr, tta=tta, name=name)
            except ImageError as exc:
                raise BadRequest(HTTPStatus.BAD_REQUEST, exc.reason) from None
            record = pred.to_record()
            if want_overlay:
                record["image_png"] = png_data_url(bgr)
                record["overlay_png"] = png_data_url(
                    explain_overlay(bgr, self.classifier.info.spec)
                )
            self._json(200, record)
        except BadRequest as exc:
            self._error(exc.status, exc.reason)
        except Exception as exc:
            log.exception("POST %s failed", self.path)
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error: {type(exc).__name__}")

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise BadRequest(HTTPStatus.LENGTH_REQUIRED, "send a Content-Length, not chunked")
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            raise BadRequest(HTTPStatus.LENGTH_REQUIRED, "Content-Length required") from None
        if length > self.max_body:
            self.close_connection = True
            if length <= DRAIN_LIMIT:  # read it away, so the client sees the 413, not a reset
                remaining = length
                while remaining > 0:
                    chunk = self.rfile.read(min(remaining, 1 << 16))
                    if not chunk:
                        break
                    remaining -= len(chunk)
            raise BadRequest(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"body of {length} bytes is over the {self.max_body}-byte limit",
            )
        if length <= 0:
            raise BadRequest(HTTPStatus.BAD_REQUEST, "empty body: send an image")
        body = self.rfile.read(length)
        if len(body) < length:
            raise BadRequest(HTTPStatus.BAD_REQUEST, "body shorter than its Content-Length")
        return body


def make_server(
    classifier: Classifier,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_body: int = MAX_BODY_BYTES,
) -> ThreadingHTTPServer:
    handler = type("BoundHandler", (Handler,), {"classifier": classifier, "max_body": max_body})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def serve_in_thread(server: ThreadingHTTPServer) -> threading.Thread:
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    return t
