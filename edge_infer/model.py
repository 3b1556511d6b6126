"""The onnxruntime session and the model's self-description (ONNX metadata_props, JSON values).

Everything the runtime needs (classes, input, preprocessing, calibration, thresholds, version)
comes from the model file, so a model is usable by any tool that can read ONNX.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from .errors import ModelError
from .guard import ImageStatsGuard
from .preprocess import PreprocessSpec

#: metadata key that marks a model written by `python -m export`
SCHEMA_KEY = "edge_infer.schema"
SCHEMA_VERSION = 1
REQUIRED_KEYS = ("classes", "input", "preprocess", "model_version", "uncertain_below")
BUNDLED_NAME = "all_pbs_cnn.onnx"


def bundled_model_path() -> Path:
    """The default model shipped inside the package (from models/ in the source tree)."""
    try:
        path = Path(str(resources.files("edge_infer.bundled") / BUNDLED_NAME))
    except ModuleNotFoundError:
        path = Path(__file__).resolve().parent.parent / "models" / BUNDLED_NAME
    return path


def default_threads() -> int:
    """All cores up to 4: a microscope PC has 2-4, and more threads than that stop paying."""
    return max(1, min(os.cpu_count() or 1, 4))


@dataclass(frozen=True)
class ModelInfo:
    """What the model says about itself."""

    path: str
    classes: tuple[str, ...]
    input_name: str
    input_size: int
    spec: PreprocessSpec
    version: str
    uncertain_below: float
    temperature: float
    ood_threshold: float | None
    outputs: tuple[str, ...]
    image_guard: ImageStatsGuard | None = None
    metadata: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def metrics(self) -> dict[str, Any]:
        return self.metadata.get("metrics", {})


def parse_metadata(raw: dict[str, str], path: str) -> dict[str, Any]:
    if SCHEMA_KEY not in raw:
        raise ModelError(path, "no edge_infer metadata (not a model written by `python -m export`)")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            raise ModelError(path, f"metadata '{key}' is not valid JSON") from None
    missing = [k for k in REQUIRED_KEYS if k not in out]
    if missing:
        raise ModelError(path, f"metadata lacks {', '.join(missing)}")
    if int(out[SCHEMA_KEY]) > SCHEMA_VERSION:
        raise ModelError(path, f"metadata schema {out[SCHEMA_KEY]} is newer than this runtime's")
    return out


def open_session(
    path: str | Path | None = None, threads: int | None = None
) -> tuple[ort.InferenceSession, ModelInfo]:
    """An onnxruntime CPU session (spinning off, so idle cores stay idle) and the model info."""
    path = Path(path) if path is not None else bundled_model_path()
    name = str(path)
    if not path.is_file():
        raise ModelError(name, "model file not found" if not path.exists() else "not a file")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or default_threads()
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    try:
        session = ort.InferenceSession(name, opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises several private exception types
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(name, f"not a loadable ONNX model ({reason[:200]})") from None
    meta = parse_metadata(session.get_modelmeta().custom_metadata_map, name)
    try:
        spec = PreprocessSpec.from_json(meta["preprocess"])
        inp = meta["input"]
        info = ModelInfo(
            path=name,
            classes=tuple(meta["classes"]),
            input_name=inp["name"],
            input_size=int(spec.input_size),
            spec=spec,
            version=str(meta["model_version"]),
            uncertain_below=float(meta["uncertain_below"]),
            temperature=float(meta.get("temperature", 1.0)),
            ood_threshold=None
            if meta.get("ood", {}).get("threshold") is None
            else float(meta["ood"]["threshold"]),
            outputs=tuple(o.name for o in session.get_outputs()),
            image_guard=ImageStatsGuard.from_json(meta["ood"]["image_stats"])
            if meta.get("ood", {}).get("image_stats")
            else None,
            metadata=meta,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(name, f"malformed edge_infer metadata ({exc})") from None
    if info.input_name not in {i.name for i in session.get_inputs()}:
        raise ModelError(name, f"metadata names input '{info.input_name}', the graph has another")
    if "probabilities" not in info.outputs:
        raise ModelError(name, "the graph has no 'probabilities' output")
    return session, info


def run(session: ort.InferenceSession, info: ModelInfo, batch: np.ndarray) -> dict[str, np.ndarray]:
    """One forward pass over an NxHxWx3 float32 batch; outputs by name."""
    values = session.run(None, {info.input_name: np.ascontiguousarray(batch, np.float32)})
    return dict(zip(info.outputs, values, strict=True))
