"""The archive command's parts that need no model and no Ray (but pyarrow, the ray extra: so not in
tests/unit, which also runs on the bare runtime): what a run lists, and the
output store (types, nulls, what counts as done, one run per local output)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import require_extra

pa = require_extra("pyarrow", "ray")

from edge_infer.archive.block import columns  # noqa: E402
from edge_infer.archive.sources import list_sources  # noqa: E402
from edge_infer.archive.store import ArchiveError, ArchiveStore, archive_schema, to_table  # noqa: E402
from edge_infer.archive.worker import printable_path  # noqa: E402

CLASSES = ("Benign", "Early", "Pre", "Pro")


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_sources_folders_globs_and_list_files(tmp_path: Path) -> None:
    a = touch(tmp_path / "lab" / "2024" / "a.jpg")
    b = touch(tmp_path / "lab" / "b.PNG")
    touch(tmp_path / "lab" / ".hidden.jpg")
    touch(tmp_path / "lab" / "c.jpg.part")
    touch(tmp_path / "lab" / "notes.txt")
    listing = tmp_path / "list.txt"
    listing.write_text("# inputs\n\nlab/b.PNG\n/no/such.jpg\nlab/*.nothing\n")
    got = list_sources(
        [str(tmp_path / "lab"), str(listing), str(tmp_path / "lab" / "**" / "*.jpg")]
    )
    # the folder walked to the bottom (hidden, partial and non-image names skipped), each file
    # once however many sources name it, a missing file kept (so it gets its error row)
    assert got.files == [str(a), str(b), "/no/such.jpg"]
    assert got.unlisted == [(str(tmp_path / "lab" / "*.nothing"), "no files match this pattern")]
    assert all(os.path.isabs(f) for f in got.files)


def test_a_list_file_is_not_read_as_a_list_of_lists(tmp_path: Path) -> None:
    inner = tmp_path / "inner.txt"
    inner.write_text("x.jpg\n")
    outer = tmp_path / "outer.txt"
    outer.write_text("inner.txt\n")
    assert list_sources([str(outer)]).files == [str(inner)]  # tried as a file: an error row


def test_schema_types_and_nulls() -> None:
    schema = archive_schema(CLASSES)
    assert "model" not in schema.names  # the partition folder's name carries it
    rows = [
        {"path": "a.jpg", "status": "ok", "confidence": 0.9, "size": 10, "record_schema": 2},
        {"path": "b.jpg", "status": "error", "error": "empty file", "record_schema": 2},
    ]
    t = to_table(columns(rows, schema.names), schema)
    assert t.schema == schema
    assert t.column("confidence").to_pylist() == [0.9, None]
    assert t.column("size").to_pylist() == [10, None]
    assert t.column("label").null_count == 2 and t.column("error").to_pylist()[1] == "empty file"
    assert t.column("record_schema").type == pa.int32()


def test_what_is_done_and_another_models_rows(tmp_path: Path) -> None:
    schema = archive_schema(CLASSES)

    def table(path: str, sha: str | None, model_sha: str):
        row = {"path": path, "status": "ok", "sha256": sha, "model_sha256": model_sha}
        return to_table(columns([row], schema.names), schema)

    store = ArchiveStore(str(tmp_path), "v1", "m" * 64, schema)
    store.write(table("a.jpg", "1" * 64, "m" * 64))
    store.write(table("gone.jpg", None, "m" * 64))
    # a file a killed run did not finish, and names readers skip
    (Path(store.path) / ".part-x.parquet.edge-infer-part").write_bytes(b"PAR1")
    (Path(store.path) / "_notes.parquet").write_bytes(b"not parquet")
    assert store.done() == {"a.jpg": {"1" * 64}, "gone.jpg": {None}}
    with pytest.raises(ArchiveError, match="another archive run"):
        ArchiveStore(str(tmp_path), "v1", "m" * 64, schema)  # the first still holds the lock
    store.close()
    again = ArchiveStore(str(tmp_path), "v1", "m" * 64, schema)
    assert not list(Path(again.path).glob(".*edge-infer-part"))  # the stale file removed
    again.write(table("b.jpg", "2" * 64, "o" * 64))
    with pytest.raises(ArchiveError, match="another model file"):
        again.done()
    again.close()


def test_printable_path_escapes_bytes_that_are_not_utf8() -> None:
    name = os.fsdecode(b"/archive/caf\xe9.jpg")
    assert printable_path(name) == "/archive/caf\\xe9.jpg"
    assert printable_path("/archive/café\n.jpg") == "/archive/café\n.jpg"
    assert np.array([printable_path(name)]).dtype.kind == "U"


def test_the_documented_schema_is_the_schema() -> None:
    from tests.conftest import ROOT

    text = (ROOT / "deploy" / "README.md").read_text()
    table = text.split("<!-- archive-schema -->")[1].split("<!-- /archive-schema -->")[0]
    documented: list[str] = []
    for line in table.strip().splitlines()[2:]:
        documented += [c.strip() for c in line.split("|")[1].split(",")]
    assert documented == [*archive_schema(CLASSES).names, "model"]
