"""The out-of-distribution guards and the decision, as TensorFlow ops that export into the ONNX
graph, so the model file alone makes the whole decision (any ONNX runtime, any language).

Input: the network's input, NHWC RGB in [0, 1] (area-resized, acquisition-normalised, values
k/255). Outputs beside `probabilities` and `ood_score`:
  image_stats [N, 10]  colour, stain and sharpness statistics (STAT_NAMES)
  image_score [N]      squared distance to the nearest training image in whitened statistics
  cell_fraction [N]    share of violet-magenta stained pixels after a 3x3 opening
  status [N] int64     index into STATUS_CODES
  reason [N] int64     index into REASON_CODES
  label_index [N] int64 the most probable class

The statistics are float definitions every ONNX runtime computes alike: CIE Lab (sRGB
linearised by a 256-entry table) and HSV for colour and stain, OpenCV's integer grey, a
reflect-padded Laplacian and its 2x2 reduction for sharpness; train.guard fits the reference
set and threshold on exactly these.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from keras import layers

from edge_infer.result import Reason, Status

#: the statistics, in the order of the `image_stats` output: colour (CIE Lab means and spreads),
#: the stain's hue and share, sharpness at two scales. (Opponent colours, linear in RGB and so
#: cheaper, were tried: re-fitted, they flagged 48% of images defocused by sigma 6 instead of
#: 90%, silent errors 0.9% -> 3.2%.)
STAT_NAMES = (
    "L_mean",
    "a_mean",
    "b_mean",
    "L_std",
    "a_std",
    "b_std",
    "stain_hue_mean",
    "stain_share",
    "log_laplacian_var",
    "log_laplacian_var_half",
)
#: the `status` and `reason` outputs' codes (their index), written into the metadata
STATUS_CODES = (Status.OK, Status.UNCERTAIN, Status.OUT_OF_DISTRIBUTION)
REASON_CODES = (None, Reason.NO_CELL, Reason.IMAGE, Reason.FEATURES, Reason.LOW_CONFIDENCE)
#: a pixel counts as stained (the image statistics) at HSV saturation >= this (0-255)
STAIN_SAT_MIN = 50.0
#: linear RGB -> XYZ relative to the D65 white (columns: X/Xn, Y, Z/Zn)
_RGB_TO_XYZ_N = (
    np.array(
        [
            [0.412453, 0.357580, 0.180423],
            [0.212671, 0.715160, 0.072169],
            [0.019334, 0.119193, 0.950227],
        ]
    )
    / np.array([0.950456, 1.0, 1.088754])[:, None]
).T.astype(np.float32)


def _lab(r: tf.Tensor, g: tf.Tensor, b: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """CIE Lab (D65) on OpenCV's 8-bit scales (L*255/100, a+128, b+128), from 0-255 R, G, B
    planes (separate planes: slicing a 3-wide last axis is slow in onnxruntime)."""

    def linear(c):
        v = c / 255.0
        return tf.where(v <= 0.04045, v / 12.92, tf.pow((v + 0.055) / 1.055, 2.4))

    lr, lg, lb = linear(r), linear(g), linear(b)
    m = _RGB_TO_XYZ_N  # columns: X/Xn, Y, Z/Zn

    def f(t):
        return tf.where(
            t > 0.008856, tf.pow(tf.maximum(t, 1e-6), 1.0 / 3.0), 7.787 * t + 16.0 / 116.0
        )

    x = lr * m[0, 0] + lg * m[1, 0] + lb * m[2, 0]
    y = lr * m[0, 1] + lg * m[1, 1] + lb * m[2, 1]
    z = lr * m[0, 2] + lg * m[1, 2] + lb * m[2, 2]
    fx, fy, fz = f(x), f(y), f(z)
    lightness = tf.where(y > 0.008856, 116.0 * fy - 16.0, 903.3 * y)
    return lightness * (255.0 / 100.0), 500.0 * (fx - fy) + 128.0, 200.0 * (fy - fz) + 128.0


def half_size(u: tf.Tensor) -> tf.Tensor:
    """2x2 means: colour, stain and the stained-cell check work at half the input size (a
    quarter of the pixels; cells are 10+ px wide there), which keeps the guards' cost in the
    graph near what OpenCV's 8-bit code cost at full size."""
    return tf.nn.avg_pool2d(u, 2, 2, "VALID")


