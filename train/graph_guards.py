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

The statistics are float definitions (CIE Lab and HSV from the sRGB values, OpenCV's integer
grey weights, a reflect-padded Laplacian, a 2x2 average for the half scale) that every ONNX
runtime computes alike; train.guard fits the reference set and threshold on exactly these.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from keras import layers

from edge_infer.result import Reason, Status

#: the statistics, in the order of the `image_stats` output
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

_RGB_TO_XYZ = np.array(
    [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]]
)
_WHITE = np.array([0.950456, 1.0, 1.088754])


def _hsv(x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """OpenCV's 8-bit HSV scales, in float: H 0-180, S 0-255, V 0-255."""
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    v = tf.maximum(tf.maximum(r, g), b)
    mn = tf.minimum(tf.minimum(r, g), b)
    diff = v - mn
    safe = tf.where(diff > 0, diff, tf.ones_like(diff))
    h = tf.where(
        tf.equal(v, r),
        60.0 * (g - b) / safe,
        tf.where(tf.equal(v, g), 120.0 + 60.0 * (b - r) / safe, 240.0 + 60.0 * (r - g) / safe),
    )
    h = tf.where(diff > 0, h, tf.zeros_like(h))
    h = tf.where(h < 0, h + 360.0, h) / 2.0
    s = tf.where(v > 0, 255.0 * diff / tf.where(v > 0, v, tf.ones_like(v)), tf.zeros_like(v))
    return h, s, 255.0 * v


def _lab(x: tf.Tensor) -> tf.Tensor:
    """CIE Lab (D65) on OpenCV's 8-bit scales: L*255/100, a+128, b+128."""
    lin = tf.where(x <= 0.04045, x / 12.92, tf.pow((x + 0.055) / 1.055, 2.4))
    xyz = tf.tensordot(lin, tf.constant((_RGB_TO_XYZ / _WHITE[:, None]).T, tf.float32), 1)
    f = tf.where(
        xyz > 0.008856, tf.pow(tf.maximum(xyz, 1e-12), 1.0 / 3.0), 7.787 * xyz + 16.0 / 116.0
    )
    y = xyz[..., 1]
    lightness = tf.where(y > 0.008856, 116.0 * f[..., 1] - 16.0, 903.3 * y)
    a = 500.0 * (f[..., 0] - f[..., 1])
    b = 200.0 * (f[..., 1] - f[..., 2])
    return tf.stack([lightness * 255.0 / 100.0, a + 128.0, b + 128.0], axis=-1)


def _laplacian_log_var(gray: tf.Tensor) -> tf.Tensor:
    """log(1 + var) of the 4-neighbour Laplacian, borders reflected (OpenCV's default)."""
    g = tf.pad(gray[..., None], [[0, 0], [1, 1], [1, 1], [0, 0]], mode="REFLECT")
    kernel = tf.constant([[0, 1, 0], [1, -4, 1], [0, 1, 0]], tf.float32)[:, :, None, None]
    lap = tf.nn.conv2d(g, kernel, strides=1, padding="VALID")[..., 0]
    mean = tf.reduce_mean(lap, axis=[1, 2], keepdims=True)
    var = tf.reduce_mean(tf.square(lap - mean), axis=[1, 2])
    return tf.math.log(1.0 + var)  # not log1p: ONNX has no such op


def image_statistics(x: tf.Tensor) -> tf.Tensor:
    """[N, H, W, 3] RGB in [0, 1] -> [N, 10] statistics (STAT_NAMES)."""
    x = tf.round(x * 255.0) / 255.0  # the 8-bit values the runtime fed in
    lab = _lab(x)
    lab_mean = tf.reduce_mean(lab, axis=[1, 2])
    lab_std = tf.sqrt(tf.reduce_mean(tf.square(lab - lab_mean[:, None, None, :]), axis=[1, 2]))
    h, s, _ = _hsv(x)
    stained = tf.cast(s >= STAIN_SAT_MIN, tf.float32)
    n_stained = tf.reduce_sum(stained, axis=[1, 2])
    hue_mean = tf.reduce_sum(h * stained, axis=[1, 2]) / tf.maximum(n_stained, 1.0)
    share = n_stained / tf.cast(tf.shape(x)[1] * tf.shape(x)[2], tf.float32)
    u = tf.round(x * 255.0)  # OpenCV's grey: (R*4899 + G*9617 + B*1868 + 8192) >> 14
    gray = tf.floor(
        (u[..., 0] * 4899.0 + u[..., 1] * 9617.0 + u[..., 2] * 1868.0 + 8192.0) / 16384.0
    )
    # OpenCV's 2x area reduction of 8-bit grey: (a + b + c + d + 2) >> 2
    quad = tf.nn.avg_pool2d(gray[..., None], 2, 2, "VALID")[..., 0] * 4.0
    half = tf.floor((quad + 2.0) / 4.0)
    return tf.concat(
        [
            lab_mean,
            lab_std,
            tf.stack([hue_mean, share, _laplacian_log_var(gray), _laplacian_log_var(half)], -1),
        ],
        axis=-1,
    )


def cell_fraction(x: tf.Tensor, spec) -> tf.Tensor:
    """Share of pixels in the spec's violet-magenta range (its cell_* hue, saturation and
    value bounds), after a 3x3 opening that drops isolated specks."""
    x = tf.round(x * 255.0) / 255.0
    h, s, v = _hsv(x)
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
        self.image_threshold = float(image_threshold)
        self.feature_threshold = float(feature_threshold)
        self.uncertain_below = float(uncertain_below)

    def call(self, x, probs, ood):
        stats = image_statistics(x)
        z = tf.matmul(stats - self.mean, self.whiten)
        # differences, not |r|^2 - 2 r.z + |z|^2: in float32 that form loses the small
        # distances near the threshold to cancellation
        diff = z[:, None, :] - self.reference[None, :, :]
        score = tf.reduce_min(tf.reduce_sum(diff * diff, axis=2), axis=1)
        cells = cell_fraction(x, self.spec)
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
