"""`edge-infer serve`: a local page and a JSON API, on the standard library's HTTP server.

A lab PC serves one or a few users, so the standard library's threading server is enough and
keeps the runtime's dependency list short. Uploads stay in memory (never written under a
client-chosen name); any error in a request becomes a JSON error response, so a malformed
request cannot stop the server. What the page or another program on the PC cannot do to it:

- another web site open in the lab's browser cannot use it: a POST whose Origin is not this
  server's own, or whose Sec-Fetch-Site says cross-site, is refused (403); when it listens on
  loopback, a request whose Host is neither a loopback name or address nor the address it
  listens on is refused too (DNS rebinding); listening elsewhere, a loud warning at start says
  the page is reachable from the network with no login;
- a request's line and headers must arrive within the idle timeout (`SOCKET_TIMEOUT_S`) of
  the connection starting to wait for it, and a body at `MIN_BODY_RATE` after that grace
  (serve_watchdog: a trickle of bytes cannot hold a connection); at most `MAX_CONNECTIONS`
  are served at once: when all are taken the one that has waited longest for its request
  is closed to make room, and only if every one is busy with a request is a new one answered
  503 (never spun on); bodies are buffered against one server-wide budget of
  `BODY_BUDGET_BODIES` maximal bodies (more get 503); at most `MAX_DECODES` images are
  decoded at a time, so parallel decompression bombs cannot add up;
- a multipart body may hold at most `MAX_PARTS` parts;
- SIGTERM shuts it down cleanly (exit 0).
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import cv2

from ..classifier import Classifier
from ..errors import ImageError
from ..image.decode import load_image, saved_size
from ..image.segment import cam_overlay, explain_overlay
from ..image.tile_map import frame_cam, tiles_overlay
from ..io.writers import printable
from ..result import ERROR, HEADLINE, LABEL, STATUS, Failure, Status, vocabulary
from .http import BadRequest, extract_upload, host_of, is_loopback
from .limits import (
    BODY_BUDGET_BODIES,
    DRAIN_LIMIT,
    LISTEN_BACKLOG,
    MAX_BODY_BYTES,
    MAX_CONNECTIONS,
    MAX_DECODES,
    MIN_BODY_RATE,
    SOCKET_TIMEOUT_S,
)
from .watchdog import BODY, WAITING, WORKING, ConnectionWatch

log = logging.getLogger("edge_infer.serve")

#: the key of the records list posted to /api/case
RECORDS = "records"


STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/style.css": ("style.css", "text/css; charset=utf-8"),
}
API_CLASSIFY = "/api/classify"
API_CASE = "/api/case"
#: a case posted to /api/case: at most this many images, this many bytes of JSON
MAX_CASE_IMAGES = 10_000
MAX_CASE_BYTES = 2 * 1024 * 1024
API_MODEL = "/api/model"
API_SITE_CHECK = "/api/site-check"
SITE_CHECK_PAGE = "/site-check"
HEALTH = "/healthz"
#: the upload page's policy (its script and style are files of its own)
PAGE_CSP = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"


def static_file(name: str) -> bytes:
    return (resources.files("edge_infer.serve") / "static" / name).read_bytes()


def png_data_url(bgr) -> str:
    ok, buf = cv2.imencode(".png", bgr)
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


class Counters:
    """Requests classified and refused since start (shown by /healthz), thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = {"classified": 0, "refused": 0}

    def add(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


class Handler(BaseHTTPRequestHandler):
    server_version = "edge-infer"
    timeout = SOCKET_TIMEOUT_S  # idle and slow sockets are closed (StreamRequestHandler)
    classifier: Classifier  # set on the subclass made by make_server
    max_body = MAX_BODY_BYTES
    decode_slots: threading.BoundedSemaphore
    counters: Counters

    def log_message(self, fmt: str, *args) -> None:
        # the request line is the client's: control characters escaped (log injection)
        log.info("%s %s", self.address_string(), printable(fmt % args))

    def setup(self) -> None:
        super().setup()
        self.conn = self.server.watch.add(self.connection)

    def finish(self) -> None:
        self.server.watch.remove(self.conn)
        super().finish()

    def handle_one_request(self) -> None:
        self.server.watch.enter(self.conn, WAITING)
        super().handle_one_request()

    def parse_request(self) -> bool:
        ok = super().parse_request()
        self.server.watch.enter(self.conn, WORKING)
        return ok

    def handle(self) -> None:
        try:
            super().handle()
        except (ConnectionError, TimeoutError) as exc:
            log.info("%s: connection ended (%s)", self.address_string(), type(exc).__name__)

    def _send(
        self, status: int, body: bytes, content_type: str, extra=(), csp: str = PAGE_CSP
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Referrer-Policy", "no-referrer")
        for k, v in extra:
            self.send_header(k, v)
        if content_type.startswith("text/html"):
            self.send_header("Content-Security-Policy", csp)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj, extra=()) -> None:
        self._send(status, json.dumps(obj).encode("utf-8"), "application/json", extra)

    def _error(self, status: HTTPStatus, reason: str, extra=()) -> None:
        """An error as JSON, with the headline people read (the page shows it as it is)."""
        body = {ERROR: reason, HEADLINE: Failure("", reason).headline, "http_status": int(status)}
        self._json(status, body, extra)

    def send_error(self, code, message=None, explain=None) -> None:
        """The standard library's own errors (bad request line, unknown method) as JSON too."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self._error(HTTPStatus(code), message or HTTPStatus(code).phrase)

    # ------------------------------------------------------------------ request checks
    def _foreign_request(self) -> str | None:
        """Why this request must be refused (another site, a rebound DNS name), or None."""
        bound = self.server.server_address[0]
        host = host_of(self.headers.get("Host", ""))
        if is_loopback(bound) and not is_loopback(host) and host != bound:
            return f"Host '{host}' is not this server"
        if self.command == "POST":
            if self.headers.get("Sec-Fetch-Site", "") == "cross-site":
                return "cross-site request"
            origin = self.headers.get("Origin")
            own = self.headers.get("Host", "").lower()
            if origin is not None and (origin == "null" or urlparse(origin).netloc.lower() != own):
                return f"request from another origin ({origin})"
        return None

    def _refuse_foreign(self) -> bool:
        why = self._foreign_request()
        if why:
            self.counters.add("refused")
            log.warning("%s: refused, %s", self.address_string(), printable(why))
            self._error(HTTPStatus.FORBIDDEN, f"refused: {why}")
            return True
        return False

    # ------------------------------------------------------------------ methods
    def do_GET(self) -> None:
        try:
            if self._refuse_foreign():
                return
            path = urlparse(self.path).path
            if path in STATIC:
                name, ctype = STATIC[path]
                self._send(200, static_file(name), ctype)
            elif path == HEALTH:
                self._json(
                    200,
                    {
                        "healthy": True,
                        "model_version": self.classifier.version,
                        **self.counters.snapshot(),
                    },
                )
            elif path == API_MODEL:
                # public_json: no file path, no bulky guard reference set
                self._json(200, {**self.classifier.meta.public_json(), **vocabulary()})
            elif path in (API_SITE_CHECK, SITE_CHECK_PAGE):
                self._site_check(path)
            elif path == API_CLASSIFY:
                self._error(
                    HTTPStatus.METHOD_NOT_ALLOWED, "use POST with an image", [("Allow", "POST")]
                )
            else:
                self._error(HTTPStatus.NOT_FOUND, f"no such page: {path}")
        except (ConnectionError, TimeoutError):
            raise
        except Exception as exc:  # never let one request take the server down
            log.exception("GET %s failed", self.path)
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error: {type(exc).__name__}")

    do_HEAD = do_GET

    def _site_check(self, path: str) -> None:
        """The site-check report given with --site-report: its verdict as JSON, or the page
        under the report's own Content-Security-Policy (its styles are inline). A report made
        with another model file than the one served says so instead of its verdict."""
        from ..site.report import CSP, model_of, verdict_of
        from ..site.rules import VERDICT_WORDS

        report = self.site_report
        try:
            html = report.read_text(encoding="utf-8") if report else None
        except (OSError, UnicodeDecodeError):
            html = None
        verdict = verdict_of(html) if html else None
        if verdict is None:
            self._error(HTTPStatus.NOT_FOUND, "no site check report (edge-infer check-site)")
            return
        if path == SITE_CHECK_PAGE:
            self._send(
                200,
                html.encode("utf-8"),
                "text/html; charset=utf-8",
                csp=f"{CSP}; frame-ancestors 'none'",
            )
            return
        made_with = model_of(html)
        served = (self.classifier.version, self.classifier.model.sha256)
        matches = made_with is not None and made_with[1] == served[1]
        words = VERDICT_WORDS[verdict]
        if not matches:
            other = f"model {made_with[0]}" if made_with else "an unknown model"
            words = (
                f"Not for this model: the site check was made with {other}, this server runs "
                f"{served[0]} (another file). Run edge-infer check-site again."
            )
        self._json(
            200,
            {
                "site_verdict": verdict.value,
                "verdict_words": words,
                "url": SITE_CHECK_PAGE,
                "model_matches": matches,
                "report_model_version": made_with[0] if made_with else None,
                "report_model_sha256": made_with[1] if made_with else None,
            },
        )

    def _not_allowed(self) -> None:
        self._error(HTTPStatus.METHOD_NOT_ALLOWED, f"{self.command} is not supported")

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _not_allowed

    def do_POST(self) -> None:
        try:
            if self._refuse_foreign():
                self.close_connection = True
                return
            url = urlparse(self.path)
            if url.path == API_CASE:
                self._case()
                return
            if url.path != API_CLASSIFY:
                self._error(HTTPStatus.NOT_FOUND, f"no such endpoint: {url.path}")
                return
            body, reserved = self._read_body()
            try:
                self._classify_body(url, body)
            finally:
                del body
                self.server.watch.release(reserved)
        except BadRequest as exc:
            self._error(exc.status, exc.reason, exc.extra)
        except (ConnectionError, TimeoutError):
            raise
        except Exception as exc:
            log.exception("POST %s failed", self.path)
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error: {type(exc).__name__}")

    def _case(self) -> None:
        """Images dropped together are one case: the page posts the records it got back
        (status and label of each) and the case rule of edge_infer.cases answers, so the page
        holds no rule of its own."""
        from ..cases import one_case

        # the same checks, deadline and budget as an upload, with a case's own size limit
        body, reserved = self._read_body(MAX_CASE_BYTES)
        try:
            records = json.loads(body)[RECORDS]
        except (ValueError, KeyError, TypeError, RecursionError):
            raise BadRequest(HTTPStatus.BAD_REQUEST, 'send {"records": [...]} as JSON') from None
        finally:
            del body
            self.server.watch.release(reserved)
        classes = set(self.classifier.classes)
        statuses = {s.value for s in Status}
        if not isinstance(records, list) or not 0 < len(records) <= MAX_CASE_IMAGES:
            raise BadRequest(HTTPStatus.BAD_REQUEST, f"1 to {MAX_CASE_IMAGES} records")
        clean = []
        for rec in records:
            status = rec.get(STATUS) if isinstance(rec, dict) else None
            label = rec.get(LABEL) if isinstance(rec, dict) else None
            if status not in statuses or (label is not None and label not in classes):
                raise BadRequest(HTTPStatus.BAD_REQUEST, "a record with an unknown status or label")
            clean.append({STATUS: status, LABEL: label})
        self._json(200, one_case(clean, self.classifier.meta, "dropped together"))

    def _classify_body(self, url, body: bytearray) -> None:
        """Decode and classify an upload (at most MAX_DECODES at a time); answer JSON."""
        data, name = extract_upload(self.headers.get("Content-Type", ""), body)
        query = parse_qs(url.query)
        want_overlay = query.get("overlay", ["0"])[0] in ("1", "true")
        want_cam = query.get("cam", ["0"])[0] in ("1", "true")
        tta = query.get("tta", ["0"])[0] in ("1", "true")
        with self.decode_slots:  # bounded memory: at most MAX_DECODES images at a time
            try:
                bgr = load_image(data, name)
                pred = self.classifier.predict(bgr, tta=tta, name=name)
            except ImageError as exc:
                raise BadRequest(HTTPStatus.BAD_REQUEST, exc.reason) from None
            record = pred.to_record()
            if want_overlay:
                record["image_png"] = png_data_url(bgr)
                record["overlay_png"] = png_data_url(
                    explain_overlay(bgr, self.classifier.meta.preprocess)
                )
            cam = pred.cam
            if want_cam and pred.tiles:  # where the tiles that gave the answer looked
                cam = frame_cam(pred.tiles, pred.raw_label, bgr.shape[:2], saved_size(bgr))
            if want_cam and cam is not None:  # a model exported with its CAM
                record["cam_png"] = png_data_url(cam_overlay(bgr, cam))
            if want_overlay and pred.tiles:  # read as tiles: each tile in its answer's colour
                meta = self.classifier.meta
                record["tiles_png"] = png_data_url(
                    tiles_overlay(bgr, pred.tiles, saved_size(bgr), meta.is_malignant)
                )
        self.counters.add("classified")
        self._json(200, record)

    def _read_body(self, limit: int | None = None) -> tuple[bytearray, int]:
        """The body, read against the server's budget of buffered bytes and the body's
        deadline; returns it and the bytes reserved (released by the caller)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise BadRequest(HTTPStatus.LENGTH_REQUIRED, "send a Content-Length, not chunked")
        value = self.headers.get("Content-Length", "").strip()
        if not value.isascii() or not value.isdigit():  # int() also takes "+5", "1_234"
            self.close_connection = True
            raise BadRequest(HTTPStatus.LENGTH_REQUIRED, "Content-Length required (digits)")
        length = int(value)
        max_body = limit if limit is not None else self.max_body
        if length > max_body:
            self.close_connection = True
            if length <= DRAIN_LIMIT:  # read it away, so the client sees the 413, not a reset
                self.server.watch.enter(self.conn, BODY)  # at the minimum rate too
                remaining = length
                while remaining > 0:
                    chunk = self.rfile.read(min(remaining, 1 << 16))
                    if not chunk:
                        break
                    remaining -= len(chunk)
                    self.conn.received = length - remaining
            raise BadRequest(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"body of {length} bytes is over the {max_body}-byte limit",
            )
        if length <= 0:
            raise BadRequest(HTTPStatus.BAD_REQUEST, "empty body: send an image")
        if not self.server.watch.reserve(length):
            self.close_connection = True
            raise BadRequest(
                HTTPStatus.SERVICE_UNAVAILABLE,
                "server busy receiving other uploads, retry shortly",
                [("Retry-After", "1")],
            )
        try:
            return self._read_exactly(length), length
        except BaseException:
            self.server.watch.release(length)
            raise

    def _read_exactly(self, length: int) -> bytearray:
        """`length` bytes into one buffer (no chunks joined), the progress visible to the
        reaper, which closes a body that falls below the minimum rate."""
        self.server.watch.enter(self.conn, BODY)
        body = bytearray(length)
        view = memoryview(body)
        got = 0
        try:
            while got < length:
                n = self.rfile.readinto(view[got : got + (1 << 16)])
                if not n:
                    break
                got += n
                self.conn.received = got
        finally:
            view.release()
            self.server.watch.enter(self.conn, WORKING)
        if got < length:
            self.close_connection = True
            raise BadRequest(HTTPStatus.BAD_REQUEST, "body shorter than its Content-Length")
        return body


_BUSY_REASON = "server busy, retry shortly"
_BUSY = json.dumps(
    {ERROR: _BUSY_REASON, HEADLINE: Failure("", _BUSY_REASON).headline, "http_status": 503}
).encode()
BUSY_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Connection: close\r\nContent-Length: " + str(len(_BUSY)).encode() + b"\r\n\r\n" + _BUSY
)


