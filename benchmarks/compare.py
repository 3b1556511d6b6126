"""Same model, same images, same run: Keras eager / predict / tf.function / TFLite vs onnxruntime
FP32 and int8, at 1 thread and at all cores; plus the end-to-end edge command over a folder.

    python benchmarks/compare.py --data ../shared/data/all-pbs --out benchmarks/RESULTS.md

Needs the `train` extra. TensorFlow's thread pools are fixed at start-up, so each TensorFlow
measurement runs in a fresh worker process with its thread count set first.
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

KERAS_MODEL = ROOT / "models" / "run" / "model.keras"
ONNX_MODEL = ROOT / "models" / "all_pbs_cnn.onnx"


def median_ms(fn, x: np.ndarray, runs: int, warmup: int = 10) -> float:
    for i in range(warmup):
        fn(x[i % len(x)][None])
    times = []
    for i in range(runs):
        xi = x[i % len(x)][None]
        t = time.perf_counter()
        fn(xi)
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1000)


def model_spec():
    """The shipped model's own preprocessing (its metadata), so every method sees its input."""
    from edge_infer import Classifier

    return Classifier(ONNX_MODEL, threads=1).meta.preprocess


def tensors(data: Path, n: int) -> np.ndarray:
    from edge_infer.preprocess import load_image, prepare
    from train.dataset import read_manifest, select

    spec = model_spec()
    test = select(read_manifest(), "test")[:n]
    return np.stack([prepare(load_image(data / r.path), spec) for r in test])


def tf_worker(threads: int, data: Path, n: int, runs: int) -> dict:
    """Runs in its own process: every TensorFlow flavour at one thread count."""
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras

    x = tensors(data, n)
    model = keras.models.load_model(KERAS_MODEL, compile=False)
    out = {}
    out["Keras eager model(x)"] = median_ms(lambda b: model(b, training=False), x, runs)
    out["Keras predict"] = median_ms(lambda b: model.predict(b, verbose=0), x, max(20, runs // 5))
    graph = tf.function(lambda b: model(b, training=False), reduce_retracing=True)
    out["TF graph (tf.function)"] = median_ms(lambda b: graph(tf.constant(b)), x, runs)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    interp = tf.lite.Interpreter(model_content=converter.convert(), num_threads=threads)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]["index"]
    outp = interp.get_output_details()[0]["index"]

    def lite(b):
        interp.set_tensor(inp, b)
        interp.invoke()
        return interp.get_tensor(outp)

    out["TFLite (tf.lite.Interpreter)"] = median_ms(lite, x, runs)
    return out


def ort_times(threads: int, x: np.ndarray, runs: int, int8: Path | None) -> dict:
    from edge_infer.model import OnnxModel

    out = {}
    for name, path in (("onnxruntime FP32", ONNX_MODEL), ("onnxruntime int8", int8)):
        if path is None:
            continue
        m = OnnxModel(path, threads=threads)
        out[name] = median_ms(lambda b, m=m: m.run(b), x, runs)
    return out


def end_to_end(data: Path, n_images: int, threads: int) -> dict:
    """`edge-infer classify` over a folder of real images, as a user runs it."""
    files = sorted((data / "Original").rglob("*.jpg"))[:n_images]
    with tempfile.TemporaryDirectory() as tmp:
        for f in files:
            os.symlink(f, Path(tmp) / f"{f.parent.name}-{f.name}")
        t = time.perf_counter()
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "edge_infer.cli",
                "classify",
                tmp,
                "--format",
                "jsonl",
                "--threads",
                str(threads),
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        seconds = time.perf_counter() - t
    assert r.returncode == 0, r.stderr[-2000:]
    return {"images": len(files), "seconds": seconds, "images_per_s": len(files) / seconds}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def versions() -> dict:
    import cv2
    import onnxruntime
    import tensorflow as tf

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
        "opencv": cv2.__version__,
    }


def make_int8(data: Path, workdir: Path) -> Path | None:
    """The int8 variant the exporter builds (it is not shipped: see models/README.md)."""
    from edge_infer.preprocess import load_image, prepare
    from export.quantize import quantize
    from train.dataset import read_manifest, select

    train = select(read_manifest(), "train")[::8][:256]
    spec = model_spec()
    calib = np.stack([prepare(load_image(data / r.path), spec) for r in train])
    out = workdir / "int8.onnx"
    quantize(ONNX_MODEL, out, calib)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "all-pbs")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "RESULTS.md")
    ap.add_argument("--images", type=int, default=100, help="test images cycled through")
    ap.add_argument("--runs", type=int, default=200, help="timed batch-1 runs per method")
    ap.add_argument("--e2e-images", type=int, default=1000)
    ap.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(tf_worker(args.worker, args.data, args.images, args.runs)))
        return
    cores = os.cpu_count() or 1
    thread_counts = sorted({1, cores})
    x = tensors(args.data, args.images)
    table: dict[str, dict[int, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        int8 = make_int8(args.data, Path(tmp))
        for t in thread_counts:
            print(f"[bench] threads={t}: TensorFlow worker ...", file=sys.stderr, flush=True)
            r = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--worker",
                    str(t),
                    "--data",
                    str(args.data),
                    "--images",
                    str(args.images),
                    "--runs",
                    str(args.runs),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            for k, v in json.loads(r.stdout.strip().splitlines()[-1]).items():
                table.setdefault(k, {})[t] = v
            print(f"[bench] threads={t}: onnxruntime ...", file=sys.stderr, flush=True)
            for k, v in ort_times(t, x, args.runs, int8).items():
                table.setdefault(k, {})[t] = v
    print("[bench] end-to-end edge-infer classify ...", file=sys.stderr, flush=True)
    e2e = end_to_end(args.data, args.e2e_images, cores)
    write_report(args.out, table, thread_counts, e2e, args)
    print(args.out.read_text())


def write_report(out: Path, table, thread_counts, e2e, args) -> None:
    ref = table["onnxruntime FP32"]
    head = "| method | " + " | ".join(f"{t} thread(s), ms" for t in thread_counts)
    head += " | " + " | ".join(f"x ORT FP32 @{t}" for t in thread_counts) + " |"
    lines = [
        "# Benchmarks: the same model on the same images, one run",
        "",
        f"Command: `python benchmarks/compare.py --images {args.images} --runs {args.runs} "
        f"--e2e-images {args.e2e_images}`  ",
        f"CPU: {cpu_model()} ({os.cpu_count()} cores), {platform.platform()}  ",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()) + "  ",
        f"Model: `models/all_pbs_cnn.onnx` ({ONNX_MODEL.stat().st_size / 1e6:.2f} MB) and its "
        "Keras source `models/run/model.keras`; batch 1, median of the timed runs after warm-up; "
        "inference only (tensors prepared beforehand). Ratios > 1 mean slower than onnxruntime "
        "FP32 at the same thread count.",
        "",
        head,
        "|" + "---|" * (1 + 2 * len(thread_counts)),
    ]
    for name, row in table.items():
        cells = [f"{row[t]:.2f}" for t in thread_counts]
        ratios = [f"{row[t] / ref[t]:.2f}" for t in thread_counts]
        lines.append(f"| {name} | " + " | ".join(cells + ratios) + " |")
    lines += [
        "",
        f"End to end, `edge-infer classify` over {e2e['images']} real images in a folder "
        f"({os.cpu_count()} threads, new process, decode + preprocess + guards + inference + "
        f"JSON lines): {e2e['seconds']:.2f} s, **{e2e['images_per_s']:.0f} images/s**.",
        "",
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
