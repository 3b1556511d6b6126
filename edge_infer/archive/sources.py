"""What an archive run reads: folders (walked to the bottom), globs, list files (one path or
URI per line) and s3:// URIs (a prefix, an object, or a glob), as absolute paths and URIs so
the same run from another folder, or on another node, names the same files."""

from __future__ import annotations

import fnmatch
import glob
import os
from collections.abc import Iterable
from pathlib import Path

import pyarrow.fs as pafs

from ..image.formats import IMAGE_SUFFIXES
from ..io.inputs import Inputs, expand_paths, is_hidden_or_temporary
from .storage import filesystem, is_remote

GLOB_CHARS = "*?["


def _is_image_name(name: str) -> bool:
    p = Path(name)
    return p.suffix.lower() in IMAGE_SUFFIXES and not is_hidden_or_temporary(p)


def _remote(uri: str, out: Inputs) -> None:
    fs, path = filesystem(uri)
    scheme = uri.split("://", 1)[0] + "://"
    cut = min((path.find(c) for c in GLOB_CHARS if c in path), default=-1)
    pattern = path if cut >= 0 else None
    base = path[: max(path.rfind("/", 0, cut), 0)] if cut >= 0 else path
    try:
        info = fs.get_file_info(base)
        if info.type == pafs.FileType.File and pattern is None:
            out.files.append(uri)
            return
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    except OSError as exc:
        out.unlisted.append((uri, f"cannot list ({exc})"))
        return
    found = sorted(
        i.path
        for i in infos
        if i.type == pafs.FileType.File
        and (fnmatch.fnmatchcase(i.path, pattern) if pattern else _is_image_name(i.path))
    )
    if not found and info.type == pafs.FileType.NotFound:
        out.unlisted.append((uri, "no such prefix or object"))
    out.files += [scheme + p for p in found]


def _list_file(path: Path) -> list[str]:
    """The entries of a list file: one path or URI per line; blank lines and lines starting
    with # skipped; relative paths are relative to the list file's folder."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        entry = line.strip()
        if entry and not entry.startswith("#"):
            out.append(entry if is_remote(entry) else os.path.join(path.parent, entry))
    return out


def list_sources(sources: Iterable[str], lists: bool = True) -> Inputs:
    """Every input of the run once, in a stable order; folders and prefixes that cannot be
    listed, and globs that match nothing, are kept with their reason (they become error
    rows, never a silent gap). A list file's own entries are not read as list files."""
    out = Inputs()
    for src in sources:
        if is_remote(src):
            _remote(src, out)
        elif os.path.isdir(src):
            found = expand_paths([src], recursive=True)
            out.files += [os.path.abspath(f) for f in found.files]
            out.unlisted += found.unlisted
        elif lists and os.path.isfile(src) and Path(src).suffix.lower() not in IMAGE_SUFFIXES:
            try:
                entries = _list_file(Path(src))
            except (OSError, UnicodeDecodeError) as exc:
                out.unlisted.append((src, f"cannot read the list file ({exc})"))
                continue
            sub = list_sources(entries, lists=False)
            out.files += sub.files
            out.unlisted += sub.unlisted
        elif any(c in src for c in GLOB_CHARS) and not os.path.exists(src):
            matched = [p for p in sorted(glob.glob(src, recursive=True)) if os.path.isfile(p)]
            if not matched:
                out.unlisted.append((src, "no files match this pattern"))
            out.files += [os.path.abspath(p) for p in matched]
        else:  # an image file, or a name that is not there: tried, so its error is reported
            out.files.append(os.path.abspath(src))
    seen: set[str] = set()
    out.files = [f for f in out.files if not (f in seen or seen.add(f))]
    return out
