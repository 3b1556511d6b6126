"""Red-team figures of `edge-infer serve` (issue 14), measured on a real server process:

- peak RSS of the server while 4 clients upload decompression bombs in parallel, in every
  format it reads (headers declaring 30000x30000 px) plus the largest image it accepts
  (a 25 MP PNG of a few KB, which does get decoded: the decode cap bounds it);
- 2,000 uploads of real images from 16 threads: errors and latency percentiles;
- a normal request while 200 idle connections are open, and whether the idle ones are closed;
- round 2 (issue 24): decoding bombs past a header check that believed them (a TIFF giving its
  size twice, a progressive JPEG repeating its last scan 1,000 times, a float32 TIFF and a
  16-bit RGBA PNG under the pixel cap), with the server's CPU seconds per accepted file (the
  most expensive accepted: a 25 MP PNG and a 25 MP JPEG at the scan budget); the server's peak
  RSS under 64 connections each stalling a 20 MB body one byte short; and a normal request
  while 400 connections trickle one header byte every 0.5 s.

    python benchmarks/redteam.py [--data ../shared/data/all-pbs] [--out benchmarks/redteam.json]

Runtime only. Not a test: it prints figures (RESULTS.md quotes them).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def png(w: int, h: int) -> bytes:
    """A valid w x h 8-bit gray PNG of zeros: tiny on disk, w*h bytes decoded."""
    raw = zlib.compress(b"".join(b"\0" + b"\0" * w for _ in range(h)), 9)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def bombs() -> dict[str, bytes]:
    tiff_ifd = [(256, 4, 1, 30000), (257, 4, 1, 30000), (258, 3, 1, 16), (277, 3, 1, 3)]
    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 4)
    tiff += b"".join(struct.pack("<HHII", *e) for e in tiff_ifd) + b"\0" * 16000
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\0" * 4 + (29999).to_bytes(3, "little") * 2
    webp = b"RIFF" + struct.pack("<I", 4 + len(vp8x)) + b"WEBP" + vp8x + b"\0" * 9000
    return {
        "tiff 30000x30000": tiff,
        "webp 30000x30000": webp,
        "png 30000x30000 header": png(64, 64)[:16]
        + struct.pack(">II", 30000, 30000)
        + png(64, 64)[24:],
        "jpeg2000": b"\x00\x00\x00\x0cjP  \r\n\x87\n" + b"\0" * 1200,
        "png 5000x5000 (accepted, decoded)": png(5000, 5000),
    }


def tiff_header(entries: list[tuple[int, int, int, int]], extra: bytes = b"") -> bytes:
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + b"\0\0\0\0" + extra + b"\0" * 16000


def progressive_jpeg(side: int, scans: int | None = None) -> bytes:
    """A side x side progressive JPEG; with `scans`, its last scan repeated up to that many."""
    import cv2

    img = (np.random.default_rng(0).random((side // 8, side // 8, 3)) * 255).astype(np.uint8)
    img = cv2.resize(img, (side, side), interpolation=cv2.INTER_NEAREST)
    data = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()
    if scans is None:
        return data
    end = data.rfind(b"\xff\xd9")
    last = data[data.rfind(b"\xff\xda") : end]
    return data[:end] + last * (scans - data.count(b"\xff\xda")) + b"\xff\xd9"


def bombs_round_2() -> dict[str, bytes]:
    dup = [(256, 4, 1, 30000), (257, 4, 1, 30000), (256, 4, 1, 100), (257, 4, 1, 100)]
    float_tiff = tiff_header(
        [
            (256, 4, 1, 5000),
            (257, 4, 1, 5000),
            (258, 3, 3, 8 + 2 + 12 * 5 + 4),
            (277, 3, 1, 3),
            (339, 3, 1, 3),
        ],
        struct.pack("<HHH", 32, 32, 32),
    )
    deep_png = png(64, 64)[:16] + struct.pack(">IIBB", 5000, 5000, 16, 6) + png(64, 64)[26:]
    return {
        "tiff size given twice (30000, then 100)": tiff_header(dup),
        "progressive jpeg 5000x5000, last scan x1000": progressive_jpeg(5000, 1000),
        "float32 tiff 5000x5000x3 header": float_tiff,
        "16-bit rgba png 5000x5000 header": deep_png,
        "png 5000x5000 (accepted, decoded)": png(5000, 5000),
        "progressive jpeg 5000x5000, 64 scans (over the scan budget)": progressive_jpeg(5000, 64),
        "progressive jpeg 5000x5000, 32 scans (accepted, decoded)": progressive_jpeg(5000, 32),
    }


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stalled_bodies(host: str, port: int, n: int = 64, size: int = 20 * 1024 * 1024) -> None:
    """`n` connections each sending a `size`-byte body but its last byte, at once."""
    head = (
        f"POST /api/classify HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: image/jpeg\r\n"
        f"Content-Length: {size}\r\n\r\n"
    ).encode()
    payload = b"\0" * (size - 1)
    socks = []

    def one() -> None:
        s = socket.create_connection((host, port), timeout=30)
        socks.append(s)
        try:
            s.sendall(head + payload)
            s.recv(100)
        except OSError:
            pass

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for s in socks:
        s.close()


def trickling(host: str, port: int, body: bytes, n: int = 400) -> dict:
    """A normal upload while `n` connections send one header byte every 0.5 s."""
    conns = [socket.create_connection((host, port), timeout=10) for _ in range(n)]
    stop = threading.Event()

    def trickle() -> None:
        while not stop.wait(0.5):
            for s in conns:
                with contextlib.suppress(OSError):
                    s.send(b"G")

    threading.Thread(target=trickle, daemon=True).start()
    time.sleep(2.0)
    code, ms = post(host, port, body)
    stop.set()
    for s in conns:
        s.close()
    return {"trickling_connections": n, "normal_request_status": code, "normal_request_ms": ms}


def start_server() -> tuple[subprocess.Popen, str, int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_infer.cli", "serve", "--port", "0", "--idle-timeout", "5"],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    m = re.search(r"http://([\d.]+):(\d+)/", proc.stderr.readline())
    assert m, "server did not start"
    threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
    return proc, m.group(1), int(m.group(2))


def post(host: str, port: int, body: bytes, timeout: float = 60) -> tuple[int, float]:
    t = time.perf_counter()
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(
            f"POST /api/classify HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: "
            f"application/octet-stream\r\nContent-Length: {len(body)}\r\nConnection: close"
            f"\r\n\r\n".encode()
            + body
        )
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    return int(reply[9:12]), (time.perf_counter() - t) * 1000


def main() -> dict:
    from train.dataset import default_data_root

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=default_data_root())
    ap.add_argument("--uploads", type=int, default=2000)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "redteam.json")
    args = ap.parse_args()
    out: dict = {}

    proc, host, port = start_server()
    base = vm_hwm_mb(proc.pid)
    statuses = {}
    for name, body in bombs().items():
        with ThreadPoolExecutor(4) as pool:
            statuses[name] = sorted(
                {c for c, _ in pool.map(lambda b: post(host, port, b), [body] * 4)}
            )
    out["bombs"] = {
        "server_rss_before_mb": round(base, 1),
        "server_peak_rss_mb": round(vm_hwm_mb(proc.pid), 1),
        "http_status_per_bomb": statuses,
        "parallel_uploads_per_bomb": 4,
    }
    print(json.dumps(out["bombs"], indent=2), flush=True)

    images = sorted((args.data / "Original").rglob("*.jpg"))[::7][:200]
    bodies = [p.read_bytes() for p in images]
    with ThreadPoolExecutor(16) as pool:
        t = time.perf_counter()
        results = list(
            pool.map(lambda i: post(host, port, bodies[i % len(bodies)]), range(args.uploads))
        )
        wall = time.perf_counter() - t
    lat = np.array([ms for _, ms in results])
    out["load"] = {
        "uploads": args.uploads,
        "threads": 16,
        "errors": int(sum(c != 200 for c, _ in results)),
        "p50_ms": round(float(np.percentile(lat, 50)), 1),
        "p99_ms": round(float(np.percentile(lat, 99)), 1),
        "images_per_s": round(args.uploads / wall, 1),
        "server_peak_rss_mb": round(vm_hwm_mb(proc.pid), 1),
    }
    print(json.dumps(out["load"], indent=2), flush=True)

    idle = [socket.create_connection((host, port), timeout=30) for _ in range(200)]
    t = time.perf_counter()
    code, _ = post(host, port, bodies[0])
    normal_ms = (time.perf_counter() - t) * 1000
    time.sleep(6)  # --idle-timeout 5
    closed = 0
    for s in idle:
        try:
            closed += s.recv(1) == b""
        except OSError:
            closed += 1
        s.close()
    out["idle"] = {
        "idle_connections": 200,
        "normal_request_status": code,
        "normal_request_ms": round(normal_ms, 1),
        "idle_closed_after_timeout": closed,
        "idle_timeout_s": 5,
    }
    print(json.dumps(out["idle"], indent=2), flush=True)

    statuses, cpu = {}, {}
    for name, body in bombs_round_2().items():
        before = cpu_seconds(proc.pid)
        statuses[name] = post(host, port, body)[0]
        cpu[name] = round(cpu_seconds(proc.pid) - before, 2)
    out["bombs_round_2"] = {
        "http_status": statuses,
        "server_cpu_s": cpu,
        "max_cpu_s_of_an_accepted_file": max(c for name, c in cpu.items() if statuses[name] == 200),
    }
    print(json.dumps(out["bombs_round_2"], indent=2), flush=True)
    proc.terminate()
    proc.wait(timeout=20)

    proc, host, port = start_server()
    base = vm_hwm_mb(proc.pid)
    stalled_bodies(host, port)
    out["stalled_bodies"] = {
        "connections": 64,
        "body_mb": 20,
        "server_rss_before_mb": round(base, 1),
        "server_peak_rss_mb": round(vm_hwm_mb(proc.pid), 1),
    }
    time.sleep(6)  # the stalled reads time out (--idle-timeout 5)
    out["stalled_bodies"]["normal_request_after_status"] = post(host, port, bodies[0])[0]
    print(json.dumps(out["stalled_bodies"], indent=2), flush=True)
    out["trickling"] = trickling(host, port, bodies[0])
    out["trickling"]["normal_request_ms"] = round(out["trickling"]["normal_request_ms"], 1)
    print(json.dumps(out["trickling"], indent=2), flush=True)
    proc.terminate()
    proc.wait(timeout=20)
    out["command"] = "python benchmarks/redteam.py " + " ".join(sys.argv[1:])
    args.out.write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
