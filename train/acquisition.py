"""Acquisition changes of a blood smear image: lamp, white balance, stain, focus, sensor, JPEG,
orientation, magnification, camera resolution. NumPy + OpenCV only (no TensorFlow).

Training draws random changes from `RANGES` (train.pipeline) and the shift suite applies fixed
ones (train.shift_eval): one implementation of each change, so the suite measures the same
thing the augmentation teaches. Every function takes and returns 8-bit BGR.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Ranges:
    """The acquisition ranges the model is trained to handle: the realistic ranges of a lamp,
    white balance, stain, focus, sensor, compression and magnification at a second lab."""

    brightness: tuple[float, float] = (0.75, 1.3)
    gamma: tuple[float, float] = (0.7, 1.4)
    white_balance: float = 12.0  # |Lab a/b shift|, OpenCV 8-bit Lab units
    saturation: tuple[float, float] = (0.7, 1.35)
    hue: float = 8.0  # OpenCV hue units (0-179)
    blur_sigma: float = 2.5  # px at 224 px
    noise_sigma: float = 6.0  # grey levels
    jpeg_quality: tuple[int, int] = (30, 95)
    magnification: tuple[float, float] = (0.75, 1.33)
    resolution: tuple[float, float] = (1.0, 2.0)
    #: share of lamp changes made in linear light (`exposure`) instead of on the 8-bit values
    linear_light: float = 0.0

    def to_json(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, d: dict | None) -> Ranges:
        """A run's ranges from its metrics.json (runs made before they were recorded: RANGES)."""
        if not d:
            return cls()
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


RANGES = Ranges()


def _lut(fn) -> np.ndarray:
    x = np.arange(256, dtype=np.float64) / 255.0
    return np.clip(fn(x) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def brightness(img: np.ndarray, factor: float) -> np.ndarray:
    """Lamp intensity / exposure: every channel times `factor` (saturating at white)."""
    return cv2.LUT(img, _lut(lambda x: x * factor))


_SRGB = np.arange(256, dtype=np.float64) / 255.0
_LINEAR = np.where(_SRGB <= 0.04045, _SRGB / 12.92, ((_SRGB + 0.055) / 1.055) ** 2.4)


def exposure(img: np.ndarray, factor: float) -> np.ndarray:
    """Lamp intensity / exposure time in linear light: the sensor's photons times `factor`,
    clipped where the sensor saturates, then the camera's sRGB curve. A brighter lamp burns the
    plasma background out to white while the cells keep some contrast, as a real camera does."""
    lin = np.minimum(_LINEAR * factor, 1.0)
    srgb = np.where(lin <= 0.0031308, lin * 12.92, 1.055 * lin ** (1 / 2.4) - 0.055)
    return cv2.LUT(img, np.clip(srgb * 255.0 + 0.5, 0, 255).astype(np.uint8))


def gamma(img: np.ndarray, g: float) -> np.ndarray:
    """Camera tone curve: x ** g."""
    return cv2.LUT(img, _lut(lambda x: x**g))


def white_balance(img: np.ndarray, da: float, db: float) -> np.ndarray:
    """Colour temperature: shift Lab a (green-magenta) and b (blue-yellow); +b is warmer."""
    lab = cv2.cvtColor(img, cv2.COLOR_BGR2LAB).astype(np.float32)
    lab[..., 1] += da
    lab[..., 2] += db
    return cv2.cvtColor(np.clip(lab, 0, 255).astype(np.uint8), cv2.COLOR_LAB2BGR)


def saturation(img: np.ndarray, factor: float) -> np.ndarray:
    """Stain intensity: HSV saturation times `factor`."""
    hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
    hsv[..., 1] = cv2.LUT(hsv[..., 1], _lut(lambda x: x * factor))
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)


