"""An archive run's output: Parquet files under `OUT/model=<version>/`, one row per input, each
file committed whole (a local file is written under a hidden name and renamed; an S3 object
appears only when its upload completes), so the rows on disk are exactly the inputs done, and a
re-run reads them to skip those."""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import IO

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ..errors import EdgeInferError
from ..io.fileops import LockHeld, lock_exclusive, write_bytes_atomically
from ..result import MODEL, PATH, PROBABILITY_PREFIX, SCHEMA, flat_fields
from .block import ARCHIVE_FIELDS, MODEL_SHA256, NUMERIC_FIELDS, SHA256, SIZE
from .storage import filesystem, is_remote, join

#: the partition column: the model's version names the folder (not a column in the files)
PARTITION = MODEL
#: integer columns (null where a row has none); other numeric columns are float64
INTEGER_FIELDS = {SCHEMA: pa.int32(), SIZE: pa.int64()}
LOCK_NAME = "_edge-infer.lock"


class ArchiveError(EdgeInferError):
    """The output cannot be used for this run (another model's rows, a broken file, a lock)."""


def archive_schema(classes: Sequence[str]) -> pa.Schema:
    """The columns of every output file, in order: the classify record's flat fields (without
    `model`, the partition) and the archive's own."""
    fields = []
    for name in (*flat_fields(classes), *ARCHIVE_FIELDS):
        if name == PARTITION:
            continue
        if name in INTEGER_FIELDS:
            kind = INTEGER_FIELDS[name]
        elif name in NUMERIC_FIELDS or name.startswith(PROBABILITY_PREFIX):
            kind = pa.float64()
        else:
            kind = pa.string()
        fields.append(pa.field(name, kind, nullable=name != PATH))
    return pa.schema(fields)


def to_table(columns: Mapping[str, np.ndarray], schema: pa.Schema) -> pa.Table:
    """A batch of block columns (NaN / None for no value) as an Arrow table with real nulls."""
    arrays = []
    for f in schema:
        values = columns[f.name]
        if pa.types.is_floating(f.type) or pa.types.is_integer(f.type):
            v = np.asarray(values, np.float64)
            missing = np.isnan(v)
            v = np.where(missing, 0, v)
            if pa.types.is_integer(f.type):
                v = v.astype(np.int64)
            arrays.append(pa.array(v, f.type, mask=missing))
        else:
            arrays.append(pa.array(list(values), f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


class ArchiveStore:
    """The output folder of one model version: what is done, and committing more."""

    def __init__(self, out: str, version: str, model_sha256: str, schema: pa.Schema) -> None:
        self.dir = join(out, f"{PARTITION}={version}")
        self.fs, self.path = filesystem(self.dir)
        self.remote = is_remote(out)
        self.model_sha256 = model_sha256
        self.schema = schema
        self.run_id = f"{_stamp()}-{uuid.uuid4().hex[:8]}"
        self.files_written = 0
        self._lock: IO[bytes] | None = None
        self.fs.create_dir(self.path, recursive=True)
        if not self.remote:
            try:  # one run per local output at a time (the OS frees it if the run dies)
                self._lock = lock_exclusive(Path(self.path, LOCK_NAME))
            except LockHeld:
                raise ArchiveError(f"{self.dir}: another archive run is writing here") from None
            for stale in Path(self.path).glob(".*.edge-infer-part"):
                stale.unlink(missing_ok=True)  # a file a killed run did not finish

    def committed(self) -> list[str]:
        """The output files (names starting with . or _ are in-progress or ours: skipped, as
        Parquet readers skip them)."""
        infos = self.fs.get_file_info(pafs.FileSelector(self.path, recursive=True))
        return sorted(
            i.path
            for i in infos
            if i.type == pafs.FileType.File
            and i.path.endswith(".parquet")
            and not os.path.basename(i.path).startswith((".", "_"))
        )

    def done(self) -> dict[str, set[str | None]]:
        """The inputs already in the output: path -> the sha256 of each content done (None:
        the file could not be read). Refuses rows of another model file under this version."""
        done: dict[str, set[str | None]] = {}
        for name in self.committed():
            try:
                t = pq.read_table(name, columns=[PATH, SHA256, MODEL_SHA256], filesystem=self.fs)
            except (OSError, pa.ArrowException) as exc:
                raise ArchiveError(f"{name}: cannot read this output file ({exc})") from None
            others = set(t.column(MODEL_SHA256).drop_null().unique().to_pylist())
            if others - {self.model_sha256}:
                raise ArchiveError(
                    f"{self.dir} holds rows of another model file with the same version "
                    f"(sha256 {sorted(others - {self.model_sha256})[0][:12]}...): use another --out"
                )
            paths, shas = t.column(PATH).to_pylist(), t.column(SHA256).to_pylist()
            for path, sha in zip(paths, shas, strict=True):
                done.setdefault(path, set()).add(sha)
        return done

    def write(self, table: pa.Table) -> str:
        """Commit one file of rows; returns its name."""
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        name = f"part-{self.run_id}-{self.files_written:05d}.parquet"
        target = f"{self.path}/{name}"
        if self.remote:  # visible only once the upload completes
            with self.fs.open_output_stream(target) as out:
                out.write(buf.getvalue())
        else:
            write_bytes_atomically(Path(target), buf.getvalue())
        self.files_written += 1
        return join(self.dir, name)

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None
