"""Per-image cost of every stage of `edge-infer classify`, on one thread, then what two cores
allow and how much of it the real command reaches, all in one run (ratios, not absolutes).

    python benchmarks/stages.py --images ../shared/data/all-pbs/Original --limit 1000

Stages are timed one image at a time with OpenCV and onnxruntime on one thread; the limit
assumes perfect overlap: cores / (sum of stage costs), and, for a real run of N images in a
new process, N / (cold start + N * sum / cores). That limit takes the cores to scale
perfectly; the machine's own scaling is measured too (`machine_scaling`: one-core loops run
side by side in independent processes, one per core, against one alone) and gives a second
limit, with `scaling` in place of `cores`. `classify` is then run as a new process on all
usable cores and under `taskset -c 0`. Each round measures all of it back to back, so its
ratios share one minute's load (the machine is shared); the output gives medians and min-max
over rounds.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge_infer.bench import cold_start_seconds, collect_images  # noqa: E402
from edge_infer.classifier import Classifier  # noqa: E402
from edge_infer.image import scale  # noqa: E402
from edge_infer.image.decode import decode_image, load_bytes, load_image  # noqa: E402
from edge_infer.image.preprocess import normalise_acquisition, prepare, to_tensor  # noqa: E402
from edge_infer.image.spec import INTERPOLATIONS  # noqa: E402
from edge_infer.io.writers import RecordWriter  # noqa: E402


def stage_costs(files: list[str], batch: int = 8) -> dict[str, float]:
    """Each stage's summed time over all images / images, in ms, timing the runtime's own
    functions (reading and decoding with their checks, the tensor written into its row of the
    batch as `Classifier` does). The guards and the decision run inside the graph, so they are
    part of `inference`."""
    cv2.setNumThreads(1)
    clf = Classifier(threads=1, workers=1)
    spec = clf.meta.preprocess
    size = (spec.input_size, spec.input_size)
    interp = INTERPOLATIONS[spec.interpolation]
    # warm-up: OpenCV tables, onnxruntime kernels
    warm = decode_image(Path(files[0]).read_bytes())
    clf.predict_arrays([warm] * batch, ["w"] * batch)
    t = dict.fromkeys(
        (
            "read",
            "decode",
            "resize",
            "normalise",
            "scale",
            "to_tensor",
            "inference",
            "decide_and_write",
        ),
        0.0,
    )
    names: list[str] = []
    rows = np.empty((batch, *size, 3), np.float32)
    writer = RecordWriter(open(os.devnull, "w"), "jsonl", clf.classes)  # noqa: SIM115
    clock = time.perf_counter

    def run_batch():
        a = clock()
        out = clf.model.run(rows[: len(names)])
        b = clock()
        for i in range(len(names)):
            writer.write(clf._from_graph(names[i], out, i).to_record())
        c = clock()
        t["inference"] += b - a
        t["decide_and_write"] += c - b
        names.clear()

    for path in files:
        s0 = clock()
        data = load_bytes(Path(path), path)
        s1 = clock()
        bgr = decode_image(data, path)
        s2 = clock()
        small = bgr if bgr.shape[:2] == size else cv2.resize(bgr, size, interpolation=interp)
        s3 = clock()
        small = normalise_acquisition(small, spec)
        s4 = clock()
        if spec.cell_diameter_share:  # the scale rule's reading (the dataset: read whole)
            scale.plan(scale.magnification(bgr, small, spec), spec, bgr.shape)
        s5 = clock()
        to_tensor(small, spec, rows[len(names)])
        s6 = clock()
        names.append(path)
        for key, (a, b) in zip(
            ("read", "decode", "resize", "normalise", "scale", "to_tensor"),
            ((s0, s1), (s1, s2), (s2, s3), (s3, s4), (s4, s5), (s5, s6)),
            strict=True,
        ):
            t[key] += b - a
        if len(names) == batch:
            run_batch()
    if names:
        run_batch()
    return {k: v / len(files) * 1000 for k, v in t.items()}


def guard_cost_ms(
    files: list[str], batch: int = 8, rounds: int = 15, model: str | None = None
) -> dict[str, float]:
    """What the guards and the decision cost inside the graph, per image at batch 8, one
    thread, two ways: the guard sub-graph alone (the shipped graph cut from the input,
    `probabilities` and `ood_score` to the guard outputs), and the shipped graph minus the
    graph cut after `probabilities` and `ood_score`. Rounds interleave the graphs; medians."""
    import onnx
    import onnxruntime as ort

    from edge_infer.metadata import GRAPH_OUTPUTS, OOD_SCORE, PROBABILITIES
    from edge_infer.model import session_options

    clf = Classifier(model, threads=1)
    spec = clf.meta.preprocess
    name = clf.meta.input.name
    proto = onnx.load(str(clf.model.path))
    extract = onnx.utils.Extractor(proto).extract_model
    guard_outputs = [o for o in GRAPH_OUTPUTS if o not in (PROBABILITIES, OOD_SCORE)]
    graphs = {
        "full": proto,
        "net": extract([name], [PROBABILITIES, OOD_SCORE]),
        "guards": extract([name, PROBABILITIES, OOD_SCORE], guard_outputs),
    }
    sessions = {
        k: ort.InferenceSession(g.SerializeToString(), session_options(1))
        for k, g in graphs.items()
    }
    x = np.stack([prepare(load_image(f), spec) for f in files[:batch]])
    net_out = sessions["net"].run(None, {name: x})
    feeds = {
        "full": {name: x},
        "net": {name: x},
        "guards": {name: x, PROBABILITIES: net_out[0], OOD_SCORE: net_out[1]},
    }
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(rounds):
        for k, sess in sessions.items():
            sess.run(None, feeds[k])
            a = time.perf_counter()
            for _ in range(10):
                sess.run(None, feeds[k])
            times[k].append((time.perf_counter() - a) / 10 / batch * 1000)
    return {
        "subgraph": float(np.median(times["guards"])),
        "full_minus_net": float(np.median(np.subtract(times["full"], times["net"]))),
    }


def machine_scaling(paths: list[str], cores: int) -> float:
    """What this machine gives the same work on `cores` cores at once: `cores` independent
    processes, one pinned to each core, each running the runtime's one-core loop over the
    same images, started together, against one such process alone (throughput ratio).
    Nothing is shared between them, so this is the hardware's own scaling (clock, caches,
    memory, the hypervisor): the ceiling for any runtime on this machine. The children are
    threads_vs_processes.py's."""
    from threads_vs_processes import start, timed

    listing = Path("/tmp/edge-infer-stages.list")
    listing.write_text("\n".join(paths))

    def loop_seconds(cpus: list[int]) -> list[float]:
        procs = [start(str(c), 1, listing) for c in cpus]
        try:
            return timed(procs)
        finally:
            for proc in procs:
                proc.stdin.close()
                assert proc.wait() == 0

    alone = loop_seconds([0])[0]
    together = max(loop_seconds(list(range(cores))))
    return cores * alone / together


