"""Image files and arrays become 8-bit BGR images here, after every check that must come
before decoding (decompression bombs, truncated streams) and the size checks after it.

Classify, watch, serve and training all read images through `load_image` and `as_bgr_array`.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from ..errors import ImageError
from ..io.fileops import NOT_A_FILE, ReadRefused, read_limited
from .formats import (
    SIGNATURE_BYTES,
    Header,
    HeaderRefused,
    ImageFormat,
    detect,
    jpeg_layout,
    supported_names,
)

#: Refuse anything larger before decoding it (decompression bombs); a microscope camera frame
#: is a few megapixels, 20 MP at most.
MAX_PIXELS = 25_000_000
#: Refuse images whose decoded pixels would take more than this (the pixel cap alone let a
#: 445 KB float32 TIFF of 25 MP take 669 MB): an 8-bit RGB frame of 25 MP (75 MB) or a 16-bit
#: RGB frame of 16 MP (96 MB) fits.
MAX_DECODED_BYTES = 100_000_000
#: Refuse progressive JPEGs with more scans than this: each scan is one more pass of the
#: decoder over the whole image (a file repeating its last scan 1,000 times cost 22 s of CPU);
#: encoders write about ten.
MAX_JPEG_SCANS = 64
#: ... and more scans x pixels than this: each scan costs about a nanosecond per pixel, so a
#: 25 MP frame may have 32 scans (about a second of CPU), a 5 MP one all 64
MAX_SCAN_PIXELS = 800_000_000
#: Refuse files larger than this before reading them whole.
MAX_FILE_BYTES = 64 * 1024 * 1024
#: Smaller images cannot hold a cell at the dataset's magnification.
MIN_SIDE = 32
#: Larger images are reduced (area averaging) right after decoding: the network sees 160 px and
#: the stained-cell check needs no more than this, while a 25 MP frame would cost ~0.9 GB in
#: the checks (measured with 4 parallel uploads, benchmarks/redteam.py).
MAX_WORKING_SIDE = 1024

ImageSource = str | Path | bytes | bytearray | memoryview


class Decoded(np.ndarray):
    """A decoded 8-bit BGR image that remembers its size as saved, (height, width): an image
    over MAX_WORKING_SIDE is reduced right after decoding, and what the runtime reports in the
    image's own pixels (a tile's box) is given in the file's pixels with it. Arrays made from
    it (slices, results of operations) do not carry the size."""

    saved_size: tuple[int, int] | None = None

    def __array_finalize__(self, obj: object) -> None:
        self.saved_size = None

    # pickled with its size (an image handed to another process keeps it)
    def __reduce__(self):
        cls, args, state = super().__reduce__()
        return cls, args, (state, self.saved_size)

    def __setstate__(self, state) -> None:
        base, self.saved_size = state
        super().__setstate__(base)


def saved_size(img: np.ndarray) -> tuple[int, int]:
    """(height, width) of the image as saved, before any reduction to the working size."""
    size = getattr(img, "saved_size", None)
    return size if size is not None else (int(img.shape[0]), int(img.shape[1]))


def _decoded(img: np.ndarray, saved: tuple[int, ...]) -> Decoded:
    out = img.view(Decoded)
    out.saved_size = (int(saved[0]), int(saved[1]))
    return out


# --------------------------------------------------------------------------- loading


def load_bytes(path: Path, name: str) -> bytes:
    """A file's bytes (at most MAX_FILE_BYTES), or ImageError naming `name` and the reason."""
    try:
        return read_limited(path, MAX_FILE_BYTES)
    except ReadRefused as exc:
        raise ImageError(name, str(exc)) from None
    except FileNotFoundError:
        raise ImageError(name, "file not found") from None
    except (PermissionError, IsADirectoryError):  # Windows cannot open a directory
        # os.path.isdir, not Path.is_dir: that one raises again where the folder is locked
        reason = NOT_A_FILE if os.path.isdir(path) else "permission denied"
        raise ImageError(name, reason) from None
    except OSError as exc:
        raise ImageError(name, f"cannot read file ({exc.strerror or exc})") from None
    except ValueError as exc:  # e.g. a NUL character in the path
        raise ImageError(name, f"invalid path ({exc})") from None


