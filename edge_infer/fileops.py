"""File operations the watcher relies on for "nothing is lost": bounded reads, durable moves,
exclusive locks. Each survives a crash at any instruction: a file is either where it was or
complete at its destination, never a partial file under the recorded name."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import IO

#: the reason given for a directory where an image file was expected
NOT_A_FILE = "is a directory, not an image file"
#: read size once a file has grown past the size it had when opened
GROWN_CHUNK = 1 << 16


class ReadRefused(Exception):
    """The file is not worth retrying (too big, not a regular file)."""


def read_limited(path: str | Path, max_bytes: int) -> bytes:
    """The whole file, refusing non-regular files and files over `max_bytes`
    before reading them (a FIFO would block, /dev/zero would never end, a 3 GB file would cost
    3 GB). OSError is left to the caller: it may be transient."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise ReadRefused(NOT_A_FILE)
        if not stat.S_ISREG(st.st_mode):
            raise ReadRefused("not a regular file")
        if st.st_size > max_bytes:
            raise ReadRefused(f"file is {st.st_size} bytes, over the {max_bytes}-byte limit")
        chunks, total = [], 0
        # what fstat promised plus one byte (so a file that grew is seen), then 64 KB at a time
        while chunk := os.read(fd, st.st_size + 1 - total if total <= st.st_size else GROWN_CHUNK):
            total += len(chunk)
            if total > max_bytes:
                raise ReadRefused(f"file grew over the {max_bytes}-byte limit while read")
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new name in `folder` durable (no-op where directories can't be
    opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def durable_move(src: Path, dest: Path) -> None:
    """Move `src` to `dest` so that a crash leaves either the original or a complete `dest`:
    rename on one filesystem; across filesystems copy to a temporary name beside `dest`,
    fsync, rename, fsync the folder, then remove the original. An existing complete `dest`
    (a crash after the copy) is kept and the original removed."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        if dest.stat().st_size == src.stat().st_size:
            src.unlink()
            return
        raise FileExistsError(f"{dest} exists with other content")
    try:
        os.rename(src, dest)
        fsync_dir(dest.parent)
        return
    except OSError as exc:
        if exc.errno != 18:  # EXDEV: another filesystem; anything else is a real failure
            raise
    import shutil  # here, not at import: it loads the compression modules (start-up time)

    tmp = dest.with_name(f".{dest.name}.edge-infer-part")
    try:
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
            fout.flush()
            os.fsync(fout.fileno())
        shutil.copystat(src, tmp)
        os.replace(tmp, dest)
        fsync_dir(dest.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    src.unlink()
    fsync_dir(src.parent)


class LockHeld(Exception):
    """Another process holds the lock."""


def lock_exclusive(path: Path) -> IO[bytes]:
    """An exclusive, non-blocking lock on `path` (created if missing), held while the returned
    file stays open; the OS releases it when the process dies, even after kill -9."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "a+b", buffering=0)  # noqa: SIM115 - the open file IS the lock
    try:
        if os.name == "nt":
            import msvcrt

            msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        raise LockHeld(str(path)) from None
    try:  # who holds it, for people; optional (the disk may be full)
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n".encode())
        fh.flush()
    except OSError:
        pass
    return fh
