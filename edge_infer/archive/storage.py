"""Where an archive's images and results live: a local path or an `s3://` URI, read and
written through pyarrow's filesystems (S3-compatible stores via the usual AWS_* variables,
AWS_ENDPOINT_URL included). Only the archive command imports this (the `ray` extra)."""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path

import pyarrow.fs as pafs

from ..errors import ImageError
from ..image.decode import MAX_FILE_BYTES, load_bytes

REMOTE_SCHEMES = ("s3://",)
#: attempts at reading one object from a remote store before its row says why it failed
READ_ATTEMPTS = 3


def is_remote(uri: str) -> bool:
    return uri.startswith(REMOTE_SCHEMES)


@functools.lru_cache(maxsize=16)
def _remote_fs(bucket_uri: str) -> pafs.FileSystem:
    fs, _ = pafs.FileSystem.from_uri(bucket_uri)
    return fs


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a local path or an s3:// URI; one filesystem object
    per bucket, reused."""
    if is_remote(uri):
        scheme, rest = uri.split("://", 1)
        bucket = rest.split("/", 1)[0]
        return _remote_fs(f"{scheme}://{bucket}"), rest.rstrip("/")
    return pafs.LocalFileSystem(), os.path.abspath(uri)


def join(base: str, *parts: str) -> str:
    """A path or URI below `base`."""
    return "/".join([base.rstrip("/"), *parts]) if is_remote(base) else str(Path(base, *parts))


def read_image_bytes(uri: str) -> bytes:
    """The file's bytes, or ImageError with the same reasons `edge-infer classify` gives for a
    local file; a remote object is tried READ_ATTEMPTS times (stores drop connections)."""
    if not is_remote(uri):
        return load_bytes(Path(uri), uri)
    fs, path = filesystem(uri)
    attempt = 1
    while True:
        try:
            with fs.open_input_file(path) as fh:
                size = fh.size()
                if size > MAX_FILE_BYTES:
                    raise ImageError(uri, f"{size} bytes, over the {MAX_FILE_BYTES}-byte limit")
                return fh.read()
        except FileNotFoundError:
            raise ImageError(uri, "file not found") from None
        except PermissionError:
            raise ImageError(uri, "permission denied") from None
        except OSError as exc:
            if attempt == READ_ATTEMPTS:
                raise ImageError(uri, f"cannot read object ({exc})") from None
            time.sleep(0.5 * 2 ** (attempt - 1))
            attempt += 1
