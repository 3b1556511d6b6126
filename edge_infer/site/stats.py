"""Acquisition statistics of one image, in the microscope's own terms: lamp, white balance,
stain colour and strength, focus, cell size (magnification) and camera resolution.

`edge-infer check-site` compares a lab's images with the training images on these; the
training reference (percentiles per statistic) travels in the model's metadata. Each
statistic says what to change at the microscope when a lab sits below or above the training
range, so the advice is derived from the measurement, not canned per test case.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..image.preprocess import channel_levels, normalise_acquisition
from ..image.segment import clean_mask
from ..image.spec import PreprocessSpec


@dataclass(frozen=True)
class SiteStat:
    """One acquisition statistic: its key, what people call it, its unit, and what to change
    at the microscope when a lab is below / above range."""

    key: str
    title: str
    unit: str
    if_low: str
    if_high: str
    #: the smallest difference from the training median worth acting on (0: any that is
    #: statistically clear); the lamp: 5 grey levels, 2%, below what anyone sees
    min_shift: float = 0.0


#: the statistics, in the order `site_statistics` returns them
SITE_STATS = (
    SiteStat(
        "background_level",
        "lamp brightness (background luminance)",
        "0-255",
        "the lamp is dimmer (or the exposure shorter) than in training: turn the lamp up or "
        "lengthen the exposure",
        "the lamp is brighter (or the exposure longer) than in training: turn the lamp down or "
        "shorten the exposure",
        min_shift=5.0,
    ),
    SiteStat(
        "clipped_share",
        "over-exposed pixels",
        "share of pixels at 250-255",
        "",
        "part of the image is saturated white: shorten the exposure or turn the lamp down",
    ),
    SiteStat(
        "red_blue_balance",
        "white balance, red vs blue (log ratio of the background)",
        "ln(R/B)",
        "the images are bluer (colder) than in training: set the camera's white balance on an "
        "empty field, or warm the colour temperature",
        "the images are redder (warmer) than in training: set the camera's white balance on an "
        "empty field, or cool the colour temperature",
    ),
    SiteStat(
        "green_balance",
        "white balance, green vs magenta (log ratio of the background)",
        "ln(G/sqrt(RB))",
        "the images are more magenta than in training: set the camera's white balance on an "
        "empty field",
        "the images are greener than in training: set the camera's white balance on an empty field",
    ),
    SiteStat(
        "stain_hue",
        "stain colour (hue of stained pixels)",
        "OpenCV hue 0-179",
        "the stain is bluer than in training: check the stain batch, staining time and buffer pH",
        "the stain is redder/more magenta than in training: check the stain batch, staining "
        "time and buffer pH",
    ),
    SiteStat(
        "stain_strength",
        "stain strength (saturation of stained pixels)",
        "0-255",
        "the stain is paler than in training (or the camera records no colour): check the "
        "staining time and the camera's colour mode",
        "the stain is stronger than in training: check the staining time and dilution",
    ),
    SiteStat(
        "sharpness",
        "focus (log variance of the Laplacian at the network's size)",
        "log",
        "the images are less sharp than in training: refocus, clean the objective, check the "
        "camera adapter's focus",
        "the images are sharper or noisier than in training: lower the camera gain (noise) or "
        "check the sharpening setting",
    ),
    SiteStat(
        "cell_size",
        "cell size (largest stained cell's diameter / image width)",
        "share of width",
        "cells look smaller than in training: use a higher magnification (the training images "
        "are 100x oil immersion), or crop the field around the cell",
        "cells look larger than in training: use a lower magnification (the training images "
        "are 100x oil immersion) or a wider field of view",
    ),
    SiteStat(
        "image_side_px",
        "image size (shorter side)",
        "px",
        "the images have fewer pixels than the network needs: raise the camera resolution",
        "",
    ),
)
SITE_STAT_KEYS = tuple(s.key for s in SITE_STATS)
#: a pixel is "stained" (nucleus or cytoplasm of a white cell) above this HSV saturation
STAIN_SAT_MIN = 50
#: background channel levels at or above this count as clipped
CLIP_LEVEL = 250


def site_statistics(bgr: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """The `SITE_STATS` of one decoded image (8-bit BGR), as float64 in that order.

    Lamp and white balance are read on the image as the camera saved it; stain, focus and cell
    size on the acquisition-normalised image at the network's input size (what the model sees),
    so a colour cast is not counted twice."""
    side = min(bgr.shape[:2])
    size = (spec.input_size, spec.input_size)
    small = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA) if bgr.shape[:2] != size else bgr
    b, g, r = np.maximum(channel_levels(small, spec.white_percentile), 1.0)
    clipped = (
        cv2.countNonZero(cv2.inRange(small, (CLIP_LEVEL,) * 3, (255,) * 3)) / small[..., 0].size
    )
    norm = normalise_acquisition(small, spec)
    hsv = cv2.cvtColor(norm, cv2.COLOR_BGR2HSV)
    stained = cv2.inRange(hsv, (spec.cell_hue_min, STAIN_SAT_MIN, spec.val_min), (180, 255, 255))
    if cv2.countNonZero(stained):
        hue, sat = cv2.mean(hsv, mask=stained)[:2]
    else:  # no stained pixel (a grayscale camera, an empty field): no hue, no strength
        hue, sat = np.nan, 0.0
    gray = cv2.cvtColor(norm, cv2.COLOR_BGR2GRAY)
    lap_std = cv2.meanStdDev(cv2.Laplacian(gray, cv2.CV_32F))[1][0, 0]
    cells = clean_mask(stained > 0, spec.open_kernel, spec.min_component_px).astype(np.uint8)
    n, _, stats, _ = cv2.connectedComponentsWithStatsWithAlgorithm(
        cells, 8, cv2.CV_32S, cv2.CCL_BBDT
    )
    # no cell, no size (NaN): it is not counted as "small" in a site's median
    largest = stats[1:, cv2.CC_STAT_AREA].max() if n > 1 else np.nan
    diameter = 2.0 * np.sqrt(largest / np.pi) / spec.input_size
    return np.array(
        [
            0.299 * r + 0.587 * g + 0.114 * b,  # luminance: unmoved by a pure colour cast
            clipped,
            np.log(r / b),
            np.log(g / np.sqrt(r * b)),
            hue,
            sat,
            np.log1p(lap_std**2),
            diameter,
            float(side),
        ]
    )


#: the training reference is each statistic's quantile at 0, 1, ..., 100 %
QUANTILE_STEPS = 101


def reference_from(stats: np.ndarray) -> dict:
    """The training reference carried in the metadata: per statistic, its quantiles over the
    training images (NaN, i.e. not measurable, left out) and the share not measurable."""
    grid = np.linspace(0.0, 100.0, QUANTILE_STEPS)
    out = {}
    for i, key in enumerate(SITE_STAT_KEYS):
        col = stats[:, i]
        ok = col[~np.isnan(col)]
        out[key] = {
            "quantiles": [round(float(v), 5) for v in np.percentile(ok, grid)] if len(ok) else [],
            "missing": round(float(np.isnan(col).mean()), 5),
        }
    return {"n": int(len(stats)), "stats": out}


def quantile(reference: dict, key: str, q: float) -> float:
    """The training value of statistic `key` at quantile q (0-1), interpolated."""
    grid = reference["stats"][key]["quantiles"]
    if not grid:
        return float("nan")
    return float(np.interp(q, np.linspace(0.0, 1.0, len(grid)), grid))