def hue(img: np.ndarray, shift: float) -> np.ndarray:
    """Stain batch: hue rotated by `shift` OpenCV units (0-179 scale)."""
    hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
    h = hsv[..., 0].astype(np.int16) + int(round(shift))
    hsv[..., 0] = np.mod(h, 180).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)


def defocus(img: np.ndarray, sigma: float) -> np.ndarray:
    """Focus: Gaussian blur, `sigma` in pixels of a 224-px image (scaled to this image)."""
    if sigma <= 0:
        return img
    s = sigma * img.shape[0] / 224.0
    return cv2.GaussianBlur(img, (0, 0), s)


def noise(img: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Sensor noise: additive Gaussian, `sigma` grey levels."""
    if sigma <= 0:
        return img
    n = rng.normal(0.0, sigma, img.shape).astype(np.float32)
    return np.clip(img.astype(np.float32) + n, 0, 255).astype(np.uint8)


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """Camera/PACS compression: re-encode as JPEG at `quality`."""
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR) if ok else img


def geometry(img: np.ndarray, angle: float = 0.0, scale: float = 1.0, flip: bool = False):
    """Orientation and magnification: rotate by `angle` degrees and zoom by `scale` about the
    centre, in one warp; the border is mirrored (smears continue beyond the field)."""
    h, w = img.shape[:2]
    if flip:
        img = img[:, ::-1]
    if angle == 0.0 and scale == 1.0:
        return np.ascontiguousarray(img)
    m = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), angle, scale)
    interp = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    return cv2.warpAffine(
        np.ascontiguousarray(img), m, (w, h), flags=interp, borderMode=cv2.BORDER_REFLECT_101
    )


def resolution(img: np.ndarray, factor: float) -> np.ndarray:
    """Camera resolution: the same field seen with `factor` times the pixels (factor < 1: fewer,
    upsampled back, i.e. a coarser sensor)."""
    if factor == 1.0:
        return img
    h, w = img.shape[:2]
    size = (max(8, int(round(w * factor))), max(8, int(round(h * factor))))
    interp = cv2.INTER_AREA if factor < 1.0 else cv2.INTER_CUBIC
    out = cv2.resize(img, size, interpolation=interp)
    if factor < 1.0:
        out = cv2.resize(out, (w, h), interpolation=cv2.INTER_LINEAR)
    return out


def random_acquisition(
    img: np.ndarray, rng: np.random.Generator, ranges: Ranges = RANGES, p: float = 0.5
) -> np.ndarray:
    """One random acquisition: each photometric change applied with probability `p`, geometry
    always (any angle, flip, magnification), in the order light meets the camera."""

    def on() -> bool:
        return rng.random() < p

    def u(lo_hi: tuple[float, float]) -> float:
        return float(rng.uniform(*lo_hi))

    def log_u(lo_hi: tuple[float, float]) -> float:
        return float(np.exp(rng.uniform(np.log(lo_hi[0]), np.log(lo_hi[1]))))

    out = geometry(
        img, u((0.0, 360.0)), log_u(ranges.magnification) if on() else 1.0, rng.random() < 0.5
    )
    if on():
        out = saturation(out, log_u(ranges.saturation))
    if on():
        out = hue(out, u((-ranges.hue, ranges.hue)))
    if on():
        out = defocus(out, u((0.0, ranges.blur_sigma)))
    if on():
        wb = ranges.white_balance
        out = white_balance(out, u((-wb, wb)), u((-wb, wb)))
    if on():
        lamp = exposure if rng.random() < ranges.linear_light else brightness
        out = lamp(out, log_u(ranges.brightness))
    if on():
        out = gamma(out, log_u(ranges.gamma))
    if on():
        out = noise(out, u((0.0, ranges.noise_sigma)), rng)
    if rng.random() < 0.3:
        out = resolution(out, log_u(ranges.resolution))
    if on():
        out = jpeg(out, int(rng.integers(ranges.jpeg_quality[0], ranges.jpeg_quality[1] + 1)))
    return out
