"""How large the cells look: the ruler every smear carries.

Red cells are about 7.5 um across in every human blood smear, and they are most of what a field
holds, so their size in pixels says the image's scale whatever the microscope, camera or crop.
It is read by scale-space blob selection (Lindeberg): the Gaussian scale at which the
scale-normalised Laplacian responds most strongly to dark blobs on the bright background. That
reading follows the image's scale (a field shown twice as large reads twice as large: tested
over 0.5-2x), needs no segmentation threshold, and costs a blur pyramid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

import cv2
import numpy as np

from .spec import INTERPOLATIONS, PreprocessSpec

#: blob scales tried per octave (sigma = 2 ** (k / STEPS_PER_OCTAVE))
STEPS_PER_OCTAVE = 4
#: the smallest blob read: sigma 2 ** (2 / 4) = 1.41 px, a diameter of 4 px
FIRST_STEP = 2
#: the largest blob read is a third of the shorter side across: a larger one is a cell that
#: fills the image, not a ruler
MAX_DIAMETER_SHARE = 1.0 / 3.0
#: the background level (each image's bright plasma) is the green channel at this percentile
BACKGROUND_PERCENTILE = 90.0


def blob_diameter(bgr: np.ndarray, skip_octave: bool = False) -> float:
    """The diameter in pixels of the blobs that dominate the image (the red cells of a smear).

    Returns the diameter at the strongest response, interpolated between scales; 0.0 when the
    strongest response is at the smallest scale tried (blobs under 4 px; with `skip_octave`,
    which reads from the image halved and costs a third as much, under 8 px), inf when it is
    at the largest (wider than a third of the image), NaN when nothing responds (a blank
    image)."""
    green = bgr[..., 1] if bgr.ndim == 3 else bgr
    hist = cv2.calcHist([green], [0], None, [256], [0, 256]).ravel()
    rank = BACKGROUND_PERCENTILE / 100.0 * (green.size - 1)
    background = float(np.searchsorted(np.cumsum(hist), rank + 1.0)) + 1.0
    # darkness relative to the background: a lamp or exposure change scales both alike
    dark = 1.0 - green.astype(np.float32) / np.float32(background)
    energies, sigmas = _scale_energies(dark, skip_octave)
    if len(energies) < 3 or not np.isfinite(energies).all() or energies.max() <= 0.0:
        return math.nan
    k = int(np.argmax(energies))
    if k == 0:
        return 0.0
    if k == len(energies) - 1:
        return math.inf
    a, b, c = np.log(np.maximum(energies[k - 1 : k + 2], 1e-30))
    offset = 0.5 * (a - c) / (a - 2.0 * b + c) if (a - 2.0 * b + c) < 0 else 0.0
    sigma = sigmas[k] * 2.0 ** (offset / STEPS_PER_OCTAVE)
    return float(2.0 * math.sqrt(2.0) * sigma)  # a disc of radius r answers most at r / sqrt 2


def _scale_energies(dark: np.ndarray, skip_octave: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Mean squared positive scale-normalised -Laplacian per sigma, over a pyramid: each
    octave reads four scales on an image halved from the last (the same cost as one blur of
    the full image, roughly); the first level read also reads the two scales below."""
    max_sigma = MAX_DIAMETER_SHARE * min(dark.shape[:2]) / (2.0 * math.sqrt(2.0))
    energies: list[float] = []
    sigmas: list[float] = []
    level, factor, pre_blur = dark, 1.0, 0.0
    if skip_octave:
        level, factor, pre_blur = cv2.pyrDown(dark), 2.0, 0.5
    steps = range(FIRST_STEP, FIRST_STEP + STEPS_PER_OCTAVE + 2)
    while True:
        blurred, have = level, pre_blur
        for k in steps:
            local = 2.0 ** (k / STEPS_PER_OCTAVE)
            sigma = local * factor
            if sigma > max_sigma:
                return np.array(energies), np.array(sigmas)
            # each scale blurs the last one further (Gaussians add in variance); the
            # pyramid's own smoothing is part of the scale already
            blurred = cv2.GaussianBlur(blurred, (0, 0), math.sqrt(local**2 - have**2))
            have = local
            response = cv2.Laplacian(blurred, cv2.CV_32F)
            # a dark blob (bright in `dark`) gives a negative Laplacian; sigma^2 (sigma^4 on
            # the squares) makes the scales comparable
            cv2.min(response, 0.0, dst=response)
            energies.append(cv2.norm(response, cv2.NORM_L2SQR) / response.size * local**4)
            sigmas.append(sigma)
        if min(level.shape[:2]) < 32:
            return np.array(energies), np.array(sigmas)
        # the next octave reads its scales on the level made from the one that read
        # sigma 2-3.4 (a pyrDown keeps what a sigma >= 2 blur keeps)
        level = cv2.pyrDown(level)
        pre_blur = math.sqrt((pre_blur / 2.0) ** 2 + 0.25)
        factor *= 2.0
        steps = range(FIRST_STEP + 2, FIRST_STEP + STEPS_PER_OCTAVE + 2)


