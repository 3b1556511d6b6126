"""The CNN: a small functional Keras model designed for a 2-core microscope PC.

Pixels are spent late: a stride-2 stem halves the input (160 px to 80 px) at once, then
depthwise-separable blocks with residual connections widen as the resolution falls. BatchNorm
momentum is 0.9 so the moving statistics used in inference mode catch up within a short
training.
"""

from __future__ import annotations

import keras
from keras import layers

from edge_infer.metadata import INPUT_NAME

BN_MOMENTUM = 0.9
#: the layers export and the guards read: pooled features (the out-of-distribution guard) and
#: logits (temperature scaling)
FEATURES_LAYER = "features"
LOGITS_LAYER = "logits"


def _conv_bn(x, filters: int, kernel: int = 3, stride: int = 1, name: str = ""):
    x = layers.Conv2D(
        filters, kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_conv"
    )(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _sep_block(x, filters: int, stride: int = 1, name: str = ""):
    """Depthwise 3x3 -> BN -> ReLU -> pointwise 1x1 -> BN (+ residual) -> ReLU."""
    shortcut = x
    y = layers.DepthwiseConv2D(
        3, strides=stride, padding="same", use_bias=False, name=f"{name}_dw"
    )(x)
    y = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_dw_bn")(y)
    y = layers.ReLU(name=f"{name}_dw_relu")(y)
    y = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_pw")(y)
    y = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_pw_bn")(y)
    if stride == 1 and shortcut.shape[-1] == filters:
        y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.ReLU(name=f"{name}_relu")(y)


#: (filters, stride) per separable block after the stem
STAGES: tuple[tuple[int, int], ...] = (
    (32, 1),
    (64, 2),
    (64, 1),
    (128, 2),
    (128, 1),
    (192, 2),
    (192, 1),
    (256, 2),
    (256, 1),
)


def build_model(
    input_size: int = 128,
    n_classes: int = 4,
    width: float = 1.0,
    dropout: float = 0.2,
    stem: int = 24,
) -> keras.Model:
    """Functional model image -> softmax; the layers 'features' and 'logits' are named so the
    exporter can reach the pooled features (for the out-of-distribution guard) and the logits
    (for temperature scaling)."""

    def w(c: int) -> int:
        return max(8, int(round(c * width / 8)) * 8)

    inp = keras.Input((input_size, input_size, 3), name=INPUT_NAME)
    x = _conv_bn(inp, w(stem), stride=2, name="stem")
    for i, (filters, stride) in enumerate(STAGES):
        x = _sep_block(x, w(filters), stride=stride, name=f"b{i}")
    feats = layers.GlobalAveragePooling2D(name=FEATURES_LAYER)(x)
    x = layers.Dropout(dropout, name="dropout")(feats)
    logits = layers.Dense(n_classes, name=LOGITS_LAYER)(x)
    probs = layers.Softmax(name="probabilities")(logits)
    return keras.Model(inp, probs, name="all_cnn")


def count_flops(model: keras.Model) -> int:
    """Multiply-accumulates of the convolutions and dense layers (batch 1), the cost that is
    paid again for every image on the microscope PC."""
    macs = 0
    for layer in model.layers:
        out = layer.output.shape
        if isinstance(layer, layers.DepthwiseConv2D):
            k = layer.kernel_size[0] * layer.kernel_size[1]
            macs += out[1] * out[2] * out[3] * k
        elif isinstance(layer, layers.Conv2D):
            k = layer.kernel_size[0] * layer.kernel_size[1] * layer.input.shape[-1]
            macs += out[1] * out[2] * out[3] * k
        elif isinstance(layer, layers.Dense):
            macs += layer.input.shape[-1] * out[-1]
    return int(macs)
