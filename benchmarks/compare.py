"""Same exported model, same images, same rounds: Keras eager / predict / tf.function / TFLite,
onnxruntime FP32 and int8, OpenVINO FP32 and OpenVINO's default precision, at 1 thread and at
all cores; plus the end-to-end edge command over a folder.

    python benchmarks/compare.py --data ../shared/data/all-pbs --rounds 9

Every runtime runs the model as shipped: the network with its temperature and its
out-of-distribution head (export.onnx_export.build_export_model for TensorFlow and TFLite,
the bundled ONNX file for onnxruntime and OpenVINO). Each round times every method once
(TensorFlow in one long-lived worker process per thread count, because its thread pools are
fixed at start-up; the others in this process, while the workers wait), and each method's
ratio to onnxruntime FP32 comes from alternating blocks of the two in the same process
(paired_ms), so a load change on this shared machine hits both sides of a ratio alike.
Reported: the median over rounds of each method's time, its min-max, and of its ratio (median
and min-max). Needs the `train` extra; OpenVINO (the `bench` extra) is
optional.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RUN = ROOT / "models" / "run"
ONNX_MODEL = ROOT / "models" / "all_pbs_cnn.onnx"
REFERENCE = "onnxruntime FP32"
#: alternating method / reference blocks per method and round (paired_ms)
BLOCKS = 10


def median_ms(fn, x: np.ndarray, runs: int, warmup: int = 5) -> float:
    """Batch-1 median over `runs` calls, cycling through the images."""
    for i in range(warmup):
        fn(x[i % len(x)][None])
    times = []
    for i in range(runs):
        xi = x[i % len(x)][None]
        t = time.perf_counter()
        fn(xi)
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1000)


def paired_ms(fn, ref, x: np.ndarray, runs: int, blocks: int = BLOCKS) -> tuple[float, float]:
    """`fn`'s median batch-1 time and its ratio to `ref` (onnxruntime FP32 at the same thread
    count, in the same process), timed in alternating blocks: each block of `fn` is compared
    with the `ref` blocks just before and after it, so a load change on this shared machine
    hits both sides of a ratio alike. Returns (ms, median of the block ratios)."""
    per_block = max(2, runs // blocks)
    ref_ms = [median_ms(ref, x, per_block, warmup=2)]
    ms, ratios = [], []
    for _ in range(blocks):
        ms.append(median_ms(fn, x, per_block, warmup=1))
        ref_ms.append(median_ms(ref, x, per_block, warmup=1))
        ratios.append(ms[-1] / (0.5 * (ref_ms[-2] + ref_ms[-1])))
    return float(np.median(ms)), float(np.median(ratios))


def tensors(data: Path, n: int) -> np.ndarray:
    """Network inputs of the first n test images, made by the shipped model's preprocessing."""
    from edge_infer import Classifier
    from edge_infer.image.decode import load_image
    from edge_infer.image.preprocess import prepare
    from train.dataset import read_manifest, select

    spec = Classifier(ONNX_MODEL, threads=1).meta.preprocess
    test = select(read_manifest(), "test")[:n]
    return np.stack([prepare(load_image(data / r.path), spec) for r in test])


# --------------------------------------------------------------------------- TensorFlow worker


def tf_methods(threads: int) -> dict:
    """Every TensorFlow flavour of the export model, at one thread count (own process)."""
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from export.onnx_export import build_export_model

    model, _ = build_export_model(RUN)
    graph = tf.function(lambda b: model(b, training=False), reduce_retracing=True)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    interp = tf.lite.Interpreter(model_content=converter.convert(), num_threads=threads)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]["index"]
    outs = [o["index"] for o in interp.get_output_details()]

    def lite(b):
        interp.set_tensor(inp, b)
        interp.invoke()
        return [interp.get_tensor(o) for o in outs]

    return {
        "Keras eager model(x)": (lambda b: model(b, training=False), 0.25),
        "Keras predict": (lambda b: model.predict(b, verbose=0), 0.1),
        "TF graph (tf.function)": (lambda b: graph(tf.constant(b)), 1.0),
        "TFLite (tf.lite.Interpreter)": (lite, 1.0),
    }


#: marks the worker's answers on its stdout (TensorFlow prints there too)
ANSWER = "@compare "


