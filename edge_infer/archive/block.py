"""The building block for classifying an archive on Ray Data: a callable class for
`Dataset.map_batches`.

    ds = ray.data.read_binary_files(src, include_paths=True)
    out = ds.map_batches(SmearClassifier, batch_format="numpy", compute=ActorPoolStrategy(size=2))

It takes a batch of `{"bytes", "path"}` rows, decodes them with edge_infer's own decoder and its
bomb checks (never PIL: the same pixels as `edge-infer classify`), runs one onnxruntime session
per actor with one intra-op thread per CPU the actor is given, and returns one row per input:
the classify record's flat fields (CSV's columns: probabilities as `p_<class>`), the scale
fields of JSON lines (`magnification`, `tiles` as JSON text), plus `sha256`, `size`,
`model_sha256` and `processed_at`. A bad file is a row with `status` "error" and `error`, never
a failed block. Needs no Ray itself: it works on any such dict of arrays.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ..classifier import DEFAULT_BATCH, Classifier
from ..metadata import IMAGE_SCORE, OOD_SCORE
from ..model import usable_cpus
from ..result import (
    CONFIDENCE,
    MAGNIFICATION,
    PATH,
    PROBABILITY_PREFIX,
    SCHEMA,
    TILES,
    Outcome,
    flat_fields,
    flatten,
)

SHA256 = "sha256"
SIZE = "size"
MODEL_SHA256 = "model_sha256"
PROCESSED_AT = "processed_at"
#: the columns every output row has beyond the classify record's flat fields
ARCHIVE_FIELDS = (MAGNIFICATION, TILES, SHA256, SIZE, MODEL_SHA256, PROCESSED_AT)
#: columns holding numbers (NaN where a row has none); every other column holds text or None
NUMERIC_FIELDS = frozenset({CONFIDENCE, OOD_SCORE, IMAGE_SCORE, SCHEMA, MAGNIFICATION, SIZE})


def assigned_cpus() -> int:
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


def now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class SmearClassifier:
    """One model per actor; `__call__` classifies a batch of `{"bytes", "path"}` rows."""

    def __init__(
        self,
        model: str | Path | None = None,
        threads: int | None = None,
        batch_size: int = DEFAULT_BATCH,
    ) -> None:
        threads = threads or assigned_cpus()
        # one batch at a time per actor: its onnxruntime call gets every CPU of the actor, and
        # with one CPU nothing decodes ahead (it would only take the CPU from the network)
        self.clf = Classifier(model, threads=threads, workers=1)
        self.clf.cpus = threads
        self.batch_size = batch_size
        self.model_sha256 = self.clf.model.sha256
        self.fields = (*flat_fields(self.clf.classes), *ARCHIVE_FIELDS)

    def __call__(self, batch: Mapping[str, Sequence[Any]]) -> dict[str, np.ndarray]:
        blobs = [bytes(b) for b in batch["bytes"]]
        paths = [str(p) for p in batch[PATH]]
        return self.columns(self.classify(paths, blobs))

    def classify(
        self, paths: Sequence[str], blobs: Sequence[bytes], digests: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        """One output row per (path, encoded bytes), in order (`digests`: their sha256 if
        already known)."""
        now = now_utc()
        if digests is None:
            digests = [hashlib.sha256(b).hexdigest() for b in blobs]
        outcomes = self.clf.iter_predict(blobs, batch_size=self.batch_size, names=paths)
        rows = []
        for blob, digest, outcome in zip(blobs, digests, outcomes, strict=True):
            row = self.row(outcome, now)
            row.update({SHA256: digest, SIZE: len(blob)})
            rows.append(row)
        return rows

    def row(self, outcome: Outcome, processed_at: str) -> dict[str, Any]:
        return archive_row(outcome, self.model_sha256, processed_at)

    def columns(self, rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
        return columns(rows, self.fields)


def archive_row(outcome: Outcome, model_sha256: str, processed_at: str) -> dict[str, Any]:
    """The flat record of one outcome with the archive's fields (sha256 and size are the
    caller's: it has the bytes)."""
    record = outcome.to_record()
    row = flatten(record)
    tiles = record.get(TILES)
    row.update(
        {
            MAGNIFICATION: record.get(MAGNIFICATION),
            TILES: None if tiles is None else json.dumps(tiles, separators=(",", ":")),
            MODEL_SHA256: model_sha256,
            PROCESSED_AT: processed_at,
        }
    )
    return row


def columns(rows: Sequence[Mapping[str, Any]], fields: Sequence[str]) -> dict[str, np.ndarray]:
    """Rows -> one array per field, the same types in every batch (Arrow needs one schema):
    float64 with NaN for numbers, object (text or None) for the rest."""
    out: dict[str, np.ndarray] = {}
    for f in fields:
        values = [r.get(f) for r in rows]
        if f in NUMERIC_FIELDS or f.startswith(PROBABILITY_PREFIX):
            out[f] = np.array([np.nan if v is None else float(v) for v in values], np.float64)
        else:
            out[f] = np.array(values, dtype=object)
    return out