TRUNCATED_JPEG = "truncated JPEG (no end-of-image marker)"


def incomplete_reason(data: bytes) -> str | None:
    """A reason if the encoded stream visibly stops early (decoders pad such files silently).
    Bytes after the end marker (some cameras append metadata) are accepted."""
    if data[:2] == b"\xff\xd8":
        return None if jpeg_layout(data).complete else TRUNCATED_JPEG
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data.rfind(b"IEND") < 8:
        return "truncated PNG (no IEND chunk)"
    return None


def _inspect(fmt: ImageFormat, data: bytes, name: str) -> tuple[Header, str | None]:
    """The header (refused with a reason if it asks for too much) and a truncation reason;
    a JPEG is walked once for both."""
    try:
        if fmt.name == "JPEG":
            layout = jpeg_layout(data)
            header, truncated = layout.header, None if layout.complete else TRUNCATED_JPEG
        else:
            header, truncated = fmt.header(data), incomplete_reason(data)
    except HeaderRefused as exc:
        raise ImageError(name, str(exc)) from None
    if header is None:
        raise ImageError(name, f"cannot read the image size from its {fmt.name} header")
    w, h = header.width, header.height
    if w * h > MAX_PIXELS:
        raise ImageError(name, f"image is {w}x{h} px, over the {MAX_PIXELS}-pixel limit")
    if min(w, h) < 1:
        raise ImageError(name, f"{fmt.name} header declares an empty {w}x{h} image")
    if w * h * header.bytes_per_pixel > MAX_DECODED_BYTES:
        raise ImageError(
            name,
            f"image is {w}x{h} px at {header.bytes_per_pixel} bytes per pixel, over the "
            f"{MAX_DECODED_BYTES // 1_000_000} MB decoded-size limit",
        )
    if header.scans > MAX_JPEG_SCANS:
        raise ImageError(
            name, f"progressive JPEG with {header.scans} scans, over the limit of {MAX_JPEG_SCANS}"
        )
    if header.scans * w * h > MAX_SCAN_PIXELS:
        raise ImageError(
            name,
            f"progressive JPEG of {w}x{h} px in {header.scans} scans: over the decoding budget "
            f"of {MAX_SCAN_PIXELS // 1_000_000} million pixel-scans",
        )
    return header, truncated


