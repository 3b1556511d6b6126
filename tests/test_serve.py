"""`edge-infer serve` as a real process on a loopback port: HTTP API, bad requests, concurrency."""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import socket
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from edge_infer import Classifier
from tests.conftest import start_cli

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def server(tiny_onnx):
    proc = start_cli("serve", "--port", "0", "--model", tiny_onnx, "--max-upload-mb", "1")
    line = proc.stderr.readline()
    m = re.search(r"http://([\d.]+):(\d+)/", line)
    assert m, line
    yield m.group(1), int(m.group(2))
    proc.terminate()
    proc.wait(timeout=20)


def request(server, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection(*server, timeout=60)
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    ctype = resp.getheader("Content-Type", "")
    return resp.status, (json.loads(data) if "json" in ctype else data)


def test_listens_on_loopback_by_default(server):
    assert server[0] == "127.0.0.1"


def test_health_model_and_page(server):
    status, health = request(server, "GET", "/healthz")
    assert status == 200 and health["healthy"] and health["model_version"] == "tiny-test"
    assert {"classified", "refused"} <= set(health)
    status, meta = request(server, "GET", "/api/model")
    assert status == 200 and [c["name"] for c in meta["classes"]] == list(Classifier().classes)
    assert "path" not in meta and "reference" not in meta["guards"]["image_stats"]
    for path in ("/", "/static/app.js", "/static/style.css"):
        status, page = request(server, "GET", path)
        assert status == 200 and page
        assert not re.search(rb"(src|href)=\"https?://", page), "no external assets"
    assert request(server, "GET", "/nope")[0] == 404


def test_classify_raw_and_multipart_match_the_api(server, tiny_onnx, sample_images):
    clf = Classifier(tiny_onnx)
    img = sample_images[7]
    want = clf.predict(img)
    status, rec = request(
        server, "POST", "/api/classify", img.read_bytes(), {"Content-Type": "image/jpeg"}
    )
    assert status == 200 and rec["label"] == want.label
    assert abs(rec["confidence"] - want.confidence) < 1e-5
    boundary = uuid.uuid4().hex
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; '
        f'filename="../../etc/evil.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
    ).encode()
    body += img.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    status, rec = request(
        server,
        "POST",
        "/api/classify?overlay=1",
        body,
        {"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert status == 200 and rec["label"] == want.label
    assert rec["overlay_png"].startswith("data:image/png;base64,")


@pytest.mark.parametrize(
    "body, ctype, status, reason",
    [
        (b"just some text", "application/octet-stream", 400, "not a supported image format"),
        (b"", "image/jpeg", 400, "empty body"),
        (b"hello", "text/plain", 415, "unsupported content type"),
        (b"--x\r\n\r\n", "multipart/form-data; boundary=zzz", 400, "multipart"),
        (b"\0" * (2 * 1024 * 1024), "image/jpeg", 413, "over the"),
    ],
)
def test_bad_requests_get_clear_errors(server, body, ctype, status, reason):
    got, rec = request(server, "POST", "/api/classify", body, {"Content-Type": ctype})
    assert got == status and reason in rec["error"]


def test_huge_declared_body_is_refused_before_it_is_sent(server):
    with socket.create_connection(server, timeout=10) as s:
        s.sendall(
            b"POST /api/classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
            b"Content-Length: 10000000000\r\n\r\n"
        )
        reply = s.recv(4096)
    assert reply.startswith(b"HTTP/1.0 413") or reply.startswith(b"HTTP/1.1 413")


def test_malformed_requests_do_not_stop_the_server(server, sample_images):
    for junk in (
        b"\x16\x03\x01garbage\r\n\r\n",
        b"POST /api/classify HTTP/1.1\r\nContent-Length: x\r\n\r\n",
        b"GET " + b"a" * 70000 + b" HTTP/1.1\r\n\r\n",
    ):
        with socket.create_connection(server, timeout=10) as s:
            s.sendall(junk)
            with contextlib.suppress(OSError):
                s.recv(1024)
    assert request(server, "GET", "/healthz")[0] == 200


def test_concurrent_uploads(server, tiny_onnx, sample_images):
    clf = Classifier(tiny_onnx)
    want = {p.name: clf.predict(p).label for p in sample_images}

    def post(p):
        return p.name, request(
            server, "POST", "/api/classify", p.read_bytes(), {"Content-Type": "image/jpeg"}
        )

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(post, sample_images * 3))
    assert len(results) == 36
    for name, (status, rec) in results:
        assert status == 200 and rec["label"] == want[name]


def test_a_case_of_records_gets_the_runtime_rule(server, tiny_onnx):
    from edge_infer.cases import one_case

    records = [{"status": "ok", "label": "Pre"}] * 5 + [{"status": "uncertain", "label": "Pro"}]
    json_type = {"Content-Type": "application/json"}
    status, got = request(server, "POST", "/api/case", json.dumps({"records": records}), json_type)
    assert status == 200
    assert got == one_case(records, Classifier(tiny_onnx).meta, "dropped together")
    for bad in ({"records": [{"status": "fine", "label": "Pre"}]}, {"x": 1}, {"records": []}):
        assert request(server, "POST", "/api/case", json.dumps(bad), json_type)[0] == 400
