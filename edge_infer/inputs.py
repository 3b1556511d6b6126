"""Which files a command works on."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})


def is_hidden_or_temporary(path: Path) -> bool:
    """Dot-files and the names camera/copy software uses while a file is still being written."""
    name = path.name
    return (
        name.startswith(".")
        or name.startswith("~")
        or name.endswith("~")
        or path.suffix.lower() in {".part", ".tmp", ".partial", ".crdownload", ".temp"}
    )


def expand_paths(paths: Iterable[str | Path], recursive: bool = False) -> list[str]:
    """Files as given (always tried, so a bad one is reported), plus the image files inside
    folders (by extension, hidden and temporary names skipped), in a stable order."""
    out: list[str] = []
    for p in map(Path, paths):
        if p.is_dir():
            walker = p.rglob("*") if recursive else p.iterdir()
            out += sorted(
                str(f)
                for f in walker
                if f.is_file()
                and f.suffix.lower() in IMAGE_SUFFIXES
                and not is_hidden_or_temporary(f)
                and not any(part.startswith(".") for part in f.relative_to(p).parts[:-1])
            )
        else:
            out.append(str(p))
    return out