def _to_bgr_uint8(img: np.ndarray, name: str) -> np.ndarray:
    """Normalise any decoded image (gray, alpha, 16-bit, float) to 8-bit 3-channel BGR."""
    if img.dtype == np.uint16:
        img = (img.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
    elif img.dtype in (np.float32, np.float64):
        finite = np.nan_to_num(img.astype(np.float64), nan=0.0, posinf=1.0, neginf=0.0)
        peak = 255.0 if finite.max(initial=0.0) > 1.0 else 1.0
        img = (np.clip(finite / peak, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    elif img.dtype.kind == "i":
        # signed integers: taken as 8-bit levels only when they are (a wrap, 300 -> 44, would
        # silently be another image)
        lo, hi = int(img.min(initial=0)), int(img.max(initial=0))
        if lo < 0 or hi > 255:
            raise ImageError(
                name,
                f"{img.dtype} values {lo}..{hi} are not 8-bit levels (give uint8, uint16 or "
                "float images)",
            )
        img = img.astype(np.uint8)
    elif img.dtype != np.uint8:
        raise ImageError(name, f"unsupported pixel type {img.dtype}")
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.ndim != 3:
        raise ImageError(name, f"unsupported image shape {img.shape}")
    channels = img.shape[2]
    if channels == 1:
        return cv2.cvtColor(img[:, :, 0], cv2.COLOR_GRAY2BGR)
    if channels == 2:  # gray + alpha
        return cv2.cvtColor(np.ascontiguousarray(img[:, :, 0]), cv2.COLOR_GRAY2BGR)
    if channels == 3:
        return np.ascontiguousarray(img)
    if channels == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    raise ImageError(name, f"unsupported number of channels ({channels})")


def check_size(img: np.ndarray, name: str) -> None:
    """Refuse images too small to hold a cell or too large to be a camera frame."""
    if img.ndim not in (2, 3):
        raise ImageError(name, f"unsupported image shape {img.shape}")
    h, w = img.shape[:2]
    if img.ndim == 3 and img.shape[0] in (1, 3, 4) and img.shape[2] > 4:
        raise ImageError(
            name,
            f"array of shape {img.shape} looks channels-first: give height x width x channels",
        )
    if min(h, w) < MIN_SIDE:
        raise ImageError(name, f"image is {w}x{h} px, smaller than {MIN_SIDE} px on a side")
    if h * w > MAX_PIXELS:
        raise ImageError(name, f"image is {w}x{h} px, over the {MAX_PIXELS}-pixel limit")


def decode_image(data: bytes | bytearray | memoryview, name: str = "<bytes>") -> np.ndarray:
    """Decode encoded image bytes to 8-bit BGR, or raise ImageError naming `name`."""
    data = bytes(data)
    if not data:
        raise ImageError(name, "empty file")
    if len(data) > MAX_FILE_BYTES:
        raise ImageError(name, f"{len(data)} bytes, over the {MAX_FILE_BYTES}-byte limit")
    fmt = detect(data[:SIGNATURE_BYTES])
    if fmt is None:
        raise ImageError(name, f"not a supported image format (supported: {supported_names()})")
    _, truncated = _inspect(fmt, data, name)
    if truncated:
        raise ImageError(name, truncated)
    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        # ANYDEPTH|ANYCOLOR (not UNCHANGED): 16-bit kept, EXIF orientation applied, as imread does
        img = cv2.imdecode(buf, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    except cv2.error as exc:
        raise ImageError(
            name, f"cannot decode image ({str(exc).strip().splitlines()[-1]})"
        ) from None
    if img is None or img.size == 0:
        raise ImageError(name, "not a readable image (unknown format or corrupt data)")
    check_size(img, name)
    return _decoded(_to_bgr_uint8(reduce_to_working_size(img), name), img.shape)


_RESIZABLE = (np.uint8, np.uint16, np.float32, np.float64)


def reduce_to_working_size(img: np.ndarray) -> np.ndarray:
    """An image whose long side exceeds MAX_WORKING_SIDE, reduced to it (aspect kept)."""
    h, w = img.shape[:2]
    if max(h, w) <= MAX_WORKING_SIDE:
        return img
    f = MAX_WORKING_SIDE / max(h, w)
    size = (max(MIN_SIDE, int(round(w * f))), max(MIN_SIDE, int(round(h * f))))
    if (img.ndim == 3 and img.shape[2] > 4) or img.dtype not in _RESIZABLE:
        return img
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA)


def load_image(source: ImageSource, name: str | None = None) -> np.ndarray:
    """Load a path or encoded bytes as 8-bit 3-channel BGR (works with non-ASCII paths)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return decode_image(source, name or "<bytes>")
    path = Path(source)
    label = name or str(path)
    return decode_image(load_bytes(path, label), label)


def as_bgr_array(image: np.ndarray, name: str = "<array>") -> np.ndarray:
    """Accept an in-memory array (BGR by convention) with the same checks as a file."""
    if not isinstance(image, np.ndarray):
        raise ImageError(name, f"expected a numpy array, got {type(image).__name__}")
    if image.size == 0:
        raise ImageError(name, "empty array")
    if image.dtype == np.bool_ or image.dtype.kind not in "uif":
        raise ImageError(name, f"unsupported pixel type {image.dtype}")
    check_size(image, name)
    # an image decoded here already (a Decoded) keeps the size it was saved at
    return _decoded(_to_bgr_uint8(reduce_to_working_size(image), name), saved_size(image))