# --------------------------------------------------------------------------- the scale rule

#: the image as saved is read again at most this large (shorter side) when the quick reading
#: at the network's size says another scale: a 5 MP frame's red cells stay >= 4 px across
READ_SIDE = 1024
#: at most this many tiles per image (12 x 12 training fields); more: not recognised
MAX_TILES = 144
#: the refined reading reads at most this many fields along each side, spread over the frame
READ_FIELDS = 8


class Plan(str, Enum):
    """What the scale rule does with an image."""

    WHOLE = "whole"  #: read as one field, as the network was trained
    TILES = "tiles"  #: several fields: resampled to the training scale, read tile by tile
    REFUSE = "refuse"  #: less than one field, or cells too small to measure or tile


def quick_reading(small: np.ndarray) -> float:
    """The red-cell diameter as a share of the side, read on `small` (the image at the
    network's size): the reading the reference was fitted with (train.scale_fit), in which
    red cells at the training scale are about 15 px across (read from the image halved: what
    is under 8 px reads 0.0, and the refined reading decides)."""
    return blob_diameter(small, skip_octave=True) / math.sqrt(small.shape[0] * small.shape[1])


def magnification(bgr: np.ndarray, small: np.ndarray, spec: PreprocessSpec) -> float:
    """How many times larger the cells look at the network's input than in the training
    images (1.0: the training scale), NaN when the image has no readable ruler.

    Read first on `small` (the image at the network's size) halved, which costs about a
    millisecond. When that reading is outside the range read whole, the image as saved
    (shrunk to READ_SIDE) gives a first estimate; the image is then resampled so that one
    training field would be as large as the quick reading's image, and the median quick
    reading over fields of that size refines it: every reading is made the way the reference
    was (a reading of a larger image, or of larger blobs, differs by 10-15%: measured on
    mosaics of dataset images)."""
    reference = spec.cell_diameter_share
    m = quick_reading(small) / reference
    if math.isnan(m) or spec.field_scale_min <= m <= spec.field_scale_max:
        return m
    h, w = bgr.shape[:2]
    shrink = min(1.0, READ_SIDE / min(h, w))
    img = bgr if shrink == 1.0 else _resize(bgr, shrink)
    first = blob_diameter(img) / math.sqrt(img.shape[0] * img.shape[1]) / reference
    if not math.isfinite(first) or first <= 0.0:
        return first
    window = small.shape[0]  # the quick reading's image side
    k = window / (first * math.sqrt(h * w))  # one training field -> `window` pixels
    if k * min(h, w) < window or k * max(h, w) > 4 * READ_SIDE:
        return first  # less than one field (refused either way), or too many to read
    fields = _resize(bgr, k)
    readings = [
        quick_reading(fields[y : y + window, x : x + window]) / reference
        for y in _spread(_starts(fields.shape[0], window), READ_FIELDS)
        for x in _spread(_starts(fields.shape[1], window), READ_FIELDS)
    ]
    usable = [r for r in readings if math.isfinite(r) and r > 0.0]
    return first * float(np.median(usable)) if usable else first


def _spread(items: list[int], n: int) -> list[int]:
    """At most n of `items`, evenly spread over them (the whole frame, not one corner)."""
    if len(items) <= n:
        return items
    return [items[round(i * (len(items) - 1) / (n - 1))] for i in range(n)]


