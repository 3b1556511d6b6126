"""The archive command's Ray actor: the building block (block.SmearClassifier) fed with paths
and URIs instead of bytes, so each actor reads its own inputs (a file that vanished or cannot be
read is a row with its error, not a failed read task), and skips the inputs whose content is
already in the output."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow as pa

from ..batching import DEFAULT_BATCH
from ..errors import ImageError, ModelError
from ..image.preprocess import opencv_single_threaded
from ..result import PATH, STATUS, Failure
from .block import SHA256, SmearClassifier, now_utc
from .storage import read_image_bytes
from .store import archive_schema, to_table

#: the input columns: `source` (the path's bytes as the OS spells it, or the URI) and `known`
#: (comma-separated sha256 of the contents this path already has rows for; "" for none)
SOURCE = "source"
KNOWN = "known"
#: the status of a row the driver drops: this content is already in the output
ALREADY_DONE = "already_done"
#: concurrent reads per actor (a remote store answers each read after a round trip)
READ_THREADS = 8


def printable_path(source: str) -> str:
    """The path as output text: bytes that are not UTF-8 (a name from another system) as
    backslash escapes, the same text on every run (a re-run finds its rows by it)."""
    return source.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _read(source: str) -> bytes | ImageError:
    try:
        return read_image_bytes(source)
    except ImageError as exc:
        return exc


class ArchiveWorker(SmearClassifier):
    """One model per actor, checked against the driver's digest: read from `model_path` where
    the worker shares the driver's disk (a local run), else shipped as `model_bytes` (the
    workers of a cluster need no copy of it)."""

    def __init__(
        self,
        model_sha256: str,
        model_path: str | None = None,
        model_bytes: bytes | None = None,
        threads: int | None = None,
        batch_size: int = DEFAULT_BATCH,
    ) -> None:
        if model_bytes is None:
            super().__init__(model_path, threads, batch_size)
        else:
            fd, path = tempfile.mkstemp(prefix="edge-infer-model-", suffix=".onnx")
            with os.fdopen(fd, "wb") as fh:
                fh.write(model_bytes)
            try:
                super().__init__(path, threads, batch_size)
            finally:
                os.unlink(path)  # the session holds the model; the file is not needed again
        if self.model_sha256 != model_sha256:
            raise ModelError(
                str(model_path or "<model bytes>"), "not the driver's model (sha256 differs)"
            )
        if self.clf.model.threads == 1:
            # this actor process has one CPU: OpenCV's own pool would only compete with the
            # other actors for theirs
            opencv_single_threaded()
        self.schema = archive_schema(self.clf.classes)
        self._reader = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="archive-read")

    def __call__(self, batch: Mapping[str, Sequence[Any]]) -> pa.Table:  # type: ignore[override]
        sources = [os.fsdecode(bytes(s)) for s in batch[SOURCE]]
        known = [set(k.split(",")) if k else set() for k in batch[KNOWN]]
        now = now_utc()
        rows: list[dict[str, Any]] = []
        paths: list[str] = []
        blobs: list[bytes] = []
        digests: list[str] = []
        reads = self._reader.map(_read, sources)
        for source, seen, data in zip(sources, known, reads, strict=True):
            name = printable_path(source)
            if isinstance(data, ImageError):
                rows.append(self.row(Failure(name, data.reason), now))
                continue
            digest = hashlib.sha256(data).hexdigest()
            if digest in seen:
                rows.append({PATH: name, STATUS: ALREADY_DONE, SHA256: digest})
                continue
            paths.append(name)
            blobs.append(data)
            digests.append(digest)
        rows += self.classify(paths, blobs, digests)
        # Arrow with the output's schema, not numpy: a column with no value in this batch keeps
        # its type on the way to the driver
        return to_table(self.columns(rows), self.schema)
