"""File operations the watcher relies on for "nothing is lost": bounded reads, durable moves,
exclusive locks. Each survives a crash at any instruction: a file is either where it was or
complete at its destination, never a partial file under the recorded name."""

from __future__ import annotations

import errno
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


#: the reason given for a symbolic link where the watcher expects a file of its own
SYMLINK = "is a symbolic link: not followed (what it points to is not this folder's)"


def read_limited(path: str | Path, max_bytes: int, follow_symlinks: bool = True) -> bytes:
    """The whole file, refusing non-regular files and files over `max_bytes`
    before reading them (a FIFO would block, /dev/zero would never end, a 3 GB file would cost
    3 GB). OSError is left to the caller: it may be transient. `follow_symlinks=False`
    refuses a link (the watcher: a link in its inbox may point at any file of the PC)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    if not follow_symlinks:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow_symlinks:
            raise ReadRefused(SYMLINK) from None
        raise
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
    if os.path.islink(src):
        _move_link(src, dest)
        return
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
        if exc.errno != errno.EXDEV:  # another filesystem; anything else is a real failure
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


def _move_link(src: Path, dest: Path) -> None:
    """A symbolic link is moved as a link (recreated across filesystems), never as a copy of
    what it points to."""
    try:
        os.rename(src, dest)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        tmp = dest.with_name(f".{dest.name}.edge-infer-part")
        os.symlink(os.readlink(src), tmp)
        os.replace(tmp, dest)
        src.unlink()
    fsync_dir(dest.parent)


def write_atomically(path: Path, text: str) -> None:
    """Write beside the target, then rename over it: a failure leaves the earlier file whole
    (never a 0-byte report). Names that are not valid UTF-8 are written as escapes."""
    write_bytes_atomically(path, text.encode("utf-8", "backslashreplace"))


def write_bytes_atomically(path: Path, data: bytes) -> None:
    """`data` on disk (fsynced) under a hidden name beside `path`, then renamed to it: readers
    see the whole file or none of it, even if the process dies mid-write."""
    tmp = path.with_name(f".{path.name}.edge-infer-part")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class LockHeld(Exception):
    """Another process holds the lock."""


class LockUnsafe(Exception):
    """The lock's name is a link or a file with other names: not used (the message says)."""


def lock_exclusive(path: Path) -> IO[bytes]:
    """An exclusive, non-blocking lock on `path` (created if missing), held while the returned
    file stays open; the OS releases it when the process dies, even after kill -9.

    The name is never followed if it is a link, and the file is truncated (to write the
    holder's PID) only once it is locked and known to be a regular file with one name: a link
    planted at a lock's name could otherwise truncate whatever it points to."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags | getattr(os, "O_BINARY", 0), 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise LockUnsafe(f"{path} is a symbolic link; refusing to use it as a lock") from None
        raise
    fh = os.fdopen(fd, "r+b", buffering=0)
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
    st = os.fstat(fh.fileno())
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        fh.close()
        raise LockUnsafe(f"{path} is not a plain lock file (a device, or a file with other names)")
    try:  # who holds it, for people; optional (the disk may be full)
        fh.truncate(0)
        fh.write(f"{os.getpid()}\n".encode())
    except OSError:
        pass
    return fh


def private_dir(environ: dict[str, str] | None = None) -> Path:
    """A folder for this user's lock files that no other user can write to: $EDGE_INFER_LOCK_DIR,
    systemd's $RUNTIME_DIRECTORY, $XDG_RUNTIME_DIR/edge-infer, else ~/.cache/edge-infer (never
    the shared /tmp, where another user could hold or plant a lock's name). Created mode 700;
    refused if it is a link or others may write to it."""
    env = os.environ if environ is None else environ
    if env.get("EDGE_INFER_LOCK_DIR"):
        folder = Path(env["EDGE_INFER_LOCK_DIR"])
    elif env.get("RUNTIME_DIRECTORY"):
        folder = Path(env["RUNTIME_DIRECTORY"].split(":")[0])
    elif env.get("XDG_RUNTIME_DIR"):
        folder = Path(env["XDG_RUNTIME_DIR"]) / "edge-infer"
    elif os.name == "nt" and env.get("LOCALAPPDATA"):
        folder = Path(env["LOCALAPPDATA"]) / "edge-infer"
    else:
        folder = Path.home() / ".cache" / "edge-infer"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = os.lstat(folder)
    if os.name != "nt":
        if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
            raise PermissionError(f"lock folder {folder} is a link or not a folder")
        if st.st_uid != os.geteuid() or st.st_mode & 0o022:
            raise PermissionError(
                f"lock folder {folder} is not this user's own (owner or others may write)"
            )
    return folder