def _resize(bgr: np.ndarray, k: float) -> np.ndarray:
    interpolation = cv2.INTER_AREA if k < 1.0 else cv2.INTER_LINEAR
    h, w = bgr.shape[:2]
    return cv2.resize(
        bgr, (max(1, round(w * k)), max(1, round(h * k))), interpolation=interpolation
    )


def plan(m: float, spec: PreprocessSpec, shape: tuple[int, ...]) -> Plan:
    """The rule, in words: an image whose scale cannot be read (NaN) or lies within the
    model's range (`field_scale_min`-`field_scale_max`) is read whole; one whose cells look
    smaller holds several fields and is read as tiles at the training scale (unless that
    takes more than MAX_TILES tiles, or its cells are too small to measure); one whose cells
    look larger shows less than one field and is not recognised."""
    if math.isnan(m) or spec.field_scale_min <= m <= spec.field_scale_max:
        return Plan.WHOLE
    if m <= 0.0 or m > spec.field_scale_max:
        return Plan.REFUSE
    return Plan.TILES if len(tile_boxes(shape, m, spec.input_size)) <= MAX_TILES else Plan.REFUSE


@dataclass(frozen=True)
class Tiles:
    """An image read as tiles: each tile one training field, as the network's inputs."""

    magnification: float
    #: (n, size, size, 3) float32 network inputs
    inputs: np.ndarray
    #: each tile's (x, y, width, height) in the image's own pixels, as saved (before the
    #: decoder's reduction of a large image to the working size)
    boxes: tuple[tuple[int, int, int, int], ...]


def _resampled_shape(shape: tuple[int, ...], m: float, size: int) -> tuple[int, int]:
    """(height, width) of the image resampled to the training scale: cells 1/m as large,
    so that one training field is `size` pixels across."""
    h, w = shape[:2]
    k = size / (m * math.sqrt(h * w))
    return max(1, round(h * k)), max(1, round(w * k))


def _starts(length: int, size: int) -> list[int]:
    """Tile origins along one axis: as few tiles as cover it, evenly overlapping."""
    if length <= size:
        return [0]
    n = math.ceil(length / size)
    return [round(i * (length - size) / (n - 1)) for i in range(n)]


def tile_boxes(shape: tuple[int, ...], m: float, size: int) -> list[tuple[int, int, int, int]]:
    """The tiles' boxes (x, y, width, height) in the resampled image."""
    rh, rw = _resampled_shape(shape, m, size)
    return [
        (x, y, min(size, rw), min(size, rh)) for y in _starts(rh, size) for x in _starts(rw, size)
    ]


def tiles(
    bgr: np.ndarray,
    m: float,
    spec: PreprocessSpec,
    prepare_field,
    saved: tuple[int, int] | None = None,
) -> Tiles:
    """The image resampled to the training scale and cut into training fields, each made a
    network input by `prepare_field(field_bgr, out)` (the runtime's own preprocessing of a
    field already at the network's size). `saved`: the image's (height, width) as saved, when
    `bgr` was reduced from it, for the boxes."""
    size = spec.input_size
    rh, rw = _resampled_shape(bgr.shape, m, size)
    shrinking = rh * rw < bgr.shape[0] * bgr.shape[1]
    interpolation = INTERPOLATIONS[spec.interpolation] if shrinking else cv2.INTER_LINEAR
    resampled = cv2.resize(bgr, (rw, rh), interpolation=interpolation)
    boxes = tile_boxes(bgr.shape, m, size)
    inputs = np.empty((len(boxes), size, size, 3), np.float32)
    saved_h, saved_w = saved or bgr.shape[:2]
    back_y, back_x = saved_h / rh, saved_w / rw
    originals = []
    for i, (x, y, bw, bh) in enumerate(boxes):
        field = resampled[y : y + bh, x : x + bw]
        if field.shape[:2] != (size, size):  # a side shorter than one field: its edge repeated
            field = cv2.copyMakeBorder(field, 0, size - bh, 0, size - bw, cv2.BORDER_REPLICATE)
        prepare_field(field, inputs[i])
        originals.append(
            (round(x * back_x), round(y * back_y), round(bw * back_x), round(bh * back_y))
        )
    return Tiles(m, inputs, tuple(originals))
