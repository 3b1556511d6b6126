"""The one place images become tensors.

Training (train/) and inference (edge_infer) both call these functions, so a change here reaches
both sides at once; the export parity gate checks that they still agree.
"""

from __future__ import annotations

import cv2
import numpy as np

from .segment import segment
from .spec import INTERPOLATIONS, PreprocessSpec


def opencv_single_threaded() -> None:
    """OpenCV without its own thread pool, for a process whose worker threads already have a
    core each (the `edge-infer` batch commands): the pool inside each call only competed
    with the other worker (benchmarks/threads_vs_processes.py: steady two-core scaling with
    and without, paired). Process-wide, so the library leaves it to the program."""
    cv2.setNumThreads(1)


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
        img = cv2.resize(img, size, interpolation=INTERPOLATIONS[spec.interpolation])
    return normalise_acquisition(img, spec)


def field_to_input(
    field_bgr: np.ndarray, spec: PreprocessSpec, out: np.ndarray | None = None
) -> np.ndarray:
    """A field already at the network's size (a tile of an image resampled to the training
    scale) -> the network input, with the same masking, normalisation and scaling as
    `prepare`."""
    img = field_bgr
    if spec.mask_background:
        img = np.where(segment(img, spec)[:, :, None], img, 0).astype(np.uint8)
    return to_tensor(normalise_acquisition(img, spec), spec, out)


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
    return spec.white_target / np.maximum(
        channel_levels(bgr, spec.white_percentile), spec.white_floor
    )


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