class BoundedServer(ThreadingHTTPServer):
    """A thread per connection, at most `max_connections` at once: more are answered 503 and
    closed immediately (never left to exhaust file descriptors and spin the accept loop)."""

    daemon_threads = True
    request_queue_size = LISTEN_BACKLOG
    max_connections = MAX_CONNECTIONS

    def server_activate(self) -> None:
        self._slots = threading.BoundedSemaphore(self.max_connections)
        super().server_activate()

    watch: ConnectionWatch  # set by make_server

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False) and not (
            self.watch.evict_longest_waiting() and self._slots.acquire(timeout=1.0)
        ):
            with contextlib.suppress(OSError):
                request.sendall(BUSY_RESPONSE)
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request, client_address) -> None:
        log.exception("connection from %s failed", client_address[0])

    def server_close(self) -> None:
        super().server_close()
        self.watch.close()


def make_server(
    classifier: Classifier,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_body: int = MAX_BODY_BYTES,
    idle_timeout: float = SOCKET_TIMEOUT_S,
    site_report: Path | None = None,
) -> ThreadingHTTPServer:
    handler = type(
        "BoundHandler",
        (Handler,),
        {
            "classifier": classifier,
            "max_body": max_body,
            "timeout": idle_timeout,
            "decode_slots": threading.BoundedSemaphore(MAX_DECODES),
            "counters": Counters(),
            "site_report": site_report,
        },
    )
    if ":" in host:
        server_cls = type("BoundedServer6", (BoundedServer,), {"address_family": socket.AF_INET6})
    else:
        server_cls = BoundedServer
    server = server_cls((host, port), handler)
    server.watch = ConnectionWatch(idle_timeout, MIN_BODY_RATE, BODY_BUDGET_BODIES * max_body)
    return server
