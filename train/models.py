"""Model registry. Every model takes raw RGB pixels (float32, 0..255) on an input named "image",
rescales them with a layer inside the graph and ends in a softmax.

Only ops that convert cleanly to TFLite int8, ONNX (tf2onnx) and the Edge TPU are used:
Rescaling, Conv2D, DepthwiseConv2D, BatchNormalization (folded on export), ReLU/ReLU6, Add,
MaxPooling2D, GlobalAveragePooling2D, Dense, Softmax. No augmentation layers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edgeproof.errors import UsageError

INPUT_NAME = "image"
MIN_SIZE, MAX_SIZE = 16, 512
BN_MOMENTUM = 0.9  # Keras' 0.99 leaves the moving statistics near their init after a short run


@dataclass(frozen=True)
class ModelInfo:
    name: str
    description: str
    build: Callable[..., Any]
    rescale: tuple[float, float]  # (scale, offset) of the in-graph Rescaling layer


def _tiny_cnn(input_size: int, num_classes: int, alpha: float = 1.0):
    """The seed's Conv-Pool x3 + Dense, with BatchNorm so a few epochs are enough."""
    import keras
    from keras import layers

    width = [max(8, int(round(c * alpha))) for c in (16, 32, 64)]
    inputs = keras.Input((input_size, input_size, 3), name=INPUT_NAME)
    x = layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    for i, c in enumerate(width):
        x = layers.Conv2D(c, 3, padding="same", use_bias=False, name=f"conv{i + 1}")(x)
        x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"bn{i + 1}")(x)
        x = layers.ReLU(name=f"relu{i + 1}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{i + 1}")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dense(max(16, int(round(64 * alpha))), activation="relu", name="fc")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probs")(x)
    return keras.Model(inputs, outputs, name="tiny_cnn")


def _make_divisible(v: float, divisor: int = 8) -> int:
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


# (expansion t, output channels c, repeats n, first stride s), MobileNetV2's table, shortened.
_MBV2_BLOCKS = ((1, 16, 1, 1), (4, 24, 2, 2), (4, 32, 2, 2), (4, 64, 2, 2))


def _mobilenet_v2_tiny(input_size: int, num_classes: int, alpha: float = 1.0):
    """A MobileNetV2-style net: inverted residuals (1x1 expand, 3x3 depthwise, 1x1 linear project)."""
    import keras
    from keras import layers

    def cbr(x, filters, kernel, stride, name):
        x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=name)(x)
        x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
        return layers.ReLU(6.0, name=f"{name}_relu6")(x)

    inputs = keras.Input((input_size, input_size, 3), name=INPUT_NAME)
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="rescale")(inputs)
    x = cbr(x, _make_divisible(16 * alpha), 3, 2, "stem")
    block = 0
    for t, c, n, s in _MBV2_BLOCKS:
        out_c = _make_divisible(c * alpha)
        for i in range(n):
            stride = s if i == 0 else 1
            in_c = x.shape[-1]
            name = f"block{block}"
            y = cbr(x, in_c * t, 1, 1, f"{name}_expand") if t != 1 else x
            y = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False,
                                       name=f"{name}_dw")(y)
            y = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_dw_bn")(y)
            y = layers.ReLU(6.0, name=f"{name}_dw_relu6")(y)
            y = layers.Conv2D(out_c, 1, use_bias=False, name=f"{name}_project")(y)
            y = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_project_bn")(y)
            x = layers.Add(name=f"{name}_add")([x, y]) if stride == 1 and in_c == out_c else y
            block += 1
    x = cbr(x, _make_divisible(128 * max(1.0, alpha)), 1, 1, "head")
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probs")(x)
    return keras.Model(inputs, outputs, name=f"mobilenet_v2_tiny_{alpha:g}")


MODELS: dict[str, ModelInfo] = {
    "tiny_cnn": ModelInfo("tiny_cnn", "Conv-BN-ReLU-MaxPool x3, global average pool, Dense 64, softmax",
                          _tiny_cnn, (1.0 / 255.0, 0.0)),
    "mobilenet_v2_tiny": ModelInfo(
        "mobilenet_v2_tiny",
        "MobileNetV2-style inverted residual net (ReLU6, BatchNorm), width multiplier alpha",
        _mobilenet_v2_tiny, (1.0 / 127.5, -1.0)),
}


def build_model(name: str, input_size: int, num_classes: int, alpha: float = 1.0):
    """Build a registered model; UsageError for an unknown name or an unusable size/alpha."""
    if name not in MODELS:
        raise UsageError(f"unknown model '{name}'; valid: {', '.join(MODELS)}")
    if not MIN_SIZE <= input_size <= MAX_SIZE:
        raise UsageError(f"image size {input_size} is out of range; use {MIN_SIZE}..{MAX_SIZE} pixels")
    if not 0.1 <= alpha <= 4.0:
        raise UsageError(f"alpha {alpha} is out of range; use a width multiplier between 0.1 and 4.0")
    if num_classes < 2:
        raise UsageError(f"{num_classes} class(es): a classifier needs at least 2")
    return MODELS[name].build(input_size, num_classes, alpha)


def in_graph_preprocess(name: str) -> dict[str, Any]:
    """What the graph itself does to the raw pixels (recorded in preprocess.json's `in_graph`)."""
    scale, offset = MODELS[name].rescale
    return {"rescaling": {"scale": scale, "offset": offset}}


def recalibrate_batchnorm(model, images, batch_size: int = 128, max_images: int = 1024, seed: int = 0) -> int:
    """Replace BatchNorm moving statistics by the average over the training images ("precise BN").

    A short run leaves exponential moving averages far from the real statistics, so inference
    disagrees with training; averaging the batch statistics of (up to) `max_images` un-augmented
    training images fixes that. Returns the number of images used (0 when the model has no BN).
    """
    import keras
    import numpy as np

    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    n = min(len(images), max_images)
    if not bns or n == 0:
        return 0
    pick = np.sort(np.random.default_rng(seed).permutation(len(images))[:n])
    chunks = [pick[i:i + batch_size] for i in range(0, n, batch_size)]
    if len(chunks) > 1 and len(chunks[-1]) < batch_size // 2:
        chunks = chunks[:-1]  # a tiny last batch would give noisy statistics equal weight
    saved = [layer.momentum for layer in bns]
    try:
        for k, idx in enumerate(chunks, start=1):
            for layer in bns:
                layer.momentum = (k - 1) / k  # running mean of the per-batch statistics
            model(np.asarray(images[idx], np.float32), training=True)
    finally:
        for layer, m in zip(bns, saved, strict=True):
            layer.momentum = m
    return int(sum(len(c) for c in chunks))
