"""Parity gate: Keras vs onnxruntime on real test images, on the same tensors and end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_infer import Classifier
from edge_infer.image.spec import PreprocessSpec
from edge_infer.metadata import (
    GRAPH_OUTPUTS,
    IMAGE_SCORE,
    OOD_SCORE,
    PROBABILITIES,
    STATUS_CODE,
)

MAX_ABS_DIFF = 1e-4
MIN_IMAGES = 300
#: the OOD score only matters against its threshold: its difference is measured on that scale
OOD_TOLERANCE = 0.01


def keras_outputs(export_model, paths: list[Path], spec: PreprocessSpec) -> dict[str, np.ndarray]:
    """The training side: tf.data pipeline (train.pipeline) -> Keras, in inference mode."""
    from train.pipeline import make_dataset

    ds = make_dataset(paths, [0] * len(paths), spec, 64, training=False).map(lambda x, y: x)
    outs = export_model.predict(ds, verbose=0)
    outs = outs if isinstance(outs, list) else [outs]
    return {n: np.asarray(o, np.float64) for n, o in zip(GRAPH_OUTPUTS, outs, strict=False)}


def check(
    export_model,
    onnx_path: Path,
    paths: list[Path],
    spec: PreprocessSpec,
    ood_threshold: float | None = None,
    min_images: int = MIN_IMAGES,
    image_threshold: float | None = None,
) -> dict:
    """Both comparisons; `passed` is False when any gate fails."""
    from train.pipeline import load_prepared

    ref = keras_outputs(export_model, paths, spec)
    clf = Classifier(onnx_path)
    # 1. conversion: identical tensors into Keras and onnxruntime
    x = np.stack([load_prepared(str(p), spec) for p in paths])
    ort_out = {}
    for i in range(0, len(x), 64):
        for k, v in clf.model.run(x[i : i + 64]).items():
            ort_out.setdefault(k, []).append(v)
    ort_out = {k: np.concatenate(v).astype(np.float64) for k, v in ort_out.items()}
    conv_diff = float(np.abs(ort_out[PROBABILITIES] - ref[PROBABILITIES]).max())
    conv_agree = float((ort_out[PROBABILITIES].argmax(1) == ref[PROBABILITIES].argmax(1)).mean())
    # 2. the edge path: files on disk -> edge_infer loading/preprocessing -> onnxruntime
    # (an image the scale rule reads as tiles is not one network input: compared are the
    # images read whole, which the scale rule refuses or not; the tiled ones are counted)
    preds = clf.predict_batch([str(p) for p in paths])
    failed = [p.source for p in preds if not p.ok]
    whole = np.array([p.ok and p.tiles is None for p in preds])
    edge = np.array([[p.probabilities[c] for c in clf.classes] for p in preds if p.ok])
    if failed or not whole.any():
        edge_diff, edge_agree = float("inf"), 0.0
    else:
        edge, expected = edge[whole], ref[PROBABILITIES][whole]
        edge_diff = float(np.abs(edge - expected).max())
        edge_agree = float((edge.argmax(1) == expected.argmax(1)).mean())
    report = {
        "images": len(paths),
        "min_images": min_images,
        "max_abs_diff_limit": MAX_ABS_DIFF,
        "conversion": {"max_abs_diff": conv_diff, "argmax_agreement": conv_agree},
        "edge_path": {
            "max_abs_diff": edge_diff,
            "argmax_agreement": edge_agree,
            "failed": failed,
            "read_as_tiles": int((~whole).sum()) if not failed else None,
        },
    }
    ood_ok = True
    if OOD_SCORE in ref and OOD_SCORE in ort_out and ood_threshold:
        a, b = ort_out[OOD_SCORE].ravel(), ref[OOD_SCORE].ravel()
        report[OOD_SCORE] = {
            "max_abs_diff_over_threshold": float(np.abs(a - b).max() / ood_threshold),
            "flag_agreement": float(((a > ood_threshold) == (b > ood_threshold)).mean()),
            "limit_over_threshold": OOD_TOLERANCE,
        }
        ood_ok = report[OOD_SCORE]["max_abs_diff_over_threshold"] <= OOD_TOLERANCE
    # the guards and the decision inside the graph: same scores and the same status
    if STATUS_CODE in ref:
        a, b = ort_out[IMAGE_SCORE].ravel(), ref[IMAGE_SCORE].ravel()
        report["graph_decision"] = {
            # like the feature score, the image score only matters against its threshold
            "image_score_max_abs_diff_over_threshold": float(np.abs(a - b).max() / image_threshold)
            if image_threshold
            else None,
            "image_score_max_rel_diff": float((np.abs(a - b) / np.maximum(np.abs(b), 1e-6)).max()),
            "status_agreement": float((ort_out[STATUS_CODE] == ref[STATUS_CODE]).mean()),
            "limit_over_threshold": OOD_TOLERANCE,
        }
        decision = report["graph_decision"]
        ood_ok = ood_ok and decision["status_agreement"] == 1.0
        if image_threshold:
            ood_ok = ood_ok and decision["image_score_max_abs_diff_over_threshold"] <= OOD_TOLERANCE
    report["passed"] = bool(
        len(paths) >= min_images
        and conv_diff <= MAX_ABS_DIFF
        and edge_diff <= MAX_ABS_DIFF
        and conv_agree == 1.0
        and edge_agree == 1.0
        and ood_ok
    )
    return report
