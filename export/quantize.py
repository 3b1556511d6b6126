"""Static int8 (QDQ) quantization with a gate measured on real images.

On AVX2 CPUs without VNNI the default S8S8 kernels saturate (agreement with FP32 fell to ~26%
here); `reduce_range=True` (7-bit weights) avoids it. Only the convolutions are quantized: the
logits and the Mahalanobis head stay in float so the calibrated outputs keep their meaning.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from edge_infer import Classifier
from edge_infer.metadata import INPUT_NAME
from edge_infer.model import OnnxModel

MAX_ACCURACY_DROP = 0.003
MAX_RECALL_DROP = 0.01
#: an int8 model that is not clearly faster is not worth its risk
MIN_SPEEDUP = 1.4


class TensorReader(CalibrationDataReader):
    """Feeds prepared train-split tensors, one small batch at a time."""

    def __init__(self, tensors: np.ndarray, input_name: str, batch: int = 16) -> None:
        self.batches = iter([tensors[i : i + batch] for i in range(0, len(tensors), batch)])
        self.input_name = input_name

    def get_next(self):
        b = next(self.batches, None)
        return None if b is None else {self.input_name: b}


def quantize(fp32: Path, out: Path, calibration: np.ndarray) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre),
            str(out),
            TensorReader(calibration, INPUT_NAME),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            reduce_range=True,
            op_types_to_quantize=["Conv"],
            calibrate_method=CalibrationMethod.MinMax,
        )
    # quantization drops metadata_props: carry them over, and mark the variant
    src = onnx.load(str(fp32))
    q = onnx.load(str(out))
    del q.metadata_props[:]
    for p in src.metadata_props:
        entry = q.metadata_props.add()
        entry.key, entry.value = p.key, p.value
        if p.key == "model_version":
            entry.value = p.value[:-1] + '-int8"'
    onnx.save(q, str(out))


def evaluate(model: Path, paths: list[str], labels: np.ndarray) -> dict:
    clf = Classifier(model, threads=1)
    preds = clf.predict_batch(paths)
    pred = np.array([clf.classes.index(p.raw_label) for p in preds])
    recalls = {c: float((pred[labels == i] == i).mean()) for i, c in enumerate(clf.classes)}
    return {
        "pred": pred,
        "accuracy": float((pred == labels).mean()),
        "recall": recalls,
        "ood_flagged": float(np.mean([p.out_of_distribution for p in preds])),
    }


def latency_ms(model: Path, x: np.ndarray, runs: int = 50) -> float:
    """Median single-thread batch-1 latency after warm-up."""
    onnx_model = OnnxModel(model, threads=1)
    for _ in range(10):
        onnx_model.run(x[:1])
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        onnx_model.run(x[:1])
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1000)


def gate(fp32: Path, int8: Path, paths: list[str], labels: np.ndarray, x: np.ndarray) -> dict:
    a, b = evaluate(fp32, paths, labels), evaluate(int8, paths, labels)
    drops = {c: a["recall"][c] - b["recall"][c] for c in a["recall"]}
    report = {
        "images": len(paths),
        "agreement_with_fp32": float((a["pred"] == b["pred"]).mean()),
        "fp32": {
            "accuracy": a["accuracy"],
            "recall": a["recall"],
            "ood_flagged": a["ood_flagged"],
            "size_bytes": fp32.stat().st_size,
            "latency_ms_1thread": latency_ms(fp32, x),
        },
        "int8": {
            "accuracy": b["accuracy"],
            "recall": b["recall"],
            "ood_flagged": b["ood_flagged"],
            "size_bytes": int8.stat().st_size,
            "latency_ms_1thread": latency_ms(int8, x),
        },
        "accuracy_drop": a["accuracy"] - b["accuracy"],
        "max_recall_drop": max(drops.values()),
        "limits": {
            "accuracy_drop": MAX_ACCURACY_DROP,
            "recall_drop": MAX_RECALL_DROP,
            "min_speedup": MIN_SPEEDUP,
        },
    }
    report["speedup"] = report["fp32"]["latency_ms_1thread"] / report["int8"]["latency_ms_1thread"]
    reasons = []
    if report["accuracy_drop"] > MAX_ACCURACY_DROP + 1e-9:
        reasons.append(f"accuracy drops {report['accuracy_drop']:.4f}")
    if report["max_recall_drop"] > MAX_RECALL_DROP + 1e-9:
        reasons.append(f"a class recall drops {report['max_recall_drop']:.4f}")
    if report["speedup"] < MIN_SPEEDUP:
        reasons.append(
            f"int8 is {report['speedup']:.2f}x the FP32 speed (needs {MIN_SPEEDUP}x): "
            "QDQ depthwise convolutions have no fast int8 kernel on this CPU"
        )
    report["passed"] = not reasons
    report["why_not"] = "; ".join(reasons) or None
    return report
