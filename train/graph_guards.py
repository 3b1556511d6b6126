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

The statistics are float definitions every ONNX runtime computes alike: CIE Lab and HSV of
the 2x2-averaged image (rounded to quarter levels, so every runtime agrees on each pixel's
thresholds) for colour and stain, the variance of a reflect-padded Laplacian of integer grey
levels at full and half size for sharpness; train.guard fits the reference set and threshold
on exactly these. The image is split into channels-first planes once, and each step works on
all three channels as one operator: onnxruntime spends a few microseconds on every operator,
and its Pow and tf2onnx's selects are slow (per-operator figures in benchmarks/RESULTS.md;
the guards' cost: `python benchmarks/stages.py`).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from keras import layers

from edge_infer.metadata import IMAGE_STAT_FAMILIES
from edge_infer.result import DECISION, REASON_CODES, STATUS_CODES, Reason
from edge_infer.site.stats import STAIN_SAT_MIN

#: the statistics, in the order of the `image_stats` output (named once, in the runtime:
#: edge_infer.metadata.IMAGE_STAT_FAMILIES). (Opponent colours, linear in RGB and so cheaper, were
#: tried: re-fitted, they flagged 48% of images defocused by sigma 6 instead of 90%, silent errors
#: 0.9% -> 3.2%.)
STAT_NAMES = tuple(IMAGE_STAT_FAMILIES)
#: a pixel counts as stained at HSV saturation >= STAIN_SAT_MIN (0-255: the runtime's site
#: statistics' number, edge_infer.site.stats). Unlike the site statistics, the graph bounds
#: neither hue nor value: re-bounding it changes every image statistic the guard was fitted on,
#: so it waits for a re-fit with a reason of its own.
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


#: f(X/Xn), f(Y), f(Z/Zn) -> OpenCV's 8-bit L, a, b (rows), and their offsets
_F_TO_LAB = np.array(
    [[0.0, 116.0 * 255.0 / 100.0, 0.0], [500.0, -500.0, 0.0], [0.0, 200.0, -200.0]], np.float32
)
_LAB_OFFSET = np.array([-16.0 * 255.0 / 100.0, 128.0, 128.0], np.float32)


def _lab(rgb: tf.Tensor) -> tf.Tensor:
    """CIE Lab (D65) on OpenCV's 8-bit scales (L*255/100, a+128, b+128), from 0-255 RGB
    channels-first [N, 3, P] to [N, 3, P]. All three channels go through each step together
    and the colour matrices are matrix products (fewer operators: onnxruntime spends a few
    microseconds on each); powers are exp(k log v) (its Pow is scalar code, four times slower).
    116 f(Y) - 16 is CIE's L on both sides of the knee (903.29 Y below it, not 903.3 Y)."""
    v = rgb / 255.0
    linear = tf.where(v <= 0.04045, v / 12.92, tf.exp(2.4 * tf.math.log((v + 0.055) / 1.055)))
    t = tf.matmul(tf.constant(_RGB_TO_XYZ_N.T), linear)
    cube_root = tf.exp(tf.math.log(tf.maximum(t, 1e-6)) * (1.0 / 3.0))
    f = tf.where(t > 0.008856, cube_root, 7.787 * t + 16.0 / 116.0)
    return tf.matmul(tf.constant(_F_TO_LAB), f) + _LAB_OFFSET[:, None]


#: OpenCV's grey weights (R, G, B)
_GREY_WEIGHTS = np.array([4899.0, 9617.0, 1868.0], np.float32) / 16384.0


def half_size(x: tf.Tensor) -> tf.Tensor:
    """2x2 means of NHWC x, in 0-255: colour, stain and the stained-cell check work at half the
    input size (a quarter of the pixels; cells are 10+ px wide there)."""
    # 0-255 means of four 8-bit values are quarter levels: rounding to them makes every
    # runtime agree exactly on the thresholds that follow (stained or not)
    return tf.round(tf.nn.avg_pool2d(x, 2, 2, "VALID") * 1020.0) * 0.25


def planes(x: tf.Tensor):
    """x [N, H, W, 3] -> channels-first x [N, 3, H, W] (0-1) and its half size [N, 3, H/2, W/2]
    in 0-255 quarter levels. One transpose: onnxruntime's pooling works channels-first, and
    planes taken off the channel axis are contiguous (the converter cancels the transposes
    around the pooling)."""
    t = tf.transpose(x, [0, 3, 1, 2])
    pooled = tf.transpose(half_size(tf.transpose(t, [0, 2, 3, 1])), [0, 3, 1, 2])
    return t, pooled


def _hsv(r, g, b) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """OpenCV's 8-bit HSV scales, in float, from 0-255 R, G, B planes: H 0-180, S 0-255, V 0-255."""
    v = tf.maximum(tf.maximum(r, g), b)
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


