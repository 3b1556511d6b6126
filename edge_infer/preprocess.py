"""The one place images become tensors.

Training (train/) and inference (edge_infer) both call these functions, so a change here reaches
both sides at once; the export parity gate checks that they still agree.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .errors import ImageError
from .fileops import NOT_A_FILE, ReadRefused, read_limited
from .imageformat import (
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
#: Refuse files larger than this before reading them whole.
MAX_FILE_BYTES = 64 * 1024 * 1024
#: Smaller images cannot hold a cell at the dataset's magnification.
MIN_SIDE = 32
#: Larger images are reduced (area averaging) right after decoding: the network sees 160 px and
#: the stained-cell check needs no more than this, while a 25 MP frame would cost ~0.9 GB in
#: the checks (measured with 4 parallel uploads, benchmarks/redteam.py).
MAX_WORKING_SIDE = 1024

ImageSource = str | Path | bytes | bytearray | memoryview


@dataclass(frozen=True)
class PreprocessSpec:
    """Everything needed to turn a BGR image into the network's input.

    It travels, as JSON, inside the ONNX model's metadata, so any tool can reproduce the input.
    Segmentation defaults follow the dataset authors' HSV rule (H 121-132 on OpenCV's 0-179
    scale) with S >= 60 and a light clean-up, which measurably agrees better with their own
    saved masks (see `python -m train.segcheck`).
    """

    input_size: int = 128
    channel_order: str = "RGB"
    scale: float = 1.0 / 255.0
    interpolation: str = "area"
    mask_background: bool = False
    hue_min: int = 121
    hue_max: int = 132
    sat_min: int = 60
    val_min: int = 50
    open_kernel: int = 3
    min_component_px: int = 40
    # "is there a stained cell at all?": a broader violet-magenta range than the segmentation,
    # which misses the magenta-stained cells of some slides (~15% of images have no pixel in
    # H 121-132); with this range 0.1% of the dataset's images fall under min_cell_fraction.
    cell_hue_min: int = 115
    cell_hue_max: int = 175
    cell_sat_min: int = 50
    min_cell_fraction: float = 0.002
    # acquisition normalisation of the resized image: "none", or "white_patch" (each channel
    # scaled so its `white_percentile` -- the smear's bright plasma background, present in every
    # smear -- maps to `white_target`), which undoes lamp brightness and white balance
    normalise: str = "none"
    white_percentile: float = 90.0
    white_target: float = 250.0

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | dict) -> PreprocessSpec:
        data = json.loads(text) if isinstance(text, str) else dict(text)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown preprocessing parameters: {', '.join(unknown)}")
        spec = cls(**data)
        spec.validate()
        return spec

    def validate(self) -> None:
        if self.channel_order not in ("RGB", "BGR"):
            raise ValueError(f"channel_order must be RGB or BGR, not {self.channel_order!r}")
        if self.interpolation not in _INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {sorted(_INTERPOLATIONS)}")
        if self.normalise not in NORMALISATIONS:
            raise ValueError(f"normalise must be one of {NORMALISATIONS}, not {self.normalise!r}")
        if not 50.0 <= self.white_percentile <= 100.0 or not 1.0 <= self.white_target <= 255.0:
            raise ValueError("white_percentile must be in 50-100 and white_target in 1-255")
        if not 8 <= self.input_size <= 1024:
            raise ValueError(f"input_size {self.input_size} is out of range")


NORMALISATIONS = ("none", "white_patch")
_INTERPOLATIONS = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC}


def opencv_single_threaded() -> None:
    """OpenCV without its own thread pool, for a process whose worker threads already have a
    core each (the `edge-infer` batch commands): the pool inside each call only competed
    with the other worker (benchmarks/threads_vs_processes.py: steady two-core scaling with
    and without, paired). Process-wide, so the library leaves it to the program."""
    cv2.setNumThreads(1)


# --------------------------------------------------------------------------- loading


def _read_bytes(path: Path, name: str) -> bytes:
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
    return _to_bgr_uint8(reduce_to_working_size(img), name)


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
    return decode_image(_read_bytes(path, label), label)


def as_bgr_array(image: np.ndarray, name: str = "<array>") -> np.ndarray:
    """Accept an in-memory array (BGR by convention) with the same checks as a file."""
    if not isinstance(image, np.ndarray):
        raise ImageError(name, f"expected a numpy array, got {type(image).__name__}")
    if image.size == 0:
        raise ImageError(name, "empty array")
    if image.dtype == np.bool_ or image.dtype.kind not in "uif":
        raise ImageError(name, f"unsupported pixel type {image.dtype}")
    check_size(image, name)
    return _to_bgr_uint8(reduce_to_working_size(image), name)


# --------------------------------------------------------------------------- segmentation


def clean_mask(mask: np.ndarray, open_kernel: int, min_component_px: int) -> np.ndarray:
    """Morphological opening, then drop connected components smaller than `min_component_px`."""
    m = mask.astype(np.uint8)
    if open_kernel > 1:
        m = cv2.morphologyEx(m, cv2.MORPH_OPEN, np.ones((open_kernel, open_kernel), np.uint8))
    if min_component_px > 1:
        # BBDT: the same labels as the default (checked on 98 dataset images), faster
        # (0.43 -> 0.13 ms in the project field notes; not re-timed here)
        n, labels, stats, _ = cv2.connectedComponentsWithStatsWithAlgorithm(
            m, 8, cv2.CV_32S, cv2.CCL_BBDT
        )
        keep = np.zeros(n, dtype=bool)
        keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_component_px
        return keep[labels]
    return m.astype(bool)


def segment(bgr: np.ndarray, spec: PreprocessSpec | None = None) -> np.ndarray:
    """HxW bool mask of the violet-stained lymphocytes/blasts (HSV colour threshold)."""
    spec = spec or PreprocessSpec()
    hsv = cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV)
    lo = (spec.hue_min, spec.sat_min, spec.val_min)
    hi = (spec.hue_max, 255, 255)
    raw = cv2.inRange(hsv, lo, hi) > 0
    return clean_mask(raw, spec.open_kernel, spec.min_component_px)


def stained_mask(bgr: np.ndarray, spec: PreprocessSpec | None = None) -> np.ndarray:
    """HxW bool mask of everything violet-magenta stained (the broad range of the no-cell
    check), which also covers the magenta slides the segmentation range misses."""
    spec = spec or PreprocessSpec()
    hsv = cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV)
    lo = (spec.cell_hue_min, spec.cell_sat_min, spec.val_min)
    raw = cv2.inRange(hsv, lo, (spec.cell_hue_max, 255, 255)) > 0
    return clean_mask(raw, spec.open_kernel, spec.min_component_px)


def cell_fraction(bgr: np.ndarray, spec: PreprocessSpec | None = None) -> float:
    """Share of the image that is violet-magenta stained (nuclei/cytoplasm of white cells), for
    people (`edge-infer segment`); the model's own stained-cell check runs in its graph."""
    return float(stained_mask(bgr, spec).mean())


