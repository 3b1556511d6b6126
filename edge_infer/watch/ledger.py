"""The watcher's results file, which is also its ledger of finished files.

Every record is appended and fsynced one at a time; on start the file is read back (a torn last
line from a crash is cut off), so a restarted watcher skips what is done. Names that are not
valid UTF-8 (an old camera, an SMB share) are kept byte-exact: JSON lines escape them
(ensure_ascii), CSV keeps them with surrogateescape. Records are split on "\\n" only, never on
the other characters `str.splitlines` treats as line ends (U+2028, U+0085, ...).
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..io.fileops import LockHeld, LockUnsafe, lock_exclusive
from ..io.writers import RecordWriter
from ..result import PATH

log = logging.getLogger("edge_infer.watch")

#: fields the watcher adds to every result record
SHA256, SIZE, MTIME_NS, INODE, CLASSIFIED_AT, MOVED_TO = (
    "sha256",
    "size",
    "mtime_ns",
    "inode",
    "classified_at",
    "moved_to",
)
LEDGER_FIELDS = (SHA256, SIZE, MTIME_NS, INODE, CLASSIFIED_AT, MOVED_TO)
ENCODING = {"encoding": "utf-8", "errors": "surrogateescape"}

Key = tuple[str, int, int]  # path, size, mtime_ns


class LedgerError(Exception):
    """The results file cannot be used (a device, a folder...)."""


class LedgerInUse(LedgerError):
    """Another watcher already writes this results file."""


@dataclass(frozen=True)
class Entry:
    sha256: str
    inode: int | None
    moved_to: str | None


class ResultsLedger:
    """The results file (JSON lines, or CSV by suffix), read back as the finished files."""

    def __init__(self, path: Path, classes: Sequence[str]) -> None:
        # the file itself, not a link's name: two names of one file take one lock
        self.path = Path(os.path.realpath(path))
        self.fmt = "csv" if self.path.suffix.lower() == ".csv" else "jsonl"
        self.classes = tuple(classes)
        if self.path.exists() and not self.path.is_file():
            raise LedgerError(f"results file {self.path} is not a regular file")
        try:
            self._lock = lock_exclusive(self.path.with_name(self.path.name + ".lock"))
        except LockHeld:
            raise LedgerInUse(
                f"{self.path} is in use by another watcher (lock {self.path.name}.lock)"
            ) from None
        except LockUnsafe as exc:
            raise LedgerError(str(exc)) from None
        except OSError as exc:  # an unwritable or missing folder
            raise LedgerError(
                f"cannot use results file {self.path} ({exc.strerror or exc})"
            ) from None
        self.entries: dict[Key, Entry] = {}
        # (folder, size, sha256) -> (path, moved_to): the same image under another name or mtime
        self._by_content: dict[tuple[str, int, str], tuple[str, str | None]] = {}
        try:
            self._repair_and_load()
            self._open()
        except OSError as exc:  # a read-only file or folder, a full disk at start
            self._lock.close()
            raise LedgerError(
                f"cannot use results file {self.path} ({exc.strerror or exc})"
            ) from None
        except BaseException:
            self._lock.close()
            raise

    # ------------------------------------------------------------------ reading
    def _repair_and_load(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):  # torn last record: cut it, it will be redone
            keep = data.rfind(b"\n") + 1
            with open(self.path, "r+b") as fh:
                fh.truncate(keep)
                os.fsync(fh.fileno())
            log.warning(
                "results file ended in a partial record; removed it (%d bytes)", len(data) - keep
            )
            data = data[:keep]
        for row in self._rows(data):
            try:
                key = (row[PATH], int(row[SIZE]), int(row[MTIME_NS]))
                inode = row.get(INODE)
                entry = Entry(
                    str(row[SHA256] or ""),
                    int(inode) if inode not in (None, "") else None,
                    row.get(MOVED_TO) or None,
                )
            except (KeyError, TypeError, ValueError):
                continue
            self._remember(key, entry)

    def _rows(self, data: bytes):
        if self.fmt == "csv":
            yield from csv.DictReader(io.StringIO(data.decode(**ENCODING), newline=""))
            return
        for line in data.split(b"\n"):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    log.warning("results file: skipping an unreadable line")

    def records(self):
        """Every record of the results file as it is on disk (for the case summaries)."""
        if self.path.exists():
            yield from self._rows(self.path.read_bytes())

    # ------------------------------------------------------------------ writing
    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(self.path, flags, 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # swapped for a link: never append to another file
                raise OSError(
                    exc.errno, "the results file was replaced by a symbolic link; not followed"
                ) from None
            raise
        self.fh = open(fd, "a", newline="", **ENCODING)  # noqa: SIM115
        self.writer = RecordWriter(self.fh, self.fmt, self.classes, LEDGER_FIELDS)
        self.writer.header_done = self.path.stat().st_size > 0
        if self.fmt == "csv" and self.writer.header_done:
            with open(self.path, newline="", **ENCODING) as fh:
                header = next(csv.reader(fh), [])
            if tuple(header) != tuple(self.writer.fields):
                self.fh.close()
                raise LedgerError(
                    f"{self.path} has other columns (written by another version or model?); "
                    "give a new --results file"
                )
        self._inode = os.fstat(self.fh.fileno()).st_ino

    def _reopen_if_replaced(self) -> None:
        """A results file deleted or rotated under us: write to the file at the path again
        (records written to an unlinked file would be lost)."""
        try:
            same = os.lstat(self.path).st_ino == self._inode
        except FileNotFoundError:
            same = False
        if not same:
            log.warning("results file %s was moved or deleted; starting it again", self.path)
            self.fh.close()
            self._open()

    def append(self, record: dict[str, Any]) -> None:
        """Write one record durably, or raise OSError having written nothing (a partial
        record from a full disk is cut off again)."""
        if self.fh.closed:
            self._open()
        else:
            self._reopen_if_replaced()
        start = self.fh.tell()
        try:
            self.writer.write(record)
            os.fsync(self.fh.fileno())
        except OSError:
            with contextlib.suppress(OSError):
                self.fh.flush()
            with contextlib.suppress(OSError):
                os.truncate(self.path, start)
            with contextlib.suppress(OSError):
                self.fh.close()
            raise
        self._remember(
            (record[PATH], record[SIZE], record[MTIME_NS]),
            Entry(record[SHA256], record.get(INODE), record.get(MOVED_TO)),
        )

    def _remember(self, key: Key, entry: Entry) -> None:
        self.entries[key] = entry
        if entry.sha256:
            content = (os.path.dirname(key[0]), key[1], entry.sha256)
            self._by_content[content] = (key[0], entry.moved_to)

    def same_image(self, path: str, size: int, sha256: str) -> tuple[str, str | None] | None:
        """(path, moved_to) of the last finished file in the same folder with this size and
        content, if any (the file itself after an mtime change, or its name before a
        rename)."""
        return self._by_content.get((os.path.dirname(path), size, sha256))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.fh.close()
        self._lock.close()