def _weighted_sum(weights: np.ndarray, planes: tf.Tensor) -> tf.Tensor:
    """sum_c weights[c] * planes[:, c] for channels-first [N, 3, H, W], as one matrix product
    (a tensordot over the channel axis would transpose the whole image first)."""
    shape = tf.shape(planes)
    flat = tf.reshape(planes, [shape[0], 3, -1])
    return tf.reshape(
        tf.matmul(tf.constant(weights[None, :]), flat), [shape[0], shape[2], shape[3]]
    )


def image_statistics(x: tf.Tensor, split=None, hsv=None) -> tf.Tensor:
    """[N, H, W, 3] RGB in [0, 1] -> [N, 10] statistics (STAT_NAMES). `split`, `hsv`: `planes`
    and `_hsv` of the image, when the caller has them already."""
    full, small = split if split is not None else planes(x)
    hsv = hsv if hsv is not None else _hsv(*tf.unstack(small, axis=1))
    pixels = tf.cast(tf.shape(small)[2] * tf.shape(small)[3], tf.float32)
    lab = _lab(tf.reshape(small, [tf.shape(small)[0], 3, -1]))
    lab_mean = tf.reduce_mean(lab, axis=2)
    lab_var = tf.reduce_mean(lab * lab, axis=2) - tf.square(lab_mean)
    h, s, _ = hsv
    stained = tf.cast(s >= float(STAIN_SAT_MIN), tf.float32)
    n_stained = tf.reduce_sum(stained, axis=[1, 2])
    hue_mean = tf.reduce_sum(h * stained, axis=[1, 2]) / tf.maximum(n_stained, 1.0)
    # grey levels rounded to integers, as an 8-bit camera image would have them (the rounding
    # noise floor is part of the sharpness statistic's scale), at full and half size
    gray = tf.round(_weighted_sum(_GREY_WEIGHTS * 255.0, full))
    half = tf.round(_weighted_sum(_GREY_WEIGHTS, small))
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
    h, s, v = hsv if hsv is not None else _hsv(*tf.unstack(planes(x)[1], axis=1))
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


_DECISION_REASONS = np.array([REASON_CODES.index(r) for r, _ in DECISION], np.int64)
_DECISION_STATUSES = np.array([STATUS_CODES.index(s) for _, s in DECISION], np.int64)


def decision(no_cell, image_ood, feature_ood, low):
    """(status code, reason code) per image, by edge_infer.result.DECISION: the first condition
    that holds decides (argmax returns the first maximum); one table lookup per output instead
    of nested selects (each a handful of operators)."""
    holds = {
        Reason.NO_CELL: no_cell,
        Reason.IMAGE: image_ood,
        Reason.FEATURES: feature_ood,
        Reason.LOW_CONFIDENCE: low,
        None: tf.ones_like(low),
    }
    conditions = tf.stack([holds[r] for r, _ in DECISION], axis=1)
    first = tf.argmax(tf.cast(conditions, tf.float32), axis=1)
    reason = tf.gather(tf.constant(_DECISION_REASONS), first)
    status = tf.gather(tf.constant(_DECISION_STATUSES), first)
    return status, reason


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
        uncertain_below: float | np.ndarray,
        floors: dict[str, float] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        # lower bounds of some statistics: under one, the image is out of distribution
        floors = floors or {}
        self.floor_index = [STAT_NAMES.index(n) for n in floors]
        self.floor_value = np.asarray(list(floors.values()), np.float32)
        self.spec = spec
        self.mean = np.asarray(mean, np.float32)
        self.whiten = np.asarray(whiten, np.float32)
        self.reference = np.asarray(reference, np.float32)
        self.reference_sq = (self.reference.astype(np.float64) ** 2).sum(1).astype(np.float32)
        self.image_threshold = float(image_threshold)
        self.feature_threshold = float(feature_threshold)
        # one threshold for all classes, or one per class (the answer's own applies)
        self.uncertain_below = np.atleast_1d(np.asarray(uncertain_below, np.float32))

    def call(self, x, probs, ood):
        split = planes(x)
        hsv = _hsv(*tf.unstack(split[1], axis=1))  # shared by the statistics and the cell check
        stats = image_statistics(x, split, hsv)
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
        if self.floor_index:
            under = tf.gather(stats, self.floor_index, axis=1) < self.floor_value[None, :]
            image_ood = tf.logical_or(image_ood, tf.reduce_any(under, axis=1))
        feature_ood = ood > self.feature_threshold
        if self.uncertain_below.size == 1:
            low = top < float(self.uncertain_below[0])
        else:
            low = top < tf.gather(tf.constant(self.uncertain_below), label)

        status, reason = decision(no_cell, image_ood, feature_ood, low)
        return stats, score, cells, status, reason, label
