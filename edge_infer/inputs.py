"""Which files a command works on."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .imageformat import IMAGE_SUFFIXES


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
    found: list[str] = []

    def walk(d: Path) -> None:
        try:
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
                    if recursive:
                        walk(p)
                elif p.suffix.lower() in IMAGE_SUFFIXES and not is_hidden_or_temporary(p):
                    found.append(e.path)
            except OSError:
                found.append(e.path)  # tried, so its error is reported

    walk(folder)
    out.files += sorted(found)


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
