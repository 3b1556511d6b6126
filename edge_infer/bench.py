"""`edge-infer bench`: how fast and how big the edge path is, on real images (no TensorFlow).

Figures, not assertions: machines are shared and noisy, so compare ratios from one run.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .classifier import Classifier
from .errors import ImageError
from .image.decode import load_image
from .image.preprocess import prepare
from .io.inputs import expand_paths


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def cold_start_seconds(model: str | None, image: str, repeats: int = 3) -> float:
    """New process -> first result: from starting the interpreter to the moment its first
    prediction arrives on the pipe (imports, session, one prediction). The process's exit
    (interpreter teardown, ~65 ms here) comes after the result and is not counted."""
    args = [
        sys.executable,
        "-c",
        "import sys; from edge_infer import Classifier; "
        "print(Classifier(sys.argv[1] or None).predict(sys.argv[2]).label, flush=True)",
        model or "",
        image,
    ]
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as proc:
            line = proc.stdout.readline()
            times.append(time.perf_counter() - t)
            proc.stdout.read()
        if proc.returncode != 0 or not line.strip():
            raise RuntimeError(f"cold start run failed (exit {proc.returncode})")
    return statistics.median(times)


def import_seconds(repeats: int = 3) -> float:
    """`import edge_infer` alone, net of the interpreter's own start-up."""

    def timed(code: str) -> float:
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        return time.perf_counter() - t

    base = statistics.median(timed("pass") for _ in range(repeats))
    full = statistics.median(timed("import edge_infer") for _ in range(repeats))
    return max(full - base, 0.0)


def run_bench(
    model: str | None, images: list[str], threads: int | None, batch: int, warmup: int = 10
) -> dict:
    clf = Classifier(model, threads=threads)
    spec = clf.meta.preprocess
    # warm-up: the first runs allocate and pick kernels
    x0 = prepare(load_image(images[0]), spec)[None]
    for _ in range(warmup):
        clf.model.run(x0)
    pre_ms, inf_ms, total_ms = [], [], []
    for path in images:
        t0 = time.perf_counter()
        x = prepare(load_image(path), spec)[None]
        t1 = time.perf_counter()
        clf.model.run(x)
        t2 = time.perf_counter()
        pre_ms.append((t1 - t0) * 1000)
        inf_ms.append((t2 - t1) * 1000)
        total_ms.append((t2 - t0) * 1000)
    # end to end through the public API (decode, preprocess, cell check, inference, decision)
    t = time.perf_counter()
    for path in images:
        clf.predict(path)
    api_b1 = len(images) / (time.perf_counter() - t)
    t = time.perf_counter()
    outcomes = clf.predict_batch(images, batch_size=batch)
    api_bn = len(images) / (time.perf_counter() - t)
    failed = [o for o in outcomes if not o.ok]
    if failed:  # a benchmark over unreadable files would time the wrong work
        raise ImageError(failed[0].source, f"not a usable benchmark image ({failed[0].error})")
    return {
        "model_file": clf.model.path,
        "model_version": clf.version,
        "model_bytes": Path(clf.model.path).stat().st_size,
        "images": len(images),
        "threads": threads or clf.model.threads,
        "batch": batch,
        "preprocess_ms_p50": _percentile(pre_ms, 50),
        "preprocess_ms_p95": _percentile(pre_ms, 95),
        "inference_ms_p50": _percentile(inf_ms, 50),
        "inference_ms_p95": _percentile(inf_ms, 95),
        "latency_ms_p50": _percentile(total_ms, 50),
        "latency_ms_p95": _percentile(total_ms, 95),
        "preprocess_share": sum(pre_ms) / sum(total_ms),
        "throughput_batch1_per_s": api_b1,
        f"throughput_batch{batch}_per_s": api_bn,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "cpu_count": os.cpu_count(),
    }


def collect_images(root: str | Path, limit: int) -> list[str]:
    files = expand_paths([root], recursive=True).files
    if limit and len(files) > limit:
        step = len(files) / limit
        files = [files[int(i * step)] for i in range(limit)]
    return files