def _hsv(u: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """OpenCV's 8-bit HSV scales, in float, from 0-255 RGB: H 0-180, S 0-255, V 0-255."""
    r, g, b = tf.unstack(u, axis=-1)
    v = tf.maximum(tf.maximum(r, g), b)  # not a reduction over the 3-wide last axis: slow
    diff = v - tf.minimum(tf.minimum(r, g), b)
    safe = tf.maximum(diff, 1e-6)
    h = tf.where(
        tf.equal(v, r),
        60.0 * (g - b) / safe,
        tf.where(tf.equal(v, g), 120.0 + 60.0 * (b - r) / safe, 240.0 + 60.0 * (r - g) / safe),
    )
    h = tf.where(h < 0, h + 360.0, h) * 0.5
    s = 255.0 * diff / tf.maximum(v, 1e-6)
    return h, s, v


def _laplacian_log_var(gray: tf.Tensor) -> tf.Tensor:
    """log(1 + var) of the 4-neighbour Laplacian, borders reflected (OpenCV's default)."""
    g = tf.pad(gray, [[0, 0], [1, 1], [1, 1]], mode="REFLECT")
    # four shifted views, not a 1-channel convolution (slow in onnxruntime)
    lap = g[:, :-2, 1:-1] + g[:, 2:, 1:-1] + g[:, 1:-1, :-2] + g[:, 1:-1, 2:] - 4.0 * gray
    mean = tf.reduce_mean(lap, axis=[1, 2], keepdims=True)
    var = tf.reduce_mean(tf.square(lap - mean), axis=[1, 2])
    return tf.math.log(1.0 + var)  # not log1p: ONNX has no such op


def eight_bit(x: tf.Tensor) -> tf.Tensor:
    """The 0-255 values the runtime fed in (x = k/255)."""
    return tf.round(x * 255.0)


def image_statistics(x: tf.Tensor, hsv=None) -> tf.Tensor:
    """[N, H, W, 3] RGB in [0, 1] -> [N, 10] statistics (STAT_NAMES). `hsv`: `_hsv` of the
    image, when the caller has it already."""
    u = eight_bit(x)
    small = half_size(u)
    pixels = tf.cast(tf.shape(small)[1] * tf.shape(small)[2], tf.float32)
    lab_planes = _lab(*tf.unstack(small, axis=-1))
    lab_mean = tf.stack([tf.reduce_mean(c, axis=[1, 2]) for c in lab_planes], -1)
    lab_sq = tf.stack([tf.reduce_mean(c * c, axis=[1, 2]) for c in lab_planes], -1)
    lab_var = lab_sq - tf.square(lab_mean)
    h, s, _ = hsv if hsv is not None else _hsv(small)
    stained = tf.cast(s >= STAIN_SAT_MIN, tf.float32)
    n_stained = tf.reduce_sum(stained, axis=[1, 2])
    hue_mean = tf.reduce_sum(h * stained, axis=[1, 2]) / tf.maximum(n_stained, 1.0)
    # OpenCV's grey: (R*4899 + G*9617 + B*1868 + 8192) >> 14, and its 2x area reduction
    gray = tf.floor(tf.tensordot(u, tf.constant([4899.0, 9617.0, 1868.0]), 1) / 16384.0 + 0.5)
    quad = tf.nn.avg_pool2d(gray[..., None], 2, 2, "VALID")[..., 0] * 4.0
    half = tf.floor((quad + 2.0) / 4.0)
    return tf.concat(
        [
            lab_mean,
            tf.sqrt(tf.maximum(lab_var, 0.0)),
            tf.stack(
                [
                    hue_mean,
                    n_stained / pixels,
                    _laplacian_log_var(gray),
                    _laplacian_log_var(half),
                ],
                -1,
            ),
        ],
        axis=-1,
    )


def cell_fraction(x: tf.Tensor, spec, hsv=None) -> tf.Tensor:
    """Share of the half-size image in the spec's violet-magenta range (its cell_* hue,
    saturation and value bounds), after a 3x3 opening that drops isolated specks."""
    h, s, v = hsv if hsv is not None else _hsv(half_size(eight_bit(x)))
    m = (
        (h >= spec.cell_hue_min)
        & (h <= spec.cell_hue_max)
        & (s >= spec.cell_sat_min)
        & (v >= spec.val_min)
    )
    m = tf.cast(m, tf.float32)[..., None]
    k = max(1, spec.open_kernel)
    eroded = -tf.nn.max_pool2d(-m, k, 1, "SAME")
    opened = tf.nn.max_pool2d(eroded, k, 1, "SAME")
    return tf.reduce_mean(opened, axis=[1, 2, 3])


class GuardHead(layers.Layer):
    """Image statistics, their nearest-neighbour score, the stained share and the decision,
    with the fitted guard and every threshold as constants of the graph."""

    def __init__(
        self,
        spec,
        mean: np.ndarray,
        whiten: np.ndarray,
        reference: np.ndarray,
        image_threshold: float,
        feature_threshold: float,
        uncertain_below: float,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.spec = spec
        self.mean = np.asarray(mean, np.float32)
        self.whiten = np.asarray(whiten, np.float32)
        self.reference = np.asarray(reference, np.float32)
        self.reference_sq = (self.reference.astype(np.float64) ** 2).sum(1).astype(np.float32)
        self.image_threshold = float(image_threshold)
        self.feature_threshold = float(feature_threshold)
        self.uncertain_below = float(uncertain_below)

    def call(self, x, probs, ood):
        hsv = _hsv(half_size(eight_bit(x)))  # shared by the statistics and the cell check
        stats = image_statistics(x, hsv)
        z = tf.matmul(stats - self.mean, self.whiten)
        # |r|^2 - 2 r.z + |z|^2: one matrix product (an images x references x statistics
        # difference array cost 0.37 ms per image); in float32 it is exact to ~1e-5 absolute,
        # far below the threshold's scale (the parity gate measures it)
        d = self.reference_sq[None, :] - 2.0 * tf.matmul(z, self.reference, transpose_b=True)
        score = tf.maximum(tf.reduce_min(d, axis=1) + tf.reduce_sum(z * z, axis=1), 0.0)
        cells = cell_fraction(x, self.spec, hsv)
        ood = tf.reshape(ood, [-1])
        label = tf.argmax(probs, axis=1)
        top = tf.reduce_max(probs, axis=1)
        no_cell = cells < self.spec.min_cell_fraction
        image_ood = score > self.image_threshold
        feature_ood = ood > self.feature_threshold
        low = top < self.uncertain_below

        def code(values, item):
            return tf.constant(values.index(item), tf.int64)

        reason = tf.where(
            no_cell,
            code(REASON_CODES, Reason.NO_CELL),
            tf.where(
                image_ood,
                code(REASON_CODES, Reason.IMAGE),
                tf.where(
                    feature_ood,
                    code(REASON_CODES, Reason.FEATURES),
                    tf.where(
                        low, code(REASON_CODES, Reason.LOW_CONFIDENCE), code(REASON_CODES, None)
                    ),
                ),
            ),
        )
        status = tf.where(
            no_cell | image_ood | feature_ood,
            code(STATUS_CODES, Status.OUT_OF_DISTRIBUTION),
            tf.where(low, code(STATUS_CODES, Status.UNCERTAIN), code(STATUS_CODES, Status.OK)),
        )
        return stats, score, cells, status, reason, label
