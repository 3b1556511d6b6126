"""Soak the folder watcher: drop thousands of real images into a watched folder, report the
throughput, the watcher's peak memory and whether every file got exactly one record.

    python benchmarks/soak_watch.py --files 5000 [--data ../shared/data/all-pbs]

Runtime only (no TensorFlow). Not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def peak_rss_mb(pid: int) -> float:
    """VmHWM: the high-water mark of the process's resident memory."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "all-pbs")
    ap.add_argument("--files", type=int, default=5000)
    ap.add_argument(
        "--rate", type=float, default=0, help="files/s to write (0 = as fast as possible)"
    )
    args = ap.parse_args()
    sources = sorted((args.data / "Original").rglob("*.jpg"))
    with tempfile.TemporaryDirectory() as tmp:
        folder, results = Path(tmp) / "camera", Path(tmp) / "results.jsonl"
        folder.mkdir()
        # the watcher logs a line per image: to a file, not a pipe nobody reads until the end
        # (a full pipe blocks the writer: after ~550 images, 64 KB)
        log = open(Path(tmp) / "watch.log", "w")  # noqa: SIM115
        watcher = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "edge_infer.cli",
                "watch",
                str(folder),
                "--results",
                str(results),
                "--settle",
                "0.5",
                "--interval",
                "0.5",
                "--heartbeat",
                "10",
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stderr=log,
        )
        t0 = time.time()
        for i in range(args.files):
            src = sources[i % len(sources)]
            tmp_name = folder / f".{i:06d}.part"
            tmp_name.write_bytes(src.read_bytes())
            tmp_name.rename(folder / f"img-{i:06d}-{src.name}")
            if args.rate:
                time.sleep(1 / args.rate)
        written = time.time() - t0
        done = 0
        while done < args.files and time.time() - t0 < 3600:
            time.sleep(1)
            done = results.read_bytes().count(b"\n") if results.exists() else 0
            print(f"\r{done}/{args.files} records", end="", file=sys.stderr, flush=True)
        elapsed = time.time() - t0
        rss = peak_rss_mb(watcher.pid)
        watcher.terminate()
        watcher.wait(timeout=60)
        log.close()
        log_lines = (Path(tmp) / "watch.log").read_text().count("\n")
        recs = [json.loads(line) for line in results.read_text().splitlines()]
        counts = Counter(r["path"] for r in recs)
        report = {
            "files": args.files,
            "records": len(recs),
            "distinct_files_with_records": len(counts),
            "files_with_two_or_more_records": sum(1 for n in counts.values() if n > 1),
            "errors": sum(1 for r in recs if r.get("error")),
            "writing_seconds": round(written, 1),
            "total_seconds": round(elapsed, 1),
            "throughput_images_per_s": round(len(recs) / elapsed, 1),
            "watcher_peak_rss_mb": round(rss, 1),
            "watcher_log_lines": log_lines,
        }
        print(file=sys.stderr)
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
