"""Watch a folder the microscope camera writes to; classify each image exactly once.

Polling, not inotify: events do not arrive over SMB/NFS shares and fire before a copy ends. A
file is taken once its size and mtime have been unchanged for `settle` seconds, and only if they
are still unchanged after it was read. The results file is the ledger (edge_infer.watch.ledger): a
restarted watcher skips what is done and redoes what is not, even after `kill -9`.

What a lab's folders do to it, and what it does:
- a copy that stalls longer than `settle` leaves a visibly truncated image: it is retried
  (back-off) until `retry_for` seconds after its last change, then recorded as an error;
- a read error (permissions applied late, a share hiccup) is retried the same way;
- a file bigger than the limit, a FIFO or a device is refused without reading it;
- a second watcher on the same folder or results file refuses to start;
- a full disk or a read-only results file pauses the watcher (nothing moved, nothing lost) and
  it resumes when writing works again; a results file deleted or rotated is started again;
- moves to --done-dir/--failed-dir are durable (edge_infer.io.fileops.durable_move) and a failed
  move is retried to the same recorded name, never to a new one;
- a symbolic link in the folder is recorded as an error and left where it is: never read,
  never moved as a copy of what it points to; the folder itself is checked every scan
  (device + inode) and not followed if it is swapped for a link or another folder;
- a file renamed while it is classified is recorded once, without a move that did not
  happen; the same size and content in the same folder under a name that has gone, or at
  the same path with another mtime (DST on a share, `touch`), is not classified again;
- the folder lock lives in a folder of the user's own (fileops.private_dir), not /tmp.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import signal
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from ..cases import CaseBook
from ..classifier import DEFAULT_BATCH, Classifier
from ..image.decode import MAX_FILE_BYTES, incomplete_reason
from ..image.formats import IMAGE_SUFFIXES, SIGNATURE_BYTES, detect
from ..io.fileops import (
    SYMLINK,
    LockHeld,
    LockUnsafe,
    ReadRefused,
    durable_move,
    lock_exclusive,
    private_dir,
    read_limited,
)
from ..io.inputs import is_hidden_or_temporary
from ..io.writers import printable
from ..result import Failure, log_line
from .ledger import (
    CLASSIFIED_AT,
    INODE,
    MOVED_TO,
    MTIME_NS,
    SHA256,
    SIZE,
    Key,
    LedgerInUse,
    ResultsLedger,
)

log = logging.getLogger("edge_infer.watch")

#: a zero-byte file is usually a copy that has not started writing: wait this long for it
EMPTY_SETTLE_S = 30.0
#: back-off between retries of a file that could not be read or is still incomplete
MAX_BACKOFF_S = 30.0
#: between attempts to move a classified file whose move failed (a full or missing disk)
MOVE_RETRY_S = 5.0


class FolderInUse(Exception):
    """Another watcher already watches this folder."""


def looks_like_image(path: Path) -> bool:
    """By content: the first bytes carry the signature of a format we read."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(SIGNATURE_BYTES)
    except OSError:
        return False
    return detect(head) is not None