def overlay(
    bgr: np.ndarray, mask: np.ndarray, alpha: float = 0.45, outline: np.ndarray | None = None
) -> np.ndarray:
    """The image with the mask tinted green and outlined, for people to check the segmentation;
    `outline` (e.g. the stained-cell mask) is drawn as an orange contour on top."""
    out = bgr.copy()
    tint = np.zeros_like(bgr)
    tint[:] = (60, 220, 60)
    m = mask.astype(bool)
    out[m] = (out[m] * (1 - alpha) + tint[m] * alpha).astype(np.uint8)
    contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, (0, 160, 0), 1)
    if outline is not None:
        contours, _ = cv2.findContours(
            outline.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
        )
        cv2.drawContours(out, contours, -1, (0, 140, 255), 1)
    return out


def explain_overlay(bgr: np.ndarray, spec: PreprocessSpec | None = None) -> np.ndarray:
    """What users see: segmentation tinted green, every stained cell outlined in orange."""
    return overlay(bgr, segment(bgr, spec), outline=stained_mask(bgr, spec))


# --------------------------------------------------------------------------- tensors


def resize_to_input(bgr: np.ndarray, spec: PreprocessSpec | None = None) -> np.ndarray:
    """The (masked, if the spec says so) image at the network's input size, acquisition-
    normalised as the spec says, still BGR uint8.

    The runtime reuses it for the image-statistics guard, so the resize is paid once."""
    spec = spec or PreprocessSpec()
    img = bgr
    if spec.mask_background:
        img = np.where(segment(bgr, spec)[:, :, None], bgr, 0).astype(np.uint8)
    size = (spec.input_size, spec.input_size)
    if img.shape[:2] != size:
        img = cv2.resize(img, size, interpolation=_INTERPOLATIONS[spec.interpolation])
    return normalise_acquisition(img, spec)


