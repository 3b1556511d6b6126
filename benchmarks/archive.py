"""The archive path's speed: `edge-infer archive` on a local Ray with one and with two workers,
against `edge-infer classify` on one core, in paired rounds of the same images.

    python benchmarks/archive.py --images ../shared/data/all-pbs/Original [--n 3000] [--rounds 2]

Each round runs, in an order that alternates between rounds: classify pinned to CPU 0
(`taskset -c 0`) over N inputs (the folder's images, then copies of them under other names
where N is larger) and over one (its start-up, subtracted); archive with
`--workers 1`; archive with `--workers 2` (each a fresh process and a fresh local Ray with the
machine's usable CPUs, writing to a fresh folder). The steady rate of an archive run is the slope
of inputs done against time over the blocks of results after each worker's first (so Ray's
start-up, the actors' start and their first block are left out: reported apart). Memory: the
peak RSS (VmHWM) of each worker process and of the driver. Writes benchmarks/archive.json.
Figures move with the machine's other load: stop other jobs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from low_power import peak_rss_kb  # benchmarks/ is on the path of a script run from it

ROOT = Path(__file__).resolve().parent.parent


def vm_kb(pid: int) -> int:
    """Peak RSS (low_power.peak_rss_kb), 0 for a process that has just ended."""
    try:
        return peak_rss_kb(pid)
    except OSError:
        return 0


def worker_pids() -> list[int]:
    ps = subprocess.run(["pgrep", "-f", "MapWorker"], capture_output=True, text=True)
    return [int(p) for p in ps.stdout.split()]


def child_archive(listing: str, out: str, workers: int) -> None:
    """One archive run in this process; prints its figures as JSON."""
    sys.path.insert(0, str(ROOT))
    from edge_infer.archive.run import ArchiveOptions, run_archive

    peaks: dict[int, int] = {}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            for pid in worker_pids():
                peaks[pid] = max(peaks.get(pid, 0), vm_kb(pid))
            stop.wait(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    files = Path(listing).read_text().splitlines()
    summary = run_archive([listing], out, ArchiveOptions(workers=workers, bars=False))
    stop.set()
    sampler.join()
    t = np.array(summary.timeline, np.float64)
    steady = t[workers:]  # after each worker's first block
    slope = float(np.polyfit(steady[:, 0], steady[:, 1], 1)[0]) if len(steady) >= 3 else None
    print(
        json.dumps(
            {
                "inputs": len(files),
                "rows": summary.written,
                "statuses": summary.counts,
                "seconds": summary.seconds,
                "ray_start_s": summary.ray_start_s,
                "first_result_s": summary.first_result_s,
                "blocks": len(t),
                "steady_images_per_s": slope,
                "overall_images_per_s": len(files) / summary.seconds,
                "worker_peak_rss_mb": sorted(round(v / 1024) for v in peaks.values()),
                "driver_peak_rss_mb": round(vm_kb(os.getpid()) / 1024),
            }
        )
    )


def run_archive_child(listing: Path, workers: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="archive-bench-") as out:
        cmd = [sys.executable, __file__, "--child", str(listing), out, str(workers)]
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=3600)
        if r.returncode != 0:
            raise RuntimeError(r.stderr[-3000:])
        return json.loads(r.stdout.strip().splitlines()[-1])


def time_classify(files: list[str]) -> float:
    cmd = [
        "taskset",
        "-c",
        "0",
        sys.executable,
        "-m",
        "edge_infer.cli",
        "classify",
        "--format",
        "jsonl",
        *files,
    ]
    t = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, cwd=ROOT)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", help="folder of images (searched recursively)")
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "archive.json"))
    args = ap.parse_args()
    if args.child:
        child_archive(args.child[0], args.child[1], int(args.child[2]))
        return
    if not args.images:
        ap.error("--images is required")
    files = sorted(str(p.resolve()) for p in Path(args.images).rglob("*.jpg"))
    work = Path(tempfile.mkdtemp(prefix="archive-bench-"))
    copy = 0
    while len(files) < args.n:  # more inputs than images: copies under other names
        copy += 1
        (work / f"copy{copy}").mkdir()
        for i, f in enumerate(files[: args.n - len(files)]):
            shutil.copyfile(f, work / f"copy{copy}" / f"{i}.jpg")
        files += sorted(str(p) for p in (work / f"copy{copy}").iterdir())
    files = files[: args.n]
    listing = work / "inputs.txt"
    listing.write_text("\n".join(files))
    rounds = []
    for r in range(args.rounds):
        order = ["classify", "archive1", "archive2"]
        if r % 2:
            order.reverse()
        got: dict = {}
        for what in order:
            print(f"round {r + 1}: {what}", file=sys.stderr, flush=True)
            if what == "classify":
                one = time_classify(files[:1])
                full = time_classify(files)
                got[what] = {
                    "seconds": full,
                    "start_s": one,
                    "images_per_s": (len(files) - 1) / (full - one),
                }
            else:
                got[what] = run_archive_child(listing, int(what[-1]))
        rounds.append(got)
        c = got["classify"]["images_per_s"]
        a1, a2 = (got[k]["steady_images_per_s"] for k in ("archive1", "archive2"))
        print(
            f"  classify 1 core {c:.1f}/s; archive 1 worker {a1:.1f}/s ({a1 / c:.2f}x), "
            f"2 workers {a2:.1f}/s ({a2 / a1:.2f}x one)",
            file=sys.stderr,
            flush=True,
        )

    def med(key: str, field: str) -> float:
        return float(np.median([r[key][field] for r in rounds]))

    summary = {
        "images": len(files),
        "rounds": args.rounds,
        "cpus": len(os.sched_getaffinity(0)),
        "classify_1core_images_per_s": med("classify", "images_per_s"),
        "archive_1worker_steady_images_per_s": med("archive1", "steady_images_per_s"),
        "archive_2workers_steady_images_per_s": med("archive2", "steady_images_per_s"),
        "per_worker_vs_classify_1core": float(
            np.median(
                [
                    r["archive1"]["steady_images_per_s"] / r["classify"]["images_per_s"]
                    for r in rounds
                ]
            )
        ),
        "two_vs_one_worker": float(
            np.median(
                [
                    r["archive2"]["steady_images_per_s"] / r["archive1"]["steady_images_per_s"]
                    for r in rounds
                ]
            )
        ),
        "ray_start_s": med("archive2", "ray_start_s"),
        "first_result_s_2workers": med("archive2", "first_result_s"),
        "worker_peak_rss_mb": max(
            max(r[k]["worker_peak_rss_mb"] or [0]) for r in rounds for k in ("archive1", "archive2")
        ),
        "command": "python benchmarks/archive.py --images "
        + args.images
        + f" --n {args.n} --rounds {args.rounds}",
    }
    Path(args.out).write_text(json.dumps({"summary": summary, "rounds": rounds}, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
