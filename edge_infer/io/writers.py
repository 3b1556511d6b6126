"""Result records as a table, JSON lines or CSV, one record at a time (flushed, so a reader of
a pipe or a file sees every finished record). Fields and wording come from edge_infer.result."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from typing import Any, TextIO

from ..result import flat_fields, flatten, table_header, table_line

FORMATS = ("table", "jsonl", "csv", "excel")
#: paths longer than this overflow their column instead of widening every row
MAX_PATH_WIDTH = 120
#: UTF-8 byte-order mark: Excel reads a CSV as UTF-8 only when it starts with one
BOM = "\ufeff"


def printable(text: str) -> str:
    """A name safe to print on one terminal line: control characters (newlines, ANSI escapes)
    and unpaired surrogates (undecodable bytes in a file name) shown as escapes."""
    if text.isprintable():  # none of the characters below is printable: the common case
        return text
    out = []
    for ch in text:
        cp = ord(ch)
        if cp < 0x20 or 0x7F <= cp < 0xA0 or cp in (0x2028, 0x2029) or 0xD800 <= cp < 0xE000:
            out.append(f"\\x{cp:02x}" if cp < 0x100 else f"\\u{cp:04x}")
        else:
            out.append(ch)
    return "".join(out)


def terminal_text(text: str) -> str:
    """Text for a terminal, line by line through `printable`: the one escaping rule of every
    line edge-infer prints (a file name or a model's metadata cannot clear the screen, move
    the cursor or forge a line)."""
    return "\n".join(printable(line) for line in str(text).split("\n"))


def path_width(names: Sequence[str]) -> int:
    """The width of the table's path column for these inputs."""
    return min(MAX_PATH_WIDTH, max((len(printable(n)) for n in names), default=0))


def table_row(rec: dict[str, Any], width: int = 0) -> str:
    """A record as one terminal line, names escaped."""
    return table_line(rec, printable, width)


class RecordWriter:
    def __init__(
        self,
        stream: TextIO,
        fmt: str,
        classes: Sequence[str],
        extra_fields: Sequence[str] = (),
        names: Sequence[str] = (),
    ) -> None:
        """`names`: the inputs to come, when known, so the table's columns line up."""
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}")
        self.stream = stream
        self.fmt = fmt
        self.header_done = False
        self.cases_started = False
        self.fields = flat_fields(classes, extra_fields)
        self.width = path_width(names) if fmt == "table" else 0
        if fmt in ("csv", "excel"):
            self.csv = csv.DictWriter(
                stream, self.fields, extrasaction="raise", lineterminator="\n"
            )

    def write(self, rec: dict[str, Any]) -> None:
        if self.fmt == "jsonl":
            # ensure_ascii: U+2028/U+2029/U+0085 and lone surrogates stay escaped on one line
            self.stream.write(json.dumps(rec, ensure_ascii=True) + "\n")
        elif self.fmt in ("csv", "excel"):
            if not self.header_done:
                if self.fmt == "excel":
                    self.stream.write(BOM)
                self.csv.writeheader()
                self.header_done = True
            self.csv.writerow(flatten(rec))
        else:
            if not self.header_done:
                self.stream.write(table_header(self.width) + "\n")
                self.header_done = True
            self.stream.write(table_row(rec, self.width) + "\n")
        self.stream.flush()

    def write_case(self, rec: dict[str, Any]) -> None:
        """A case record after the image records: a JSON line, a CSV row in the case columns
        (the writer made with `extra_fields=cases.csv_fields(...)`), or a table line."""
        from ..cases import case_line, flat_case

        if self.fmt == "jsonl":
            self.stream.write(json.dumps(rec, ensure_ascii=True) + "\n")
        elif self.fmt in ("csv", "excel"):
            if not self.header_done:
                self.csv.writeheader()
                self.header_done = True
            self.csv.writerow(flat_case(rec))
        else:
            if not self.cases_started:
                self.stream.write("\n")
                self.cases_started = True
            self.stream.write(terminal_text(case_line(rec)) + "\n")
        self.stream.flush()

    def flush(self) -> None:
        """The stream is the caller's (stdout, a results file): flushed, not closed."""
        self.stream.flush()
