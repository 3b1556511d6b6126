"""Keras run folder -> self-describing ONNX model.

The calibration temperature and the OOD score are folded into the graph."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import keras
import numpy as np
import onnx
import tensorflow as tf
from keras import layers, ops

from edge_infer.image.spec import PreprocessSpec
from edge_infer.metadata import (
    ALL_PBS_CLASSES,
    CAM,
    GRAPH_OUTPUTS,
    IMAGE_FLOORS,
    INPUT_NAME,
    OOD_SCORE,
    Guards,
    InputInfo,
    ModelMetadata,
    SplitMetrics,
)
from edge_infer.result import decision_codes
from train.guard import OOD_STATS_FILE
from train.model import FEATURES_LAYER, LOGITS_LAYER

from .metadata_binding import bind_metadata

OPSET = 17


class MahalanobisScore(layers.Layer):
    """min_c ||(f - mu_c) @ L||^2 with precision = L @ L.T: the guard travels inside the graph
    as two constant tensors, so any ONNX tool computes the same score."""

    def __init__(self, means: np.ndarray, whiten: np.ndarray, **kwargs) -> None:
        super().__init__(**kwargs)
        self.means = np.asarray(means, np.float32)
        self.whiten = np.asarray(whiten, np.float32)

    def call(self, features):
        # centre first, then project: projecting first loses precision to cancellation
        diff = ops.expand_dims(features, 1) - ops.convert_to_tensor(self.means)[None]
        z = ops.matmul(diff, ops.convert_to_tensor(self.whiten))
        return ops.min(ops.sum(ops.square(z), axis=-1), axis=-1, keepdims=True)


class ClassActivationMap(layers.Layer):
    """Where the model looked: the last feature map (before global average pooling) weighted
    by the dense layer's weights of the predicted class (Zhou et al. 2016), negative evidence
    cut at 0 and scaled so each image's maximum is 1. Exact for a network that ends in pooling
    and one dense layer, as this one does; [N, h, w]."""

    def __init__(self, kernel: np.ndarray, **kwargs) -> None:
        super().__init__(**kwargs)
        self.kernel = np.asarray(kernel, np.float32)  # [channels, classes]

    def call(self, fmap, probs):
        # TensorFlow ops, not keras.ops: Keras' argmax adds bit casts tf2onnx cannot convert
        shape = tf.shape(fmap)
        flat = tf.reshape(fmap, (-1, shape[1] * shape[2], shape[3]))
        per_class = tf.matmul(flat, tf.constant(self.kernel))  # [N, hw, K]
        k = tf.argmax(probs, axis=1)
        picked = tf.reduce_sum(per_class * tf.one_hot(k, self.kernel.shape[1])[:, None, :], -1)
        cam = tf.nn.relu(picked)
        cam = cam / (tf.reduce_max(cam, axis=1, keepdims=True) + 1e-6)
        return tf.reshape(cam, (-1, shape[1], shape[2]))


def class_thresholds(metrics: dict, uncertain_below: float | None = None) -> float | np.ndarray:
    """The uncertain threshold of the run (or the one given), per class where the run chose a
    class its own (metrics' uncertainty.by_class, e.g. a stricter Benign)."""
    base = uncertain_below if uncertain_below is not None else metrics["uncertainty"]["threshold"]
    by_class = metrics["uncertainty"].get("by_class") or {}
    if not by_class:
        return float(base)
    return np.array([by_class.get(c, base) for c in metrics["classes"]], np.float32)


def build_export_model(run: Path, uncertain_below: float | None = None) -> tuple[keras.Model, dict]:
    """The trained model with calibrated probabilities, the feature guard's score and, from
    train.graph_guards, the image guard, the stained-cell check (at the saturation bound of
    RUN/cell_check.json when train.cell_check_sweep chose one) and the decision: every
    output of GRAPH_OUTPUTS, in that order, then the class activation map (CAM). Needs the
    run's guards (python -m train.guard)."""
    from train.cell_check_sweep import read_cell_check, with_cell_check
    from train.graph_guards import GuardHead
    from train.guard import GUARDS_FILE

    metrics = json.loads((run / "metrics.json").read_text())
    metrics = with_cell_check(metrics, read_cell_check(run))  # train.cell_check_sweep's bound
    model = keras.models.load_model(run / "model.keras", compile=False)
    spec = PreprocessSpec.from_json(metrics["preprocess"])
    temperature = float(metrics["calibration"]["temperature"])
    logits = model.get_layer(LOGITS_LAYER).output
    scaled = layers.Rescaling(1.0 / temperature, name="temperature_scaling")(logits)
    probs = layers.Softmax(name="probabilities")(scaled)
    stats = np.load(run / OOD_STATS_FILE)
    features = model.get_layer(FEATURES_LAYER).output
    ood = MahalanobisScore(stats["means"], stats["whiten"], name=OOD_SCORE)(features)
    guards = json.loads((run / GUARDS_FILE).read_text())
    image = guards["image_stats"]
    head = GuardHead(
        spec,
        np.asarray(image["mean"]),
        np.asarray(image["whiten"]),
        np.asarray(image["reference"]),
        image["threshold"],
        guards["feature_threshold"],
        class_thresholds(metrics, uncertain_below),
        floors=image.get(IMAGE_FLOORS),
        name="guards",
    )
    fmap = model.get_layer(FEATURES_LAYER).input
    kernel = model.get_layer(LOGITS_LAYER).get_weights()[0]
    cam = ClassActivationMap(kernel, name=CAM)(fmap, probs)
    outputs = [probs, ood, *head(model.input, probs, ood), cam]
    export_model = keras.Model(model.input, outputs, name="all_cnn_export")
    return export_model, metrics


def convert(export_model: keras.Model, input_size: int) -> onnx.ModelProto:
    import tf2onnx

    spec = (tf.TensorSpec((None, input_size, input_size, 3), tf.float32, name=INPUT_NAME),)
    proto, _ = tf2onnx.convert.from_keras(export_model, input_signature=spec, opset=OPSET)
    rename_outputs(proto, [*GRAPH_OUTPUTS, CAM])
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


def split_metrics(metrics: dict) -> SplitMetrics:
    """The headline test figures of a run's metrics.json."""
    test = metrics["test"]
    return SplitMetrics(
        split=metrics["split_column"],
        n=int(test["n"]),
        accuracy=float(test["accuracy"]),
        macro_f1=float(test["macro_f1"]),
        malignant_sensitivity=float(test["malignant_sensitivity"]),
        benign_specificity=float(test["benign_specificity"]),
        ece=float(metrics["calibration"]["test_ece_after"]),
        per_class_recall={k: float(v["recall"]) for k, v in test["per_class"].items()},
        confusion=tuple(tuple(int(x) for x in row) for row in test.get("confusion_matrix", ())),
    )


def metadata_for(
    metrics: dict,
    version: str,
    uncertain_below: float,
    guards: dict,
    other_runs: list[dict] = (),
    site_reference: dict | None = None,
    scale_rule: dict | None = None,
) -> ModelMetadata:
    """Everything the runtime (or any ONNX tool) needs. The guards are copied unchanged from
    the run's guards.json (train.guard owns the thresholds), the site reference from its
    site_reference.json (train.site_reference), the scale rule's reference and range from its
    scale.json (train.scale_fit) into the preprocessing spec."""
    spec = PreprocessSpec.from_json(metrics["preprocess"])
    if scale_rule:
        spec = dataclasses.replace(
            spec,
            cell_diameter_share=float(scale_rule["cell_diameter_share"]),
            field_scale_min=float(scale_rule["field_scale_min"]),
            field_scale_max=float(scale_rule["field_scale_max"]),
        )
    by_name = {c.name: c for c in ALL_PBS_CLASSES}
    return ModelMetadata(
        classes=tuple(by_name[c] for c in metrics["classes"]),
        input=InputInfo(INPUT_NAME, spec.input_size, spec.channel_order),
        preprocess=spec,
        version=version,
        temperature=float(metrics["calibration"]["temperature"]),
        uncertain_below=float(uncertain_below),
        uncertain_below_by_class={
            c: float(t) for c, t in (metrics["uncertainty"].get("by_class") or {}).items()
        },
        guards=Guards(
            feature_threshold=guards["feature_threshold"],
            feature_rule=guards["feature_rule"],
            # the reference set and whitening are constants of the graph, not metadata
            image_stats={
                k: v
                for k, v in guards["image_stats"].items()
                if k not in ("reference", "whiten", "mean")
            },
            codes=decision_codes(),
        ),
        parameters=int(metrics["model"]["parameters"]),
        metrics=(split_metrics(metrics), *(split_metrics(m) for m in other_runs)),
        site_reference=site_reference,
        provenance={
            "manifest_sha256": metrics["manifest_sha256"],
            "versions": metrics["versions"],
            "git_commit": metrics.get("git_commit", "unknown"),
            "command": portable_command(metrics.get("command", "")),
        },
    )


PROJECT_ROOT = Path(__file__).resolve().parent.parent


def portable_command(command: str) -> str:
    """The training command with absolute paths made relative to the project: the metadata
    travels with the model (and the server shows it), the build machine's folders do not."""
    words = []
    for word in command.split(" "):
        if word.startswith("/"):
            word = os.path.relpath(word, PROJECT_ROOT)
        words.append(word)
    return " ".join(words)


def write_metadata(proto: onnx.ModelProto, meta: ModelMetadata) -> None:
    del proto.metadata_props[:]
    for key, value in meta.to_props().items():
        entry = proto.metadata_props.add()
        entry.key = key
        entry.value = value
    bind_metadata(proto)
    proto.producer_name = "edge_infer export"
    proto.doc_string = "ALL blood smear classifier (Benign/Early/Pre/Pro); see metadata_props"
