"""The building block for classifying an archive on Ray Data (issue 25): a callable class for
`Dataset.map_batches`.

    ds = ray.data.read_binary_files(src, include_paths=True)
    out = ds.map_batches(SmearClassifier, batch_format="numpy", compute=ActorPoolStrategy(size=2))

It takes a batch of `{"bytes", "path"}` rows, decodes them with edge_infer's own decoder and its
bomb checks (never PIL: the same pixels as `edge-infer classify`), runs one onnxruntime session
per actor with one intra-op thread per CPU the actor is given, and returns one row per input:
the classify record's flat fields (CSV's columns: probabilities as `p_<class>`) plus `sha256`,
`size`, `model_sha256` and `processed_at`. A bad file is a row with `status` "error" and
`error`, never a failed block. Needs no Ray itself: it works on any such dict of arrays.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .classifier import DEFAULT_BATCH, Classifier
from .metadata import IMAGE_SCORE, OOD_SCORE
from .model import usable_cpus
from .result import CONFIDENCE, PATH, SCHEMA, flat_fields, flatten

#: the columns every output row has beyond the classify record's flat fields
ARCHIVE_FIELDS = ("sha256", "size", "model_sha256", "processed_at")
#: columns holding numbers (NaN where a row has none); every other column holds text or None
NUMERIC_FIELDS = frozenset({CONFIDENCE, OOD_SCORE, IMAGE_SCORE, SCHEMA, "size"})


def _assigned_cpus() -> int:
    """The CPUs Ray gave this actor (one onnxruntime thread each); outside Ray, the usable
    CPUs of this process."""
    try:
        import ray

        if ray.is_initialized():
            cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
            if cpus:
                return max(1, int(cpus))
    except ImportError:
        pass
    return usable_cpus()


class SmearClassifier:
    """One model per actor; `__call__` classifies a batch of `{"bytes", "path"}` rows."""

    def __init__(self, model: str | Path | None = None, threads: int | None = None) -> None:
        threads = threads or _assigned_cpus()
        # one batch at a time per actor: its onnxruntime call gets every CPU of the actor
        self.clf = Classifier(model, threads=threads, workers=1)
        self.model_sha256 = self.clf.model.sha256
        self.fields = (*flat_fields(self.clf.classes), *ARCHIVE_FIELDS)

    def __call__(self, batch: Mapping[str, Sequence[Any]]) -> dict[str, np.ndarray]:
        blobs = [bytes(b) for b in batch["bytes"]]
        paths = [str(p) for p in batch[PATH]]
        now = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        rows = []
        outcomes = self.clf.iter_predict(blobs, batch_size=DEFAULT_BATCH, names=paths)
        for blob, outcome in zip(blobs, outcomes, strict=True):
            row = flatten(outcome.to_record())
            row.update(
                sha256=hashlib.sha256(blob).hexdigest(),
                size=len(blob),
                model_sha256=self.model_sha256,
                processed_at=now,
            )
            rows.append(row)
        return self.columns(rows)

    def columns(self, rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
        """Rows -> one array per field, the same types in every batch (Arrow needs one schema):
        float64 with NaN for numbers, object (text or None) for the rest."""
        out: dict[str, np.ndarray] = {}
        for f in self.fields:
            values = [r.get(f) for r in rows]
            if f in NUMERIC_FIELDS or f.startswith("p_"):
                out[f] = np.array([np.nan if v is None else float(v) for v in values], np.float64)
            else:
                out[f] = np.array(values, dtype=object)
        return out