def tf_worker(threads: int, tensor_file: Path, runs: int) -> None:
    """Waits for a line on stdin per round; answers with one JSON line of (ms, ratio) per
    method, each paired with onnxruntime FP32 run in this process (paired_ms)."""
    from edge_infer.model import OnnxModel

    x = np.load(tensor_file)
    methods = tf_methods(threads)
    ref = OnnxModel(ONNX_MODEL, threads=threads).run
    print(ANSWER + json.dumps({"ready": True}), flush=True)
    for _ in sys.stdin:
        out = {
            name: paired_ms(fn, ref, x, max(2 * BLOCKS, int(runs * share)))
            for name, (fn, share) in methods.items()
        }
        print(ANSWER + json.dumps(out), flush=True)


def answer(worker: subprocess.Popen) -> dict:
    """The worker's next answer, skipping whatever else it printed."""
    for line in worker.stdout:
        if line.startswith(ANSWER):
            return json.loads(line[len(ANSWER) :])
    raise RuntimeError(f"TensorFlow worker ended (exit {worker.wait()})")


# --------------------------------------------------------------------------- in-process methods


def local_methods(threads: int, int8: Path | None) -> dict:
    from edge_infer.model import OnnxModel

    methods = {REFERENCE: OnnxModel(ONNX_MODEL, threads=threads).run}
    if threads > 1:  # what `edge-infer serve` uses: spin inside a run, stop at its end
        methods["onnxruntime FP32, serve setting"] = OnnxModel(
            ONNX_MODEL, threads=threads, spin_during_run=True
        ).run
    if int8 is not None:
        methods["onnxruntime int8"] = OnnxModel(int8, threads=threads).run
    try:
        import openvino as ov
    except ImportError:
        return methods
    core = ov.Core()
    model = core.read_model(str(ONNX_MODEL))
    model.reshape({0: [1, *model.inputs[0].partial_shape[1:].to_shape()]})
    for name, hint in (("OpenVINO FP32", "f32"), ("OpenVINO default precision", None)):
        config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
        if hint:
            config["INFERENCE_PRECISION_HINT"] = hint
        compiled = core.compile_model(model, "CPU", config)
        request = compiled.create_infer_request()
        methods[name] = lambda b, r=request: r.infer({0: b})
    return methods


def parity(methods: dict, x: np.ndarray) -> dict[str, float]:
    """Largest probability difference from onnxruntime FP32 over the images, per method."""
    ref = [methods[REFERENCE](xi[None])["probabilities"] for xi in x]
    out = {}
    for name, fn in methods.items():
        if name.startswith("OpenVINO"):
            got = [np.asarray(list(fn(xi[None]).values())[0]) for xi in x]
            if got[0].shape != ref[0].shape:  # outputs in another order
                got = [np.asarray(list(fn(xi[None]).values())[1]) for xi in x]
            out[name] = float(max(np.abs(g - r).max() for g, r in zip(got, ref, strict=True)))
    return out


def make_int8(data: Path, workdir: Path) -> Path | None:
    """The int8 variant the exporter builds (not shipped: see models/README.md)."""
    from edge_infer import Classifier
    from edge_infer.image.decode import load_image
    from edge_infer.image.preprocess import prepare
    from export.quantize import quantize
    from train.dataset import read_manifest, select

    spec = Classifier(ONNX_MODEL, threads=1).meta.preprocess
    train = select(read_manifest(), "train")[::8][:256]
    calib = np.stack([prepare(load_image(data / r.path), spec) for r in train])
    out = workdir / "int8.onnx"
    quantize(ONNX_MODEL, out, calib)
    return out


