"""The low-power profile: one core and 1 GiB of memory, as on a small lab PC.

    python benchmarks/low_power.py --images ../shared/data/all-pbs/Original [--n 1000]

Runs, pinned to CPU 0 (`taskset -c 0`) inside a memory cgroup limited to 1 GiB (cgroup v2
`memory.max` or v1 `memory.limit_in_bytes`; needs root):
- `edge-infer watch DIR --once` over a drop of N images: images/s, peak RSS, that every image has
  exactly one record and none failed;
- `edge-infer serve`, with N/5 images uploaded one after another from outside the limits:
  images/s, latency median and 95th percentile, peak RSS, that every upload got a 200;
and checks that the defaults follow the one usable CPU (one worker, one onnxruntime thread).
Writes benchmarks/low_power.json. Figures move with the machine's other load: stop other jobs.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
LIMIT_BYTES = 1 << 30
GROUP = "edge-infer-low-power"


def make_group() -> tuple[Path, str]:
    """A memory cgroup limited to LIMIT_BYTES: (its folder, the file holding its peak)."""
    v2 = Path("/sys/fs/cgroup/cgroup.controllers")
    if v2.exists() and "memory" in v2.read_text():
        group = Path("/sys/fs/cgroup") / GROUP
        group.mkdir(exist_ok=True)
        (group / "memory.max").write_text(str(LIMIT_BYTES))
        return group, "memory.peak"
    group = Path("/sys/fs/cgroup/memory") / GROUP
    group.mkdir(exist_ok=True)
    (group / "memory.limit_in_bytes").write_text(str(LIMIT_BYTES))
    (group / "memory.max_usage_in_bytes").write_text("0")
    return group, "memory.max_usage_in_bytes"


def limited(group: Path, *args: str) -> list[str]:
    """A command line that joins the group, then runs pinned to CPU 0."""
    join = f'echo $$ > {group / "cgroup.procs"} && exec taskset -c 0 "$@"'
    return ["sh", "-c", join, "sh", *args]


def peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def defaults_on_one_core() -> dict:
    code = (
        "from edge_infer import Classifier; c = Classifier(); "
        "print(c.workers, c.model.threads, Classifier(latency=True).model.threads)"
    )
    out = subprocess.run(
        ["taskset", "-c", "0", sys.executable, "-c", code], capture_output=True, text=True
    )
    workers, threads, latency_threads = map(int, out.stdout.split())
    return {"workers": workers, "threads": threads, "serve_threads": latency_threads}


def run_watch(group: Path, peak_file: str, images: list[Path], work: Path) -> dict:
    inbox = work / "inbox"
    inbox.mkdir()
    for i, p in enumerate(images):
        shutil.copy(p, inbox / f"{i:05d}-{p.name}")
    results = work / "results.jsonl"
    cmd = limited(
        group, "/usr/bin/time", "-f", "%M", sys.executable, "-m", "edge_infer.cli",
        "watch", str(inbox), "--results", str(results), "--once", "--quiet",
    )  # fmt: skip
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    recs = [json.loads(line) for line in results.read_text().splitlines()]
    names = [Path(r["path"]).name for r in recs]
    return {
        "images": len(images),
        "exit_code": out.returncode,
        "records": len(recs),
        "each_image_once": sorted(names) == sorted(p.name for p in inbox.iterdir()),
        "errors": sum(r["status"] == "error" for r in recs),
        "seconds": round(seconds, 2),
        "images_per_s": round(len(images) / seconds, 1),
        "peak_rss_mb": round(int(out.stderr.strip().splitlines()[-1]) / 1024, 1),
        "cgroup_peak_mb": round(int((group / peak_file).read_text()) / 2**20, 1),
    }


def run_serve(group: Path, images: list[Path]) -> dict:
    cmd = limited(group, sys.executable, "-m", "edge_infer.cli", "serve", "--port", "0")
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    try:
        port = None
        while port is None:
            line = proc.stderr.readline()
            if not line:
                raise RuntimeError("serve ended before listening")
            m = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
            port = int(m.group(1)) if m else None
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        latencies, statuses = [], []
        start = time.perf_counter()
        for p in images:
            t = time.perf_counter()
            conn.request("POST", "/api/classify", p.read_bytes(), {"Content-Type": "image/jpeg"})
            resp = conn.getresponse()
            resp.read()
            latencies.append(time.perf_counter() - t)
            statuses.append(resp.status)
        seconds = time.perf_counter() - start
        # the server process is the shell's exec'd child: the same pid
        rss = peak_rss_kb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    ms = np.array(latencies) * 1000
    return {
        "uploads": len(images),
        "all_200": all(s == 200 for s in statuses),
        "images_per_s": round(len(images) / seconds, 1),
        "latency_ms_median": round(float(np.median(ms)), 1),
        "latency_ms_p95": round(float(np.percentile(ms, 95)), 1),
        "peak_rss_mb": round(rss / 1024, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=Path, required=True)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "low_power.json")
    args = ap.parse_args()
    files = sorted(p for p in args.images.rglob("*.jpg"))
    rng = np.random.default_rng(0)
    images = [files[i] for i in rng.choice(len(files), args.n, replace=False)]
    group, peak_file = make_group()
    report: dict = {
        "profile": "taskset -c 0, memory limit 1 GiB (cgroup)",
        "defaults_on_one_core": defaults_on_one_core(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        report["watch"] = run_watch(group, peak_file, images, Path(tmp))
    report["serve"] = run_serve(group, images[: max(1, args.n // 5)])
    report["command"] = "python benchmarks/low_power.py " + " ".join(sys.argv[1:])
    report["cpu"] = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in ln
        ),
        "",
    )
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    with contextlib.suppress(OSError):  # a cgroup folder goes once its processes have
        group.rmdir()


if __name__ == "__main__":
    main()
