"""Red-team figures of `edge-infer serve` (issue 14), measured on a real server process:

- peak RSS of the server while 4 clients upload decompression bombs in parallel, in every
  format it reads (headers declaring 30000x30000 px) plus the largest image it accepts
  (a 25 MP PNG of a few KB, which does get decoded: the decode cap bounds it);
- 2,000 uploads of real images from 16 threads: errors and latency percentiles;
- a normal request while 200 idle connections are open, and whether the idle ones are closed.

    python benchmarks/redteam.py [--data ../shared/data/all-pbs] [--out benchmarks/redteam.json]

Runtime only. Not a test: it prints figures (RESULTS.md quotes them).
"""

from __future__ import annotations

import argparse
import json
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
    proc.terminate()
    proc.wait(timeout=20)
    out["command"] = "python benchmarks/redteam.py " + " ".join(sys.argv[1:])
    args.out.write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
