"""The ONNX model: one onnxruntime session and the model's self-description.

Everything the runtime needs (classes, input, preprocessing, calibration, thresholds, version)
comes from the model file's metadata (edge_infer.metadata), so a model is usable by any tool that
can read ONNX. `OnnxModel` is the only place that talks to onnxruntime.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from .errors import ModelError
from .metadata import (
    GRAPH_OUTPUTS,
    METADATA_DIGEST,
    PROBABILITIES,
    MetadataError,
    ModelMetadata,
    metadata_digest,
)

BUNDLED_NAME = "all_pbs_cnn.onnx"


def bundled_model_path() -> Path:
    """The default model shipped inside the package (edge_infer/bundled/, installed from
    models/), or models/ in a source checkout. A plain path, not importlib.resources: the
    package is installed as files, and the import cost start-up time."""
    path = Path(__file__).resolve().parent / "bundled" / BUNDLED_NAME
    if not path.is_file():
        path = Path(__file__).resolve().parent.parent / "models" / BUNDLED_NAME
    return path


def usable_cpus() -> int:
    """The CPUs this process may run on (the affinity mask, e.g. under taskset or a service
    manager's CPU limit), not all the machine has."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def default_threads() -> int:
    """All usable cores up to 4: a microscope PC has 2-4, and more threads stop paying."""
    return min(usable_cpus(), 4)


def session_options(threads: int | None, spin_during_run: bool = False) -> ort.SessionOptions:
    """CPU options. By default the worker threads never spin, so idle cores stay idle and the
    preprocessing threads get the CPU (spinning cost batch throughput here, 535 -> 456
    images/s). `spin_during_run` (the server: one image at a time, latency first) lets them
    spin inside a run but stop at its end: batch-1 inference at 2 threads 0.82 -> 0.68 ms,
    CPU used while serving 20 requests/s 4% -> 7% (spinning without the stop: 94%)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or default_threads()
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    spin = spin_during_run and opts.intra_op_num_threads > 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    if spin:
        opts.add_session_config_entry("session.force_spinning_stop", "1")
    opts.log_severity_level = 3
    return opts


class OnnxModel:
    """An ONNX model written by `python -m export`, opened and checked against its metadata."""

    def __init__(
        self,
        path: str | Path | None = None,
        threads: int | None = None,
        spin_during_run: bool = False,
    ) -> None:
        path = Path(path) if path is not None else bundled_model_path()
        self.path = str(path)
        if not path.is_file():
            raise ModelError(
                self.path, "model file not found" if not path.exists() else "not a file"
            )
        try:
            self.session = ort.InferenceSession(
                self.path,
                session_options(threads, spin_during_run),
                providers=["CPUExecutionProvider"],
            )
        except Exception as exc:  # onnxruntime raises several private exception types
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(self.path, f"not a loadable ONNX model ({reason[:200]})") from None
        props = self.session.get_modelmeta().custom_metadata_map
        try:
            self.meta = ModelMetadata.from_props(props)
        except MetadataError as exc:
            raise ModelError(self.path, str(exc)) from None
        self.outputs = tuple(o.name for o in self.session.get_outputs())
        self._check_graph()
        self._check_digest(props)

    def _check_graph(self) -> None:
        """Refuse at open, not at the first image, a graph that contradicts its metadata."""
        inputs = {i.name: i for i in self.session.get_inputs()}
        spec = self.meta.input
        if spec.name not in inputs:
            raise ModelError(
                self.path, f"metadata names input '{spec.name}', the graph has another"
            )
        shape = inputs[spec.name].shape
        want = [spec.size, spec.size, 3]
        fixed = shape[1:] if len(shape) == 4 else []
        if len(shape) != 4 or any(
            isinstance(d, int) and d != w for d, w in zip(fixed, want, strict=True)
        ):
            raise ModelError(
                self.path, f"graph input shape {shape} differs from the metadata's {want}"
            )
        if spec.size != self.meta.preprocess.input_size:
            raise ModelError(
                self.path, "input size differs between the input and preprocess metadata"
            )
        missing = [name for name in GRAPH_OUTPUTS if name not in self.outputs]
        if missing:
            raise ModelError(
                self.path,
                f"the graph lacks the output(s) {', '.join(missing)} (re-export the model)",
            )
        n_out = self.session.get_outputs()[self.outputs.index(PROBABILITIES)].shape[-1]
        if isinstance(n_out, int) and n_out != len(self.meta.classes):
            raise ModelError(
                self.path, f"the graph has {n_out} classes, the metadata {len(self.meta.classes)}"
            )

    def _check_digest(self, props: dict[str, str]) -> None:
        """The metadata is the one the graph was exported with (export.onnx_export's
        bind_metadata): an edited file is refused in one line, since the graph's codes and
        classes only mean what that metadata said."""
        if METADATA_DIGEST not in self.outputs:
            raise ModelError(
                self.path, "the graph holds no digest of its metadata (re-export the model)"
            )
        size = self.meta.input.size
        feed = {self.meta.input.name: np.zeros((1, size, size, 3), np.float32)}
        try:
            (digest,) = self.session.run([METADATA_DIGEST], feed)
        except Exception as exc:  # onnxruntime's own exception types
            raise ModelError(self.path, f"cannot read the metadata digest ({exc})") from None
        if np.asarray(digest, np.uint8).tobytes() != metadata_digest(props):
            raise ModelError(
                self.path,
                "its metadata was changed after export (it does not match the digest in the "
                "graph): refused",
            )

    @functools.cached_property
    def sha256(self) -> str:
        """The model file's sha256: what a site check or an archive row names the model by
        (a version string alone can be reused by an edited file). Read when first asked."""
        with open(self.path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()

    @property
    def threads(self) -> int:
        return self.session.get_session_options().intra_op_num_threads

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """One forward pass over an NxHxWx3 float32 batch; outputs by name."""
        values = self.session.run(
            None, {self.meta.input.name: np.ascontiguousarray(batch, np.float32)}
        )
        return dict(zip(self.outputs, values, strict=True))
