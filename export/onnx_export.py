"""Keras run folder -> self-describing ONNX model.

The calibration temperature and the OOD score are folded into the graph."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import onnx
import tensorflow as tf
from keras import layers, ops

from edge_infer.model import SCHEMA_KEY, SCHEMA_VERSION
from edge_infer.preprocess import PreprocessSpec

OPSET = 17


class MahalanobisScore(layers.Layer):
    """min_c ||(f - mu_c) @ L||^2 with precision = L @ L.T: the guard travels inside the graph
    as two constant tensors, so any ONNX tool computes the same score."""

    def __init__(self, means: np.ndarray, chol: np.ndarray, **kwargs) -> None:
        super().__init__(**kwargs)
        self.means = np.asarray(means, np.float32)
        self.chol = np.asarray(chol, np.float32)

    def call(self, features):
        # centre first, then project: projecting first loses precision to cancellation
        diff = ops.expand_dims(features, 1) - ops.convert_to_tensor(self.means)[None]
        z = ops.matmul(diff, ops.convert_to_tensor(self.chol))
        return ops.min(ops.sum(ops.square(z), axis=-1), axis=-1, keepdims=True)


def build_export_model(run: Path) -> tuple[keras.Model, dict]:
    """The trained model with calibrated probabilities and the OOD score as outputs."""
    metrics = json.loads((run / "metrics.json").read_text())
    model = keras.models.load_model(run / "model.keras", compile=False)
    temperature = float(metrics["calibration"]["temperature"])
    logits = model.get_layer("logits").output
    scaled = layers.Rescaling(1.0 / temperature, name="temperature_scaling")(logits)
    probs = layers.Softmax(name="probabilities")(scaled)
    outputs = {"probabilities": probs}
    stats_file = run / "ood_stats.npz"
    if stats_file.exists():
        stats = np.load(stats_file)
        features = model.get_layer("features").output
        outputs["ood_score"] = MahalanobisScore(stats["means"], stats["chol"], name="ood_score")(
            features
        )
    export_model = keras.Model(model.input, list(outputs.values()), name="all_cnn_export")
    return export_model, metrics


def convert(export_model: keras.Model, input_size: int) -> onnx.ModelProto:
    import tf2onnx

    spec = (tf.TensorSpec((None, input_size, input_size, 3), tf.float32, name="image"),)
    proto, _ = tf2onnx.convert.from_keras(export_model, input_signature=spec, opset=OPSET)
    names = ["probabilities", "ood_score"][: len(proto.graph.output)]
    rename_outputs(proto, names)
    return proto


def rename_outputs(proto: onnx.ModelProto, names: list[str]) -> None:
    """tf2onnx names outputs after Keras tensors; give them stable names."""
    for out, new in zip(proto.graph.output, names, strict=True):
        old = out.name
        if old == new:
            continue
        for node in proto.graph.node:
            node.output[:] = [new if o == old else o for o in node.output]
            node.input[:] = [new if i == old else i for i in node.input]
        out.name = new


def metadata_for(
    metrics: dict, version: str, uncertain_below: float, image_guard: dict | None = None
) -> dict[str, object]:
    """Everything the runtime (or any ONNX tool) needs, as JSON-serialisable values."""
    # the complete spec (defaults filled in), so the model states every parameter it relies on
    spec = json.loads(PreprocessSpec.from_json(metrics["preprocess"]).to_json())
    size = int(spec["input_size"])
    test = metrics["test"]
    return {
        SCHEMA_KEY: SCHEMA_VERSION,
        "classes": metrics["classes"],
        "input": {
            "name": "image",
            "shape": [None, size, size, 3],
            "layout": "NHWC",
            "dtype": "float32",
            "channel_order": spec["channel_order"],
            "value_range": [0.0, 1.0],
        },
        "outputs": {
            "probabilities": "calibrated class probabilities (temperature folded into the graph)",
            "ood_score": "min squared Mahalanobis distance of pooled features to class means",
        },
        "preprocess": spec,
        "temperature": metrics["calibration"]["temperature"],
        "temperature_in_graph": True,
        "uncertain_below": uncertain_below,
        "ood": {
            "threshold": metrics["ood"]["threshold"],
            "rule": metrics["ood"]["threshold_rule"],
            "score": metrics["ood"]["score"],
            "image_stats": image_guard,
        },
        "model_version": version,
        "metrics": {
            "split": metrics["split_column"],
            "test_n": test["n"],
            "test_accuracy": test["accuracy"],
            "test_macro_f1": test["macro_f1"],
            "malignant_sensitivity": test["malignant_sensitivity"],
            "benign_specificity": test["benign_specificity"],
            "per_class_recall": {k: v["recall"] for k, v in test["per_class"].items()},
            "test_ece_after": metrics["calibration"]["test_ece_after"],
            "parameters": metrics["model"]["parameters"],
        },
        "manifest_sha256": metrics["manifest_sha256"],
        "versions": metrics["versions"],
        "git_commit": metrics.get("git_commit", "unknown"),
        "dataset": "ALL PBS images, Aria et al. 2021, Kaggle DOI 10.34740/KAGGLE/DSV/2175623",
        "intended_use": "screening aid for trained staff; not a diagnosis",
    }


def write_metadata(proto: onnx.ModelProto, meta: dict[str, object]) -> None:
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key = key
        entry.value = json.dumps(value)
    proto.producer_name = "edge_infer export"
    proto.doc_string = "ALL blood smear classifier (Benign/Early/Pre/Pro); see metadata_props"