def end_to_end(data: Path, n_images: int) -> dict:
    """`edge-infer classify` over a folder of real images, as a user runs it."""
    files = sorted((data / "Original").rglob("*.jpg"))[:n_images]
    with tempfile.TemporaryDirectory() as tmp:
        for f in files:
            os.symlink(f, Path(tmp) / f"{f.parent.name}-{f.name}")
        t = time.perf_counter()
        r = subprocess.run(
            [sys.executable, "-m", "edge_infer", "classify", tmp, "--format", "jsonl"],
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        seconds = time.perf_counter() - t
    assert r.returncode == 0, r.stderr[-2000:]
    return {"images": len(files), "seconds": seconds, "images_per_s": len(files) / seconds}


# --------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "all-pbs")
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "compare.json")
    ap.add_argument("--images", type=int, default=100, help="test images cycled through")
    ap.add_argument("--runs", type=int, default=200, help="timed batch-1 runs per method/round")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--e2e-images", type=int, default=1000)
    ap.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--tensors", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        tf_worker(args.worker, args.tensors, args.runs)
        return
    cores = len(os.sched_getaffinity(0))
    thread_counts = sorted({1, cores})
    x = tensors(args.data, args.images)
    per_round: dict[str, dict[int, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tensor_file = Path(tmp) / "x.npy"
        np.save(tensor_file, x)
        int8 = make_int8(args.data, Path(tmp))
        workers = {
            t: subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--worker",
                    str(t),
                    "--tensors",
                    str(tensor_file),
                    "--runs",
                    str(args.runs),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for t in thread_counts
        }
        for w in workers.values():
            assert answer(w)["ready"]
        local = {t: local_methods(t, int8) for t in thread_counts}
        accuracy = parity(local[thread_counts[0]], x[:50])
        for r in range(args.rounds):
            print(f"[compare] round {r + 1}/{args.rounds}", file=sys.stderr, flush=True)
            for t in thread_counts:
                workers[t].stdin.write("go\n")
                workers[t].stdin.flush()
                for name, timed in answer(workers[t]).items():
                    per_round.setdefault(name, {}).setdefault(t, []).append(tuple(timed))
                ref = local[t][REFERENCE]
                for name, fn in local[t].items():
                    timed = (
                        (median_ms(fn, x, args.runs), 1.0)
                        if name == REFERENCE
                        else paired_ms(fn, ref, x, args.runs)
                    )
                    per_round.setdefault(name, {}).setdefault(t, []).append(timed)
        for w in workers.values():
            w.stdin.close()
            w.wait(timeout=60)
    print("[compare] end-to-end edge-infer classify ...", file=sys.stderr, flush=True)
    e2e = end_to_end(args.data, args.e2e_images)
    report = summarise(per_round, thread_counts, accuracy, e2e, args, cores)
    args.json.write_text(json.dumps(report, indent=2))
    print(markdown(report))


def summarise(per_round, thread_counts, accuracy, e2e, args, cores) -> dict:
    rows = {}
    for name, by_t in per_round.items():
        rows[name] = {}
        for t in thread_counts:
            if t not in by_t:  # a setting that exists at one thread count only
                continue
            ms = np.array([m for m, _ in by_t[t]])
            ratio = np.array([r for _, r in by_t[t]])  # paired within each round
            rows[name][str(t)] = {
                "ms_median": float(np.median(ms)),
                "ms_min": float(ms.min()),
                "ms_max": float(ms.max()),
                "ratio_median": float(np.median(ratio)),
                "ratio_min": float(ratio.min()),
                "ratio_max": float(ratio.max()),
            }
    import cv2
    import onnxruntime

    try:
        import openvino

        ov_version = openvino.__version__
    except ImportError:
        ov_version = "not installed"
    return {
        "command": f"python benchmarks/compare.py --images {args.images} --runs {args.runs} "
        f"--rounds {args.rounds} --e2e-images {args.e2e_images}",
        "cpu": f"{cpu_model()} ({cores} usable cores)",
        "platform": platform.platform(),
        "versions": {
            "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__,
            "openvino": ov_version,
            "numpy": np.__version__,
            "opencv": cv2.__version__,
        },
        "model": f"{ONNX_MODEL.name} ({ONNX_MODEL.stat().st_size / 1e6:.2f} MB); TensorFlow "
        "runtimes run the same export model (temperature and OOD head) built from models/run",
        "threads": thread_counts,
        "rows": rows,
        "max_abs_probability_difference_vs_onnxruntime_fp32": accuracy,
        "end_to_end": e2e,
    }


def markdown(report: dict) -> str:
    ts = report["threads"]
    head = "| method | " + " | ".join(f"{t} thread(s), ms (min-max)" for t in ts)
    head += " | " + " | ".join(f"x ORT FP32 @{t} (min-max)" for t in ts) + " |"
    lines = [head, "|" + "---|" * (1 + 2 * len(ts))]
    for name, row in report["rows"].items():
        cells = [
            f"{row[str(t)]['ms_median']:.2f} "
            f"({row[str(t)]['ms_min']:.2f}-{row[str(t)]['ms_max']:.2f})"
            if str(t) in row
            else "-"
            for t in ts
        ]
        ratios = [
            f"{row[str(t)]['ratio_median']:.2f} ({row[str(t)]['ratio_min']:.2f}-"
            f"{row[str(t)]['ratio_max']:.2f})"
            if str(t) in row
            else "-"
            for t in ts
        ]
        lines.append(f"| {name} | " + " | ".join(cells + ratios) + " |")
    return "\n".join(lines)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


if __name__ == "__main__":
    main()