def run_classify(files_dir: Path, n: int, cpus: str | None) -> float:
    """Images per second of `edge-infer classify DIR --format jsonl` in a new process."""
    cmd = [sys.executable, "-m", "edge_infer", "classify", str(files_dir), "--format", "jsonl"]
    if cpus is not None:
        cmd = ["taskset", "-c", cpus, *cmd]
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(r.stdout.splitlines()) == n
    return n / wall


def one_round(folder: Path, paths: list[str], n: int, cores: int) -> dict:
    """Stage costs, cold start, classify on all cores and on one, back to back: the ratios of
    a round share the machine's load of that minute."""
    costs = stage_costs(paths)
    per_image = sum(costs.values())
    cold = cold_start_seconds(None, paths[0])
    limit_run = n / (cold + n * per_image / 1000 / cores)
    multi = run_classify(folder, n, None)
    single = run_classify(folder, n, "0")
    scaling = machine_scaling(paths, cores)
    return {
        "stage_ms": costs,
        "per_image_ms": per_image,
        "cold_start_s": cold,
        "limit_steady_per_s": cores * 1000 / per_image,
        "limit_run_per_s": limit_run,
        "classify_per_s": multi,
        "classify_1core_per_s": single,
        "share_of_limit": multi / limit_run,
        "cores_speedup": multi / single,
        "machine_scaling": scaling,
        "share_of_machine_limit": multi / (n / (cold + n * per_image / 1000 / scaling)),
    }


