"""Steady-state two-core scaling of the runtime's threads against two independent processes,
paired in the same rounds, start-up excluded.

    python benchmarks/threads_vs_processes.py --images ../shared/data/all-pbs/Original

Six warmed-up children stay alive for the whole run: one pinned to core 0 (the one-core
loop: one batch after another); on both cores, `Classifier()` as a library caller gets it
(batches side by side on two worker threads, OpenCV's own thread pool left as it is), the
same as the `edge-infer` commands run it (OpenCV single-threaded:
`preprocess.opencv_single_threaded`), and two separate `Classifier`s each looping over half
the images on its own thread (nothing shared but the interpreter: no pool, no ordering, no
session); and two pinned one per core (independent one-core loops, which share nothing).
Each round times, over the same images: the one-core child, each two-core child, the
independent pair started together, the one-core child again.
Scaling = one-core time / that child's time (2 x / the slower of the pair). The rounds are short
(about a second each), so the machine's load moves less within a round than between rounds;
the output gives each round and the medians, and the paired ratio threaded / independent.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge_infer.bench import collect_images  # noqa: E402

#: a child that classifies the files listed in argv[1] with `workers` worker threads: warms
#: up, says "ready", then for each line on stdin runs once and prints the seconds it took
_CHILD = """
import sys, time
from edge_infer import Classifier
paths = open(sys.argv[1]).read().split(chr(10))
clf = Classifier(threads=1, workers=int(sys.argv[2]))
if sys.argv[3:] == ["as-commands"]:
    from edge_infer.image.preprocess import opencv_single_threaded
    opencv_single_threaded()
list(clf.iter_predict(paths[:16]))
print("ready", flush=True)
for line in sys.stdin:
    t = time.perf_counter()
    n = sum(1 for _ in clf.iter_predict(paths))
    print(time.perf_counter() - t, flush=True)
"""


#: two Classifiers on two threads of one process, each over half of the images
_TWO_INSTANCES = """
import sys, threading, time
from edge_infer import Classifier
paths = open(sys.argv[1]).read().split(chr(10))
clfs = [Classifier(threads=1, workers=1) for _ in range(2)]
def work(clf, part):
    for i in range(0, len(part), 8):
        clf._run_chunk([(p, p) for p in part[i:i + 8]], False)
for clf in clfs:
    work(clf, paths[:16])
print("ready", flush=True)
for line in sys.stdin:
    t = time.perf_counter()
    threads = [threading.Thread(target=work, args=(clfs[k], paths[k::2])) for k in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    print(time.perf_counter() - t, flush=True)
"""


def start(
    cpus: str, workers: int, listing: Path, code: str = _CHILD, *extra: str
) -> subprocess.Popen:
    proc = subprocess.Popen(
        ["taskset", "-c", cpus, sys.executable, "-c", code, str(listing), str(workers), *extra],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout.readline().strip() == "ready"
    return proc


def timed(procs: list[subprocess.Popen]) -> list[float]:
    """One run in each child, started together; their seconds."""
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    return [float(proc.stdout.readline()) for proc in procs]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=Path, required=True)
    ap.add_argument("--limit", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "threads_vs_processes.json")
    args = ap.parse_args()
    listing = Path("/tmp/edge-infer-threads-vs-processes.list")
    listing.write_text("\n".join(collect_images(args.images, args.limit)))
    one_core = start("0", 1, listing)
    threaded = start("0,1", 2, listing)
    commands = start("0,1", 2, listing, _CHILD, "as-commands")
    two = start("0,1", 1, listing, _TWO_INSTANCES)
    pair = [start("0", 1, listing), start("1", 1, listing)]
    rounds = []
    try:
        for r in range(args.rounds):
            before = timed([one_core])[0]
            thr = timed([threaded])[0]
            cmd = timed([commands])[0]
            inst = timed([two])[0]
            both = max(timed(pair))
            after = timed([one_core])[0]
            base = (before + after) / 2
            rounds.append(
                {
                    "threaded": base / thr,
                    "as_commands": base / cmd,
                    "two_instances": base / inst,
                    "independent": 2 * base / both,
                }
            )
            print(
                f"round {r + 1}: threaded {rounds[-1]['threaded']:.3f}x, as the commands "
                f"{rounds[-1]['as_commands']:.3f}x, two instances "
                f"{rounds[-1]['two_instances']:.3f}x, independent processes "
                f"{rounds[-1]['independent']:.3f}x",
                flush=True,
            )
    finally:
        for proc in [one_core, threaded, commands, two, *pair]:
            proc.stdin.close()
            proc.wait()

    def spread(values: list[float]) -> dict[str, float]:
        return {
            "median": round(statistics.median(values), 3),
            "min": round(min(values), 3),
            "max": round(max(values), 3),
        }

    result = {
        "images": args.limit,
        "rounds": args.rounds,
        "threaded_scaling": spread([r["threaded"] for r in rounds]),
        "as_commands_scaling": spread([r["as_commands"] for r in rounds]),
        "two_instances_scaling": spread([r["two_instances"] for r in rounds]),
        "independent_scaling": spread([r["independent"] for r in rounds]),
        "threaded_over_independent": spread([r["threaded"] / r["independent"] for r in rounds]),
        "as_commands_over_independent": spread(
            [r["as_commands"] / r["independent"] for r in rounds]
        ),
        "as_commands_over_threaded": spread([r["as_commands"] / r["threaded"] for r in rounds]),
        "two_instances_over_independent": spread(
            [r["two_instances"] / r["independent"] for r in rounds]
        ),
        "rounds_raw": rounds,
        "command": "python benchmarks/threads_vs_processes.py " + " ".join(sys.argv[1:]),
    }
    args.out.write_text(json.dumps(result, indent=2))
    for key, value in result.items():
        if key != "rounds_raw":
            print(f"{key:31s} {value}")


if __name__ == "__main__":
    main()