def folder_lock_path(folder: Path) -> Path:
    """A lock file per watched folder, outside it (the folder may be a read-only share), in a
    folder of this user's own (fileops.private_dir), not the shared /tmp."""
    digest = hashlib.sha256(str(folder).encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return private_dir() / f"watch-{digest}.lock"


def folder_identity(folder: Path) -> tuple[int, int] | None:
    """(device, inode) of the folder itself, None if it is a link or not a folder."""
    try:
        st = os.lstat(folder)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None


@dataclass
class Tracked:
    """A file seen in the folder and not finished yet."""

    size: int
    mtime_ns: int
    since: float  # monotonic time its size/mtime last changed
    attempts: int = 0
    retry_at: float = 0.0


class Candidate(NamedTuple):
    """A file of the folder that is the watcher's: ready to read now, or not yet."""

    key: Key
    ready: bool


class FileRead(NamedTuple):
    """One file as read for classification: its content, or the final error."""

    key: Key
    data: bytes | None
    digest: str
    error: str
    inode: int | None


@dataclass
class WatchStats:
    classified: int = 0
    failed: int = 0
    started: float = field(default_factory=time.monotonic)


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
        retry_for: float = 120.0,
        once: bool = False,
        cases: CaseBook | None = None,
        case_summary: Path | None = None,
    ) -> None:
        self.folder = Path(os.path.realpath(folder))
        self.clf = classifier
        # the folder watched is this one: a folder swapped for a link or another folder under
        # the same name is not followed (checked every scan)
        self._identity = folder_identity(self.folder)
        try:
            self._folder_lock = lock_exclusive(folder_lock_path(self.folder))
        except LockHeld:
            raise FolderInUse(f"{self.folder} is already watched by another watcher") from None
        except (OSError, LockUnsafe) as exc:
            raise FolderInUse(f"cannot use the watcher's folder lock: {exc}") from None
        try:
            self.ledger = ResultsLedger(Path(results), classifier.classes)
        except LedgerInUse:
            self._folder_lock.close()
            raise
        self.done_dir = Path(os.path.realpath(done_dir)) if done_dir else None
        self.failed_dir = Path(os.path.realpath(failed_dir)) if failed_dir else None
        self.recursive = recursive
        self.interval = interval
        self.settle = settle
        self.tta = tta
        self.batch_size = batch_size
        self.heartbeat = heartbeat
        self.retry_for = retry_for
        self.once = once
        self.stats = WatchStats()
        self.stop_requested = False
        self._tracked: dict[str, Tracked] = {}
        self._ignored: set[Key] = set()
        self._folder_missing = False
        self._write_failing = False
        self._move_retry_at: dict[str, float] = {}
        self._last_beat = time.monotonic()
        # the cases, rebuilt from the results file (so a restart, even after kill -9, gives
        # the summary a fresh computation from the ledger would)
        self.cases = cases
        self.case_summary = case_summary
        if cases is not None:
            for row in self.ledger.records():
                cases.add(row)
            self._write_cases()

    # ---------------------------------------------------------------- scanning
    def _walk(self) -> Iterator[os.DirEntry]:
        stack = [self.folder]
        skip = {p for p in (self.done_dir, self.failed_dir) if p is not None}
        while stack:
            with os.scandir(stack.pop()) as it:
                for entry in it:
                    if entry.name.startswith("."):
                        continue
                    try:
                        if entry.is_symlink():
                            yield entry  # recorded as a link, never followed
                        elif entry.is_dir(follow_symlinks=False):
                            if self.recursive and Path(entry.path) not in skip:
                                stack.append(Path(entry.path))
                        elif entry.is_file(follow_symlinks=False):
                            yield entry
                    except OSError:
                        continue

    def scan(self) -> list[Key] | None:
        """Files ready to classify (settled, not done, image by name or content, not waiting
        for a retry); None if the folder is unreachable."""
        now = time.monotonic()
        try:
            identity = folder_identity(self.folder)
            if self._identity is None:  # the folder did not exist at start
                self._identity = identity
            if identity != self._identity:
                raise OSError(
                    "it is no longer the folder watched at start (replaced, or now a link); "
                    "not followed"
                )
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
            seen = self._candidate(entry, now)
            if seen is not None:
                present.add(entry.path)
                if seen.ready:
                    ready.append(seen.key)
        for gone in set(self._tracked) - present:
            del self._tracked[gone]
        return sorted(ready)

    def _candidate(self, entry: os.DirEntry, now: float) -> Candidate | None:
        """The file as a candidate (ready now, or tracked until it settles or its retry is
        due); None when it is not ours or already done."""
        path = Path(entry.path)
        if is_hidden_or_temporary(path):
            return None
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            return None
        key = (entry.path, st.st_size, st.st_mtime_ns)
        done = self.ledger.entries.get(key)
        if done is not None and (done.inode is None or done.inode == st.st_ino):
            if done.moved_to and now >= self._move_retry_at.get(entry.path, 0.0):
                # recorded, but the move did not happen (crash, full disk): finish it
                self._finish_move(entry.path, Path(done.moved_to))
            return None
        if key in self._ignored:
            return None
        t = self._tracked.get(entry.path)
        if t is None or (t.size, t.mtime_ns) != key[1:]:
            t = Tracked(st.st_size, st.st_mtime_ns, now)
            self._tracked[entry.path] = t
        wait = self.settle if st.st_size or self.once else max(self.settle, EMPTY_SETTLE_S)
        if now - t.since < wait or now < t.retry_at:
            return Candidate(key, ready=False)
        if entry.is_symlink():
            return Candidate(key, ready=True) if path.suffix.lower() in IMAGE_SUFFIXES else None
        if path.suffix.lower() not in IMAGE_SUFFIXES and not looks_like_image(path):
            self._ignored.add(key)  # not an image by name or content: not ours
            del self._tracked[entry.path]
            return None
        return Candidate(key, ready=True)

    def pending(self) -> int:
        return len(self._tracked)

    # ---------------------------------------------------------------- processing
    def _retry_later(self, key: Key, reason: str) -> bool:
        """Schedule another attempt; False when the file has been failing for `retry_for`
        seconds since it last changed (then its error is final)."""
        now = time.monotonic()
        t = self._tracked.setdefault(key[0], Tracked(key[1], key[2], now))
        if now - t.since >= self.retry_for:
            return False
        t.attempts += 1
        t.retry_at = now + min(MAX_BACKOFF_S, max(self.settle, 0.5) * 2 ** (t.attempts - 1))
        log.info("%s: %s; retry %d in %.0f s", key[0], reason, t.attempts, t.retry_at - now)
        return True

    def _read(self, key: Key) -> FileRead | None:
        """The file's content, or a final error; None means "not now" (a retry is scheduled,
        the file changed while read, or it is already done under a new inode)."""
        try:
            data = read_limited(key[0], MAX_FILE_BYTES, follow_symlinks=False)
        except ReadRefused as exc:
            return FileRead(key, None, "", str(exc), None)
        except OSError as exc:
            reason = f"cannot read file ({exc.strerror or exc})"
            return None if self._retry_later(key, reason) else FileRead(key, None, "", reason, None)
        try:
            st = os.lstat(key[0])
            changed = (st.st_size, st.st_mtime_ns) != key[1:]
        except OSError:
            changed = True
        if changed:  # still being written: wait for it to settle again
            self._tracked.pop(key[0], None)
            return None
        digest = hashlib.sha256(data).hexdigest()
        incomplete = incomplete_reason(data)
        if incomplete and self._retry_later(key, incomplete + ", still being written?"):
            return None
        done = self.ledger.entries.get(key)
        same = self._same_image(key, digest)
        if (done is not None and done.sha256 == digest) or same is not None:
            # the same content at the same path (a remount: new inode; a touch or a DST shift
            # on a share: new mtime), or under another name in the same folder whose old name
            # is gone (renamed while it was classified): classified already, not again
            self._tracked.pop(key[0], None)
            self._ignored.add(key)
            if same is not None and same != key[0]:
                log.info(
                    "%s: same image (size and sha256) as %s, classified already; not again",
                    key[0],
                    same,
                )
            return None
        return FileRead(key, data, digest, "", st.st_ino)

    def _same_image(self, key: Key, digest: str) -> str | None:
        """The path of an earlier record of this very file: the same size and content in the
        same folder, at this path or at a name that has gone, and not moved away by us (an
        image moved to --done-dir that comes again is a new delivery, classified again; two
        present files with one content are two files)."""
        earlier = self.ledger.same_image(key[0], key[1], digest)
        if earlier is None:
            return None
        path, moved_to = earlier
        if moved_to is not None and os.path.lexists(moved_to):
            return None
        if path != key[0] and os.path.lexists(path):
            return None
        return path

    def process(self, keys: list[Key]) -> None:
        """Classify in batches; one record per file, appended as each batch finishes."""
        for i in range(0, len(keys), self.batch_size):
            reads = [r for r in map(self._read, keys[i : i + self.batch_size]) if r is not None]
            blobs = [r for r in reads if r.data is not None]
            outcomes = iter(
                self.clf.iter_predict(
                    [r.data for r in blobs],
                    tta=self.tta,
                    batch_size=self.batch_size,
                    names=[r.key[0] for r in blobs],
                )
            )
            for r in reads:
                outcome = next(outcomes) if r.data is not None else Failure(r.key[0], r.error)
                if not self._record(r, outcome):
                    return  # cannot write results: stop this round, nothing moved
            if self.stop_requested:
                return

    def _record(self, read: FileRead, outcome) -> bool:
        key = read.key
        record = outcome.to_record()
        target = self.done_dir if outcome.ok else self.failed_dir
        if read.error == SYMLINK:
            target = None  # a link stays where it is: never a copy of what it points to
        dest = self._destination(target, key[0]) if target else None
        if dest is not None and not self._still_there(read):
            log.warning(
                "%s: renamed or removed while it was classified; recorded without a move",
                key[0],
            )
            dest = None
        record.update(
            {
                SHA256: read.digest,
                SIZE: key[1],
                MTIME_NS: key[2],
                INODE: read.inode,
                CLASSIFIED_AT: dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                MOVED_TO: str(dest) if dest else None,
            }
        )
        try:
            self.ledger.append(record)
        except OSError as exc:
            if not self._write_failing:
                log.error(
                    "cannot write results to %s (%s); pausing until it works again, "
                    "nothing is moved meanwhile",
                    self.ledger.path,
                    exc.strerror or exc,
                )
            self._write_failing = True
            return False
        if self._write_failing:
            log.info("results file writable again; resuming")
            self._write_failing = False
        self._tracked.pop(key[0], None)
        if outcome.ok:
            self.stats.classified += 1
            log.info("%s", log_line(record, printable))
        else:
            self.stats.failed += 1
            log.warning("%s", log_line(record, printable))
        if self.cases is not None:
            case, before, now = self.cases.add(record)
            if now != before:
                log.info("case %s: %s", printable(case), now)
            self._write_cases()
        if dest is not None:
            self._finish_move(key[0], dest)
        return True

    def _write_cases(self) -> None:
        if self.cases is None or self.case_summary is None:
            return
        try:
            self.cases.write(self.case_summary)
        except OSError as exc:  # the results are written; the summary is redone next time
            log.warning("cannot write the case summary %s: %s", self.case_summary, exc)

    @staticmethod
    def _still_there(read: FileRead) -> bool:
        """The file read is still at its path (same inode and size): a move can be recorded."""
        try:
            st = os.lstat(read.key[0])
        except OSError:
            return False
        return (read.inode is None or st.st_ino == read.inode) and st.st_size == read.key[1]

    def _destination(self, folder: Path, src: str) -> Path:
        """folder/name, or folder/stem-1.ext, -2, ... so nothing is overwritten."""
        name = Path(src).name
        dest = folder / name
        stem, suffix = Path(name).stem, Path(name).suffix
        i = 1
        while dest.exists():
            dest = folder / f"{stem}-{i}{suffix}"
            i += 1
        return dest

    def _finish_move(self, src: str, dest: Path) -> None:
        """Move to the recorded destination; on failure it is retried on a later scan, to the
        same name (a full disk never leaves a trail of new names)."""
        try:
            durable_move(Path(src), dest)
            self._move_retry_at.pop(src, None)
        except FileNotFoundError:
            self._move_retry_at.pop(src, None)
            if not dest.exists():
                log.warning("%s: gone before it could be moved to %s; not moved", src, dest)
        except OSError as exc:
            log.warning(
                "could not move %s to %s: %s (retrying in %.0f s)", src, dest, exc, MOVE_RETRY_S
            )
            self._move_retry_at[src] = time.monotonic() + MOVE_RETRY_S

    # ---------------------------------------------------------------- loop
    def beat(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_beat >= self.heartbeat:
            self._last_beat = now
            log.info(
                "alive: %d classified, %d failed, %d waiting, up %.0f s",
                self.stats.classified,
                self.stats.failed,
                self.pending(),
                now - self.stats.started,
            )

    def run(self) -> WatchStats:
        try:
            first = True
            while not self.stop_requested:
                ready = self.scan()
                if ready:
                    if first or len(ready) > self.batch_size:
                        log.info("%d images to classify", len(ready))
                    self.process_with_progress(ready)
                first = False
                self.beat()
                if self.once and ready is not None and not ready and not self.pending():
                    break
                self._sleep(self.interval)
        finally:
            self.close()
            self.beat(force=True)
        return self.stats

    def process_with_progress(self, ready: list[Key]) -> None:
        for i in range(0, len(ready), self.batch_size):
            self.process(ready[i : i + self.batch_size])
            if len(ready) > self.batch_size:
                log.info("progress: %d/%d", min(i + self.batch_size, len(ready)), len(ready))
            if self.stop_requested or self._write_failing:
                return

    def close(self) -> None:
        self.ledger.close()
        self._folder_lock.close()

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
