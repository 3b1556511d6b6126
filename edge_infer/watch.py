"""Watch a folder the microscope camera writes to; classify each image exactly once.

Polling, not inotify: events do not arrive over SMB/NFS shares and fire before a copy ends. A
file is taken once its size and mtime have been unchanged for `settle` seconds. The results file
is its own ledger: every record carries the file's path, size, mtime and sha256, is appended and
fsynced one at a time, and on start the file is read back (a torn last line from a crash is cut
off), so a restarted watcher skips what is done and redoes what is not, even after `kill -9`.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import logging
import os
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .classifier import DEFAULT_BATCH, Classifier
from .formats import RecordWriter
from .inputs import IMAGE_SUFFIXES, is_hidden_or_temporary

log = logging.getLogger("edge_infer.watch")

LEDGER_FIELDS = ("sha256", "size", "mtime_ns", "classified_at", "moved_to")
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM", b"II*\x00", b"MM\x00*", b"GIF8")

Key = tuple[str, int, int]  # path, size, mtime_ns


def looks_like_image(path: Path) -> bool:
    """By content: the first bytes carry an image format's signature."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(12)
    except OSError:
        return False
    return head.startswith(_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


@dataclass
class WatchStats:
    classified: int = 0
    failed: int = 0
    skipped_done: int = 0
    started: float = field(default_factory=time.monotonic)


class ResultsLedger:
    """The results file (JSONL or CSV), read back as the set of finished files."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fmt = "csv" if path.suffix.lower() == ".csv" else "jsonl"
        self.done: set[tuple[str, int, int, str]] = set()
        self.done_paths: set[Key] = set()
        self.moves: dict[Key, str] = {}  # where a finished file was to be moved
        self._repair_and_load()
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fh = open(path, "a", encoding="utf-8", newline="")  # noqa: SIM115 - lives with us
        self.writer = RecordWriter(self.fh, self.fmt, extra_fields=LEDGER_FIELDS)
        self.writer.header_done = path.stat().st_size > 0

    def _repair_and_load(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):  # torn last record: cut it, it will be redone
            keep = data.rfind(b"\n") + 1
            with open(self.path, "r+b") as fh:
                fh.truncate(keep)
            log.warning(
                "results file ended in a partial record; removed it (%d bytes)", len(data) - keep
            )
            data = data[:keep]
        text = data.decode("utf-8", errors="replace")
        rows = (
            csv.DictReader(text.splitlines())
            if self.fmt == "csv"
            else (json.loads(line) for line in text.splitlines() if line.strip())
        )
        for row in rows:
            try:
                key = (row["path"], int(row["size"]), int(row["mtime_ns"]), row["sha256"])
            except (KeyError, TypeError, ValueError):
                continue
            self.done.add(key)
            self.done_paths.add(key[:3])
            if row.get("moved_to"):
                self.moves[key[:3]] = row["moved_to"]

    def append(self, record: dict) -> None:
        self.writer.write(record)
        os.fsync(self.fh.fileno())
        self.done.add((record["path"], record["size"], record["mtime_ns"], record["sha256"]))
        self.done_paths.add((record["path"], record["size"], record["mtime_ns"]))

    def close(self) -> None:
        self.fh.close()


def unique_destination(folder: Path, name: str) -> Path:
    """folder/name, or folder/stem-1.ext, -2, ... so nothing is overwritten."""
    dest = folder / name
    stem, suffix = Path(name).stem, Path(name).suffix
    i = 1
    while dest.exists():
        dest = folder / f"{stem}-{i}{suffix}"
        i += 1
    return dest


class Watcher:
    def __init__(
        self,
        folder: Path,
        classifier: Classifier,
        results: Path,
        done_dir: Path | None = None,
        failed_dir: Path | None = None,
        recursive: bool = False,
        interval: float = 2.0,
        settle: float = 2.0,
        tta: bool = False,
        batch_size: int = DEFAULT_BATCH,
        heartbeat: float = 60.0,
    ) -> None:
        self.folder = Path(folder).absolute()
        self.clf = classifier
        self.ledger = ResultsLedger(Path(results))
        self.done_dir = done_dir
        self.failed_dir = failed_dir
        self.recursive = recursive
        self.interval = interval
        self.settle = settle
        self.tta = tta
        self.batch_size = batch_size
        self.heartbeat = heartbeat
        self.stats = WatchStats()
        self.stop_requested = False
        self._seen: dict[str, tuple[int, int, float]] = {}  # path -> size, mtime_ns, since
        self._ignored: set[Key] = set()
        self._folder_missing = False
        self._last_beat = time.monotonic()

    # ---------------------------------------------------------------- scanning
    def _walk(self) -> Iterator[os.DirEntry]:
        stack = [self.folder]
        skip = {p.absolute() for p in (self.done_dir, self.failed_dir) if p is not None}
        while stack:
            with os.scandir(stack.pop()) as it:
                for entry in it:
                    if entry.name.startswith("."):
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        if self.recursive and Path(entry.path).absolute() not in skip:
                            stack.append(Path(entry.path))
                    elif entry.is_file():
                        yield entry

    def scan(self) -> list[tuple[str, int, int]] | None:
        """Files ready to classify (settled, not done, image content); None if the folder is
        unreachable."""
        now = time.monotonic()
        try:
            entries = list(self._walk())
        except OSError as exc:
            if not self._folder_missing:
                log.warning("folder %s unreachable (%s); waiting for it", self.folder, exc)
            self._folder_missing = True
            return None
        if self._folder_missing:
            log.info("folder %s is back", self.folder)
            self._folder_missing = False
        ready, present = [], set()
        for entry in entries:
            path = Path(entry.path)
            if is_hidden_or_temporary(path):
                continue
            try:
                st = entry.stat()
            except OSError:
                continue
            state = (st.st_size, st.st_mtime_ns)
            present.add(entry.path)
            key = (entry.path, *state)
            if key in self.ledger.done_paths:
                moved_to = self.ledger.moves.get(key)
                if moved_to:  # recorded, but a crash came before the move: finish it
                    self._move(
                        entry.path, unique_destination(Path(moved_to).parent, Path(moved_to).name)
                    )
                continue
            if key in self._ignored:
                continue
            seen = self._seen.get(entry.path)
            if seen is None or seen[:2] != state:
                self._seen[entry.path] = (*state, now)
                if self.settle > 0:
                    continue
                seen = self._seen[entry.path]
            if now - seen[2] < self.settle or st.st_size == 0:
                continue
            if path.suffix.lower() not in IMAGE_SUFFIXES and not looks_like_image(path):
                self._ignored.add(key)  # not an image by name or content: not ours
                self._seen.pop(entry.path, None)
                continue
            ready.append(key)
        for gone in set(self._seen) - present:
            del self._seen[gone]
        return sorted(ready)

    def pending(self) -> int:
        return len(self._seen)

    # ---------------------------------------------------------------- processing
    def _read(self, key: Key) -> tuple[bytes | None, str]:
        try:
            data = Path(key[0]).read_bytes()
        except OSError as exc:
            return None, f"cannot read file ({exc.strerror or exc})"
        return data, hashlib.sha256(data).hexdigest()

    def process(self, keys: list[Key]) -> None:
        """Classify in batches; one record per file, appended as each batch finishes."""
        for i in range(0, len(keys), self.batch_size):
            chunk = keys[i : i + self.batch_size]
            blobs = [self._read(k) for k in chunk]
            images = [b if b is not None else b"" for b, _ in blobs]
            outcomes = self.clf.iter_predict(
                images, tta=self.tta, batch_size=self.batch_size, names=[k[0] for k in chunk]
            )
            for key, (blob, digest), outcome in zip(chunk, blobs, outcomes, strict=True):
                record = outcome.to_record()
                if blob is None:
                    record = {"path": key[0], "error": digest}
                    digest = ""
                record.update(
                    sha256=digest,
                    size=key[1],
                    mtime_ns=key[2],
                    classified_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                )
                target = self.done_dir if outcome.ok else self.failed_dir
                dest = unique_destination(target, Path(key[0]).name) if target else None
                record["moved_to"] = str(dest) if dest else None
                self.ledger.append(record)
                if dest is not None:
                    self._move(key[0], dest)
                if outcome.ok:
                    self.stats.classified += 1
                else:
                    self.stats.failed += 1
                    log.warning("%s: %s", key[0], record.get("error"))
                self._seen.pop(key[0], None)
            if self.stop_requested:
                return

    def _move(self, src: str, dest: Path) -> None:
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(src, dest)
        except OSError as exc:
            log.warning("could not move %s to %s: %s", src, dest, exc)

    # ---------------------------------------------------------------- loop
    def beat(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_beat >= self.heartbeat:
            self._last_beat = now
            log.info(
                "alive: %d classified, %d failed, %d waiting to settle, up %.0f s",
                self.stats.classified,
                self.stats.failed,
                self.pending(),
                now - self.stats.started,
            )

    def run(self, once: bool = False) -> WatchStats:
        first = True
        try:
            while not self.stop_requested:
                ready = self.scan()
                if ready:
                    if first and len(ready) > 1:
                        log.info("backlog: %d images", len(ready))
                    self.process_with_progress(ready, first)
                first = False
                self.beat()
                if once and ready is not None and not ready and not self.pending():
                    break
                self._sleep(self.interval)
        finally:
            self.ledger.close()
            self.beat(force=True)
        return self.stats

    def process_with_progress(self, ready: list[Key], backlog: bool) -> None:
        if not backlog or len(ready) <= self.batch_size:
            self.process(ready)
            return
        for i in range(0, len(ready), self.batch_size):
            self.process(ready[i : i + self.batch_size])
            log.info("backlog: %d/%d done", min(i + self.batch_size, len(ready)), len(ready))
            if self.stop_requested:
                return

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self.stop_requested and time.monotonic() < end:
            time.sleep(min(0.1, seconds))

    def install_signal_handlers(self) -> None:
        def handler(signum, _frame):
            log.info("signal %d: finishing the file in hand, then stopping", signum)
            self.stop_requested = True

        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)