def best_of(rounds: list[dict], n: int, cores: int) -> dict[str, float]:
    """The same ratios from each quantity's least-disturbed round (the fastest classify runs,
    the lowest stage sum and cold start): the usual estimator of what code costs on a
    machine whose neighbours only ever slow it down."""
    per_image = min(r["per_image_ms"] for r in rounds)
    cold = min(r["cold_start_s"] for r in rounds)
    multi = max(r["classify_per_s"] for r in rounds)
    single = max(r["classify_1core_per_s"] for r in rounds)
    limit_run = n / (cold + n * per_image / 1000 / cores)
    return {
        "per_image_ms": round(per_image, 4),
        "cold_start_s": round(cold, 4),
        "limit_run_per_s": round(limit_run, 1),
        "classify_per_s": round(multi, 1),
        "classify_1core_per_s": round(single, 1),
        "share_of_limit": round(multi / limit_run, 3),
        "cores_speedup": round(multi / single, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=Path, required=True)
    ap.add_argument("--limit", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=7, help="rounds (medians and min-max)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "stages.json")
    args = ap.parse_args()
    files = collect_images(args.images, args.limit)
    folder = Path("/tmp/edge-infer-stages")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    for i, f in enumerate(files):  # one flat folder, as a camera writes
        shutil.copy(f, folder / f"{i:05d}-{Path(f).name}")
    paths = [str(p) for p in sorted(folder.iterdir())]
    cores = len(os.sched_getaffinity(0))
    # byte-code as an installed package has it (pip compiles at install); a source tree under
    # PYTHONDONTWRITEBYTECODE would compile every module at every start (~15 ms here)
    compileall.compile_dir(ROOT / "edge_infer", quiet=1)
    rounds = []
    for r in range(args.rounds):
        rounds.append(one_round(folder, paths, len(files), cores))
        print(
            f"round {r + 1}: share of limit {rounds[-1]['share_of_limit']:.3f}, "
            f"2 cores / 1 core {rounds[-1]['cores_speedup']:.3f}, "
            f"machine's own scaling {rounds[-1]['machine_scaling']:.3f}",
            flush=True,
        )

    def spread(key: str, digits: int = 3) -> dict:
        values = [r[key] for r in rounds]
        return {
            "median": round(float(np.median(values)), digits),
            "min": round(min(values), digits),
            "max": round(max(values), digits),
        }

    result = {
        "images": len(files),
        "cores": cores,
        "rounds": args.rounds,
        "stage_ms": {
            k: round(float(np.median([r["stage_ms"][k] for r in rounds])), 4)
            for k in rounds[0]["stage_ms"]
        },
        "per_image_ms": spread("per_image_ms", 4),
        "guards_in_graph_ms": {k: round(v, 4) for k, v in guard_cost_ms(paths).items()},
        "cold_start_s": spread("cold_start_s", 4),
        "limit_steady_per_s": spread("limit_steady_per_s", 1),
        "limit_run_per_s": spread("limit_run_per_s", 1),
        "classify_per_s": spread("classify_per_s", 1),
        "classify_1core_per_s": spread("classify_1core_per_s", 1),
        "share_of_limit": spread("share_of_limit"),
        "cores_speedup": spread("cores_speedup"),
        "machine_scaling": spread("machine_scaling"),
        "share_of_machine_limit": spread("share_of_machine_limit"),
        "best_of_rounds": best_of(rounds, len(files), cores),
        "rounds_raw": [{k: v for k, v in r.items() if k != "stage_ms"} for r in rounds],
        "command": "python benchmarks/stages.py " + " ".join(sys.argv[1:]),
    }
    args.out.write_text(json.dumps(result, indent=2))
    for k, v in result.items():
        print(f"{k:22s} {v}")


if __name__ == "__main__":
    main()
