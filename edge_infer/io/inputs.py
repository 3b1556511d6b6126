"""Which files a command works on."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..image.formats import IMAGE_SUFFIXES


def is_hidden_or_temporary(path: Path) -> bool:
    """Dot-files and the names camera/copy software uses while a file is still being written."""
    name = path.name
    return (
        name.startswith(".")
        or name.startswith("~")
        or name.endswith("~")
        or path.suffix.lower() in {".part", ".tmp", ".partial", ".crdownload", ".temp"}
    )


@dataclass
class Inputs:
    """The files to classify, and the folders that could not be listed (with the reason), so
    a folder that cannot be read is reported rather than silently skipped."""

    files: list[str] = field(default_factory=list)
    unlisted: list[tuple[str, str]] = field(default_factory=list)


def _is_dir(p: Path) -> bool:
    try:
        return p.is_dir()
    except (OSError, ValueError):
        return False  # tried as a file: its error is reported there


def _list(folder: Path, recursive: bool, out: Inputs) -> None:
    """Image files under `folder`. Each real folder is walked once (by device and inode), so
    a link back to a parent neither loops nor counts a file twice; each real file is listed
    once, whichever links lead to it; a link to a folder outside `folder` (to /, say) is not
    followed and is reported as not listed."""
    found: list[str] = []
    seen_dirs: set[tuple[int, int]] = set()
    seen_files: set[tuple[int, int]] = set()

    def walk(d: Path) -> None:
        try:
            st = os.stat(d)
            if (st.st_dev, st.st_ino) in seen_dirs:
                return
            seen_dirs.add((st.st_dev, st.st_ino))
            with os.scandir(d) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            out.unlisted.append((str(d), f"cannot list folder ({exc.strerror or exc})"))
            return
        for e in entries:
            if e.name.startswith("."):
                continue
            p = Path(e.path)
            try:
                if e.is_dir():
                    if not recursive:
                        continue
                    if e.is_symlink() and not _inside(os.path.realpath(p), root):
                        out.unlisted.append(
                            (e.path, f"a link to a folder outside {folder}: not followed")
                        )
                        continue
                    walk(p)
                elif p.suffix.lower() in IMAGE_SUFFIXES and not is_hidden_or_temporary(p):
                    # readdir's inode costs no system call; a link's target needs a stat
                    if e.is_symlink():
                        target = e.stat()
                        ident = (target.st_dev, target.st_ino)
                    else:
                        ident = (st.st_dev, e.inode())
                    if ident not in seen_files:
                        seen_files.add(ident)
                        found.append(e.path)
            except OSError:
                found.append(e.path)  # tried, so its error is reported

    root = os.path.realpath(folder)
    walk(folder)
    out.files += sorted(found)


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def expand_paths(paths: Iterable[str | Path], recursive: bool = False) -> Inputs:
    """Files as given (always tried, so a bad one is reported), plus the image files inside
    folders (by extension, hidden and temporary names skipped), in a stable order."""
    out = Inputs()
    for p in map(Path, paths):
        if _is_dir(p):
            _list(p, recursive, out)
        else:
            out.files.append(str(p))
    return out
