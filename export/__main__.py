"""`python -m export --run RUN --out models/NAME.onnx`: convert, describe, check parity, quantize.

Exits non-zero when the parity gate fails (the parity report is written either way). The int8
variant is written only when it passes its accuracy gate; the reason is recorded when it does not.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from train.dataset import MANIFEST, default_data_root

    ap = argparse.ArgumentParser(prog="python -m export", description=__doc__)
    ap.add_argument("--run", type=Path, required=True, help="training run folder")
    ap.add_argument("--out", type=Path, required=True, help="FP32 ONNX file to write")
    ap.add_argument("--data", type=Path, default=default_data_root())
    ap.add_argument("--manifest", type=Path, default=MANIFEST)
    ap.add_argument("--version", default=None, help="model version string (default: run name)")
    ap.add_argument(
        "--uncertain-below", type=float, default=None, help="default: the run's threshold"
    )
    ap.add_argument("--parity-images", type=int, default=0, help="0 = the whole test split")
    ap.add_argument("--min-parity-images", type=int, default=300)
    ap.add_argument("--int8", action="store_true", help="also build and gate an int8 variant")
    ap.add_argument(
        "--also-run",
        type=Path,
        action="append",
        default=[],
        help="a run of the same recipe on another split (e.g. pseudo-patient groups) whose "
        "test figures travel in the metadata beside this run's",
    )
    ap.add_argument("--calibration-images", type=int, default=256)
    return ap.parse_args(argv)


def step(msg: str) -> None:
    print(f"[export] {msg}", file=sys.stderr, flush=True)


def convert_and_describe(args: argparse.Namespace):
    """The Keras run -> ONNX with its metadata, checked and saved. Returns (Keras export model,
    run metrics, metadata)."""
    import onnx

    from train.guard import GUARDS_FILE
    from train.scale_fit import read_scale_rule
    from train.site_reference import read_site_reference

    from .onnx_export import build_export_model, convert, metadata_for, write_metadata

    step(f"loading {args.run}")
    metrics = json.loads((args.run / "metrics.json").read_text())
    threshold = args.uncertain_below or metrics["uncertainty"]["threshold"]
    export_model, metrics = build_export_model(args.run, threshold)
    version = args.version or args.run.name
    guard_file = args.run / GUARDS_FILE
    if not guard_file.exists():  # the graph's decision needs the guards: no model without them
        raise SystemExit(f"{guard_file} not found: fit the guards first (python -m train.guard)")
    guards = json.loads(guard_file.read_text())
    others = [json.loads((r / "metrics.json").read_text()) for r in args.also_run]
    meta = metadata_for(
        metrics,
        version,
        threshold,
        guards,
        others,
        read_site_reference(args.run),
        read_scale_rule(args.run),
    )
    step("converting with tf2onnx")
    proto = convert(export_model, meta.preprocess.input_size)
    write_metadata(proto, meta)
    onnx.checker.check_model(proto, full_check=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(args.out))
    step(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB), onnx.checker passed")
    return export_model, metrics, meta


def parity_gate(args: argparse.Namespace, export_model, meta, test_paths: list[Path]) -> bool:
    from . import parity

    step(f"parity gate on {len(test_paths)} test images")
    report = parity.check(
        export_model,
        args.out,
        test_paths,
        meta.preprocess,
        meta.guards.feature_threshold,
        args.min_parity_images,
        (meta.guards.image_stats or {}).get("threshold"),
    )
    report_path = args.out.with_suffix(".parity.json")
    report_path.write_text(json.dumps(report, indent=2))
    step(
        f"parity: conversion max diff {report['conversion']['max_abs_diff']:.2e}, "
        f"edge path max diff {report['edge_path']['max_abs_diff']:.2e}, "
        f"agreement {report['edge_path']['argmax_agreement']:.4f} -> "
        f"{'PASS' if report['passed'] else 'FAIL'} ({report_path})"
    )
    return bool(report["passed"])


def int8_gate(args: argparse.Namespace, spec, train_records, test_records, test_paths) -> None:
    from train.dataset import CLASSES
    from train.pipeline import load_prepared

    from .quantize import gate, quantize

    rng = np.random.default_rng(0)
    pick = rng.choice(len(train_records), min(args.calibration_images, len(train_records)), False)
    calib = np.stack([load_prepared(str(args.data / train_records[i].path), spec) for i in pick])
    int8_path = args.out.with_name(args.out.stem + ".int8.onnx")
    step(f"quantizing (QDQ, per-channel, reduce_range) with {len(calib)} train images")
    quantize(args.out, int8_path, calib)
    labels = np.array([CLASSES.index(r.label) for r in test_records])
    step("int8 gate on the test split")
    q = gate(args.out, int8_path, [str(p) for p in test_paths], labels, calib)
    q_path = args.out.with_suffix(".int8.json")
    q["shipped"] = q["passed"]
    if not q["passed"]:
        int8_path.unlink()
    q_path.write_text(json.dumps(q, indent=2))
    step(
        f"int8: agreement {q['agreement_with_fp32']:.4f}, accuracy "
        f"{q['fp32']['accuracy']:.4f} -> {q['int8']['accuracy']:.4f}, latency "
        f"{q['fp32']['latency_ms_1thread']:.2f} -> {q['int8']['latency_ms_1thread']:.2f} ms "
        f"-> {'kept' if q['passed'] else 'NOT shipped: ' + q['why_not']} ({q_path})"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from train.dataset import read_manifest, select

    export_model, metrics, meta = convert_and_describe(args)
    records = read_manifest(args.manifest)
    split_col = metrics["split_column"]
    test = select(records, "test", split_col)
    if args.parity_images:
        test = test[: args.parity_images]
    paths = [args.data / r.path for r in test]
    if not parity_gate(args, export_model, meta, paths):
        return 1
    if args.int8:
        int8_gate(args, meta.preprocess, select(records, "train", split_col), test, paths)
    return 0


if __name__ == "__main__":
    sys.exit(main())
