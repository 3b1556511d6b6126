"""Table, CSV and JSON lines agree on every status; names cannot forge rows."""

from __future__ import annotations

import csv
import io
import json

import pytest

from edge_infer.io.writers import RecordWriter, table_row
from edge_infer.result import Failure, Reason, Status, flat_fields
from tests.unit.test_result import CLASSES, prediction

OUTCOMES = {
    "ok": prediction(Status.OK, None),
    "uncertain": prediction(Status.UNCERTAIN, Reason.LOW_CONFIDENCE),
    "no_cell": prediction(Status.OUT_OF_DISTRIBUTION, Reason.NO_CELL),
    "image": prediction(Status.OUT_OF_DISTRIBUTION, Reason.IMAGE),
    "error": Failure("z.jpg", "truncated JPEG (no end-of-image marker)"),
}


def write(fmt: str, records: list[dict]) -> str:
    buf = io.StringIO()
    w = RecordWriter(buf, fmt, CLASSES)
    for r in records:
        w.write(r)
    return buf.getvalue()


@pytest.mark.parametrize("kind", list(OUTCOMES))
def test_all_formats_agree(kind):
    rec = OUTCOMES[kind].to_record()
    row = next(csv.DictReader(io.StringIO(write("csv", [rec]))))
    line = json.loads(write("jsonl", [rec]))
    table = write("table", [rec]).rstrip("\n")
    assert row["verdict"] == line["verdict"] == rec["verdict"]
    assert row["status"] == line["status"] == rec["status"]
    assert row["headline"] == line["headline"] == rec["headline"]
    assert rec["verdict"] in table.split()
    if rec["status"] != "ok":
        assert table.endswith(rec["headline"])
    if rec["status"] in ("out_of_distribution", "error"):
        assert row["label"] == "" and line["label"] is None
        assert not any(f" {c} " in f" {table} " for c in CLASSES)


def test_csv_columns_come_from_the_record_and_the_classes():
    header = write("csv", [OUTCOMES["ok"].to_record()]).splitlines()[0].split(",")
    assert tuple(header) == flat_fields(CLASSES)
    assert "image_score" in header and all(f"p_{c}" in header for c in CLASSES)


@pytest.mark.parametrize(
    "name", ["a\nb.jpg", "x\x1b[31mred.jpg", "caf\udce9.jpg", "line\u2028sep.jpg"]
)
def test_names_cannot_forge_rows(name):
    rec = {**OUTCOMES["ok"].to_record(), "path": name}
    assert "\n" not in table_row(rec) and "\x1b" not in table_row(rec)
    out = write("jsonl", [rec])
    assert out.count("\n") == 1 and json.loads(out)["path"] == name
    assert "\u2028" not in out


def test_printable_escapes_exactly_the_unsafe_characters():
    """The fast path (str.isprintable) and the escape rule agree on every character of the
    first planes, lone surrogates included: escaped are controls, C1, line/paragraph
    separators and surrogates; everything else is kept as it is."""
    from edge_infer.io.writers import printable

    def unsafe(cp: int) -> bool:
        return cp < 0x20 or 0x7F <= cp < 0xA0 or cp in (0x2028, 0x2029) or 0xD800 <= cp < 0xE000

    for cp in range(0x10000):
        ch = chr(cp)
        out = printable(f"a{ch}b")
        if unsafe(cp):
            assert ch not in out and out.startswith("a\\") and out.endswith("b"), hex(cp)
        else:
            assert out == f"a{ch}b", hex(cp)
