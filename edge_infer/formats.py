"""Result records as a table, JSON lines or CSV, one record at a time (flushed, so a reader of
a pipe or a file sees every finished record)."""

from __future__ import annotations

import csv
import json
from typing import Any, TextIO

CSV_FIELDS = (
    "path",
    "label",
    "confidence",
    "status",
    "uncertain",
    "out_of_distribution",
    "ood_score",
    "p_Benign",
    "p_Early",
    "p_Pre",
    "p_Pro",
    "message",
    "model",
    "error",
)


def flat_record(rec: dict[str, Any]) -> dict[str, Any]:
    """One CSV row: probabilities spread into p_<class> columns."""
    row = {k: v for k, v in rec.items() if k != "probabilities"}
    for cls, p in (rec.get("probabilities") or {}).items():
        row[f"p_{cls}"] = p
    return row


class RecordWriter:
    def __init__(self, stream: TextIO, fmt: str, extra_fields: tuple[str, ...] = ()) -> None:
        self.stream = stream
        self.fmt = fmt
        self.header_done = False
        self.fields = CSV_FIELDS + extra_fields
        if fmt == "csv":
            self.csv = csv.DictWriter(
                stream, self.fields, extrasaction="ignore", lineterminator="\n"
            )

    def write(self, rec: dict[str, Any]) -> None:
        if self.fmt == "jsonl":
            self.stream.write(json.dumps(rec, ensure_ascii=False) + "\n")
        elif self.fmt == "csv":
            if not self.header_done:
                self.csv.writeheader()
                self.header_done = True
            self.csv.writerow(flat_record(rec))
        else:
            self.stream.write(table_row(rec) + "\n")
        self.stream.flush()

    def close(self) -> None:
        self.stream.flush()


def table_row(rec: dict[str, Any]) -> str:
    """`path  LABEL  0.987  status/message`, readable in a terminal."""
    if "error" in rec:
        return f"{rec['path']}  ERROR  {rec['error']}"
    note = {
        "ok": "",
        "uncertain": "UNCERTAIN: review by a specialist",
        "out_of_distribution": "NOT RECOGNISED: " + rec.get("message", ""),
    }.get(rec["status"], "")
    return f"{rec['path']}  {rec['label']:<6}  {rec['confidence']:.3f}  {note}".rstrip()
