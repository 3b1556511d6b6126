"""Field hardening, round 2 (issue 24, items 4-8 and the server's part of 23): a hostile
network against a real `edge-infer serve` process, with real sockets; bundled model."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from edge_infer.serve.limits import MAX_BODY_BYTES
from edge_infer.site.report import CSP
from tests.conftest import run_cli, start_cli
from tests.test_hardening import raw_request as request


def start_server(*extra: str):
    proc = start_cli("serve", "--port", "0", *extra)
    line = proc.stderr.readline()
    m = re.search(r"http://([\d.]+):(\d+)/", line)
    assert m, line
    return proc, m.group(1), int(m.group(2))


def stop(proc) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=20)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    proc, host, port = start_server("--idle-timeout", "2", "--log-file", str(log))
    yield proc, host, port, log
    stop(proc)


def get(host, port, path: str) -> tuple[bytes, bytes]:
    reply = request(host, port, f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    head, _, body = reply.partition(b"\r\n\r\n")
    return head, body


def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024


def test_4_stalled_bodies_are_bounded_by_one_budget(server, sample_images):
    """64 connections each sending a 20 MB body but its last byte: the server buffers at most
    its budget (the others get 503 at once), stays far under 500 MB, and once the stalled
    reads time out a normal upload is answered."""
    proc, host, port, _ = server
    size = MAX_BODY_BYTES - 1
    head = (
        f"POST /api/classify HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: image/jpeg\r\n"
        f"Content-Length: {size + 1}\r\n\r\n"
    ).encode()
    payload = b"\0" * size
    socks, replies = [], []

    def stalled() -> None:
        s = socket.create_connection((host, port), timeout=30)
        socks.append(s)
        try:
            s.sendall(head + payload)
            replies.append(s.recv(200))
        except OSError:
            replies.append(b"reset")

    threads = [threading.Thread(target=stalled) for _ in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    peak = peak_rss_mb(proc.pid)
    for s in socks:
        s.close()
    # the refused ones are answered 503 and closed while still sending: mostly seen as resets
    print(f"64 stalled 20 MB bodies: server peak RSS {peak:.0f} MB")
    assert peak < 500, peak
    time.sleep(3)
    body = sample_images[0].read_bytes()
    reply = request(
        host,
        port,
        f"POST /api/classify HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: image/jpeg\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body,
    )
    assert reply.startswith(b"HTTP/1.0 200"), reply[:200]


def test_5_trickling_clients_cannot_hold_the_slots(tmp_path):
    """400 connections sending a header byte every 0.5 s (each read comes well within the idle
    timeout) hold every slot: a normal request is still answered within 2 s, and each
    trickling connection is closed once its request is not in by the idle timeout."""
    proc, host, port = start_server("--idle-timeout", "3")
    try:
        conns = [socket.create_connection((host, port), timeout=10) for _ in range(400)]
        stop_trickle = threading.Event()

        def trickle() -> None:
            while not stop_trickle.wait(0.5):
                for s in conns:
                    with contextlib.suppress(OSError):
                        s.send(b"G")

        t = threading.Thread(target=trickle, daemon=True)
        t.start()
        time.sleep(1.0)
        t0 = time.perf_counter()
        head, _ = get(host, port, "/healthz")
        took = time.perf_counter() - t0
        print(f"normal request beside 400 trickling connections: {took * 1000:.0f} ms")
        assert head.startswith(b"HTTP/1.0 200"), head
        assert took < 2.0
        time.sleep(4.0)
        stop_trickle.set()
        closed = 0
        for s in conns:
            s.settimeout(2)
            try:
                while s.recv(100):  # an error reply, if any, then the end
                    pass
                closed += 1
            except TimeoutError:
                pass
            except OSError:  # reset
                closed += 1
            s.close()
        assert closed == 400
    finally:
        stop(proc)


def test_5_a_trickled_body_outlives_no_idle_timeout(tmp_path):
    """A body at one byte every 0.5 s is cut off soon after `--idle-timeout 2`."""
    proc, host, port = start_server("--idle-timeout", "2")
    try:
        s = socket.create_connection((host, port), timeout=0.5)
        s.sendall(
            f"POST /api/classify HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: image/jpeg\r\nContent-Length: 1000\r\n\r\n".encode()
        )
        t0 = time.monotonic()
        cut = None
        while cut is None and time.monotonic() - t0 < 15:
            try:
                s.send(b"x")
                s.recv(100)  # the server's reply or b"": either way it ended the request
                cut = time.monotonic() - t0
            except TimeoutError:
                continue
            except OSError:
                cut = time.monotonic() - t0
        s.close()
        assert cut is not None and cut < 4.0, cut
    finally:
        stop(proc)


def test_8_control_characters_of_a_request_line_are_escaped_in_the_log(server):
    proc, host, port, log = server
    request(host, port, b"GET /\x1b[2J\x1b[32mFits\rforged HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.3)
    text = log.read_text(encoding="utf-8")
    assert "\x1b" not in text and "\r" not in text
    assert "\\x1b[2J" in text


@pytest.mark.parametrize("length", ["+5", "1_234", "٣", " 5 5"])
def test_23_content_length_must_be_digits(server, length):
    _, host, port, _ = server
    reply = request(
        host,
        port,
        f"POST /api/classify HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: image/jpeg\r\n"
        f"Content-Length: {length}\r\n\r\nhello".encode(),
    )
    assert reply.startswith(b"HTTP/1.0 411"), reply[:100]


@pytest.fixture(scope="module")
def site_report(tmp_path_factory, data) -> Path:
    root = tmp_path_factory.mktemp("site")
    site = root / "images"
    site.mkdir()
    for p in sorted((data / "Original").glob("*/*.jpg"))[::60][:32]:
        shutil.copy(p, site / p.name)
    report = root / "site-check.html"
    r = run_cli("check-site", site, "--report", report)
    assert report.exists(), r.stderr
    return report


def test_6_7_the_report_page_has_its_own_policy_and_names_its_model(site_report):
    proc, host, port = start_server("--site-report", str(site_report))
    try:
        head, _ = get(host, port, "/site-check")
        csp = re.search(rb"Content-Security-Policy: ([^\r]+)", head).group(1).decode()
        assert csp == f"{CSP}; frame-ancestors 'none'"
        _, body = get(host, port, "/api/site-check")
        info = json.loads(body)
        assert info["model_matches"] is True
        assert re.fullmatch(r"[0-9a-f]{64}", info["report_model_sha256"])
    finally:
        stop(proc)


def test_7_a_report_made_with_another_model_says_so(site_report, tmp_path):
    other = tmp_path / "other.html"
    html = site_report.read_text(encoding="utf-8")
    other.write_text(
        re.sub(
            r'(name="edge-infer-site-model" content="\S+ )[0-9a-f]{64}', r"\g<1>" + "0" * 64, html
        ),
        encoding="utf-8",
    )
    proc, host, port = start_server("--site-report", str(other))
    try:
        info = json.loads(get(host, port, "/api/site-check")[1])
        assert info["model_matches"] is False
        assert info["verdict_words"].startswith("Not for this model")
    finally:
        stop(proc)


def test_23_a_report_that_is_not_utf8_is_a_404_not_a_500(tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_bytes(b'<meta name="edge-infer-site-verdict" content="fits">\xff\xfe')
    proc, host, port = start_server("--site-report", str(bad))
    try:
        head, body = get(host, port, "/api/site-check")
        assert head.startswith(b"HTTP/1.0 404"), head
        assert b"Traceback" not in body
    finally:
        stop(proc)