def channel_levels(bgr: np.ndarray, percentile: float) -> np.ndarray:
    """Per-channel (B, G, R) 8-bit level at `percentile`: the smear's bright background.

    Histograms, not np.percentile: a 256-bin cv2.calcHist per channel costs microseconds."""
    n = bgr.shape[0] * bgr.shape[1]
    rank = percentile / 100.0 * (n - 1)
    levels = np.empty(3, np.float64)
    for c in range(3):
        hist = cv2.calcHist([bgr], [c], None, [256], [0, 256]).ravel()
        levels[c] = int(np.searchsorted(np.cumsum(hist), rank + 1.0))
    return levels


def white_patch_gains(bgr: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Per-channel (B, G, R) gains that map each channel's `white_percentile` to `white_target`."""
    return spec.white_target / np.maximum(channel_levels(bgr, spec.white_percentile), 8)


def normalise_acquisition(small_bgr: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Undo lamp brightness and white balance as the spec says (uint8 in, uint8 out)."""
    if spec.normalise == "none":
        return small_bgr
    gains = white_patch_gains(small_bgr, spec)
    levels = np.arange(256, dtype=np.float64)[:, None] * gains[None, :]
    lut = np.clip(levels + 0.5, 0, 255).astype(np.uint8).reshape(256, 1, 3)
    return cv2.LUT(small_bgr, lut)


def to_tensor(
    small_bgr: np.ndarray, spec: PreprocessSpec | None = None, out: np.ndarray | None = None
) -> np.ndarray:
    """An input-size BGR uint8 image -> float32 HxWx3 in the spec's channel order and scale.

    `out`: a float32 HxWx3 array to write into (a row of the batch the network will get), so a
    batch is filled in place instead of stacked: the same values, one copy fewer."""
    spec = spec or PreprocessSpec()
    img = small_bgr
    if spec.channel_order == "RGB":
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if out is None:
        return img.astype(np.float32) * np.float32(spec.scale)
    out[...] = img
    return np.multiply(out, np.float32(spec.scale), out=out)


def prepare(
    bgr: np.ndarray, spec: PreprocessSpec | None = None, out: np.ndarray | None = None
) -> np.ndarray:
    """One BGR uint8 image -> float32 HxWx3 network input, as the spec says (into `out` if
    given)."""
    return to_tensor(resize_to_input(bgr, spec), spec, out)


def dihedral(x: np.ndarray, k: int) -> np.ndarray:
    """The k-th (0-7) of the 8 flip/rotate transforms of an HxWxC (or NxHxWxC) array.

    k % 4 quarter turns, then a left-right flip when k >= 4: the same order train/ uses.
    """
    axes = (0, 1) if x.ndim == 3 else (1, 2)
    out = np.rot90(x, k % 4, axes=axes)
    if k >= 4:
        out = np.flip(out, axis=axes[1])
    return np.ascontiguousarray(out)
