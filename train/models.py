"""Model registry: two small CNNs and a table of keras.applications backbones (BACKBONES).

Every model takes raw RGB pixels (float32, 0..255) on an input named "image", does its
preprocessing with layers inside the graph (so the contract is exact) and ends in a softmax.
The small models use only ops that convert cleanly to TFLite int8, ONNX (tf2onnx) and the Edge
TPU: Rescaling, Conv2D, DepthwiseConv2D, BatchNormalization (folded on export), ReLU/ReLU6, Add,
MaxPooling2D, GlobalAveragePooling2D, Dense, Softmax. No augmentation layers.

Backbones are transfer-learned as the Keras guide does it (`transfer_plan`): with pretrained
weights (--weights imagenet|FILE) the backbone is frozen while the new head trains, then its top
layers are fine-tuned at a tenth of the learning rate (BatchNormalization stays frozen); with
--weights none every layer trains from the start.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeproof.errors import UsageError

if TYPE_CHECKING:
    from edgeproof.train.loop import Phase

INPUT_NAME = "image"
MIN_SIZE, MAX_SIZE = 16, 512
BN_MOMENTUM = 0.9  # Keras' 0.99 leaves the moving statistics near their init after a short run


@dataclass(frozen=True)
class ModelInfo:
    name: str
    description: str
    build: Callable[..., Any]
    rescale: tuple[float, float] | None  # (scale, offset) of the in-graph Rescaling layer (small models)
    backbone: Backbone | None = None


@dataclass(frozen=True)
class Backbone:
    """A keras.applications architecture and how its preprocessing goes inside the graph.

    preprocess: "own" (the application rescales itself, e.g. include_preprocessing=True), "tf"
    (x / 127.5 - 1), "torch" (x / 255, ImageNet mean/std), "caffe" (RGB -> BGR, ImageNet mean subtracted).
    """

    app: str  # keras.applications attribute
    preprocess: str
    alpha: bool = False  # takes a width multiplier
    kwargs: dict = field(default_factory=dict)
    min_size: int = 32


WEIGHTS = ("imagenet", "none")  # or the path of a weights file (the backbone's, without its top)
FINE_TUNE_FRACTION = 0.3  # of the backbone's layers, from the top, trained in the fine-tuning phase
FINE_TUNE_LR_FACTOR = 0.1
HEAD_LAYERS = ("gap", "head_dropout", "probs")
DOWNLOAD_TIMEOUT_S = 20  # per socket operation of Keras' weights download
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


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


BACKBONES: dict[str, Backbone] = {
    "mobilenet": Backbone("MobileNet", "tf", alpha=True),
    "mobilenet_v2": Backbone("MobileNetV2", "tf", alpha=True),
    "mobilenet_v3_small": Backbone("MobileNetV3Small", "own", alpha=True, kwargs={"include_preprocessing": True}),
    "mobilenet_v3_large": Backbone("MobileNetV3Large", "own", alpha=True, kwargs={"include_preprocessing": True}),
    "efficientnet_b0": Backbone("EfficientNetB0", "own"),
    "efficientnetv2_b0": Backbone("EfficientNetV2B0", "own", kwargs={"include_preprocessing": True}),
    "resnet50": Backbone("ResNet50", "caffe"),
    "resnet50_v2": Backbone("ResNet50V2", "tf"),
    "densenet121": Backbone("DenseNet121", "torch"),
    "nasnet_mobile": Backbone("NASNetMobile", "tf"),
    "vgg16": Backbone("VGG16", "caffe"),
    "convnext_tiny": Backbone("ConvNeXtTiny", "own", kwargs={"include_preprocessing": True}),
}


def _preprocess_layers(x, mode: str):
    """The backbone's preprocess_input as serializable layers on raw 0..255 RGB."""
    import numpy as np
    from keras import layers

    if mode == "tf":
        return layers.Rescaling(1.0 / 127.5, offset=-1.0, name="pre_rescale")(x)
    if mode == "torch":
        x = layers.Rescaling(1.0 / 255.0, name="pre_rescale")(x)
        return layers.Normalization(mean=_IMAGENET_MEAN, variance=[s * s for s in _IMAGENET_STD],
                                    name="pre_normalize")(x)
    if mode == "caffe":  # a fixed 1x1 convolution: channel flip and mean subtraction, folded into one op
        conv = layers.Conv2D(3, 1, name="pre_caffe", trainable=False)
        y = conv(x)
        kernel = np.zeros((1, 1, 3, 3), np.float32)
        for out_c, in_c in enumerate((2, 1, 0)):
            kernel[0, 0, in_c, out_c] = 1.0
        conv.set_weights([kernel, -np.asarray(_CAFFE_MEAN_BGR, np.float32)])
        return y
    if mode == "own":
        return x
    raise ValueError(f"unknown preprocessing mode {mode!r}")  # a table entry, not user input


def check_weights(name: str, weights: str) -> None:
    """--weights fits the model: imagenet/none/an existing file, and only for backbones."""
    if MODELS[name].backbone is None:
        if weights != "none":
            raise UsageError(f"--weights {weights}: {name} is trained from scratch; --weights applies to the "
                             f"keras.applications backbones ({', '.join(BACKBONES)})")
        return
    _weights_arg(weights)


def _weights_arg(weights: str) -> str | None:
    if weights == "none":
        return None
    if weights == "imagenet":
        return "imagenet"
    path = Path(weights)
    if not path.is_file():
        raise UsageError(f"--weights '{weights}': no such file; give imagenet, none, or a weights file saved "
                         "with backbone.save_weights('x.weights.h5') (the backbone without its top)")
    return str(path)


def _backbone_model(name: str, input_size: int, num_classes: int, alpha: float, weights: str = "none"):
    """Input -> in-graph preprocessing -> keras.applications backbone (no top) -> GAP -> dropout -> softmax.

    The backbone is built on the preprocessed tensor, so its layers are the model's own layers (BatchNorm
    recalibration and per-layer triage see them).
    """
    import contextlib
    import socket
    import sys

    import keras
    from keras import layers

    bb = BACKBONES[name]
    if input_size < bb.min_size:
        raise UsageError(f"--img-size {input_size} is too small for {name}; use {bb.min_size} or more")
    if not bb.alpha and alpha != 1.0:
        with_alpha = ", ".join(n for n, b in BACKBONES.items() if b.alpha)
        raise UsageError(f"--alpha {alpha:g}: {name} has no width multiplier; --alpha applies to {with_alpha}")
    kwargs = dict(bb.kwargs, include_top=False, weights=_weights_arg(weights))
    if bb.alpha:
        kwargs["alpha"] = alpha
    inputs = keras.Input((input_size, input_size, 3), name=INPUT_NAME)
    x = _preprocess_layers(inputs, bb.preprocess)
    timeout = socket.getdefaulttimeout()
    try:  # Keras prints "Downloading data from ..." on stdout: keep stdout for --json
        socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)  # urllib has no timeout of its own: never hang
        with contextlib.redirect_stdout(sys.stderr):
            base = getattr(keras.applications, bb.app)(input_tensor=x, **kwargs)
    except UsageError:
        raise
    except Exception as exc:  # noqa: BLE001 - a download or weights-file failure: one line
        raise _weights_error(name, weights, exc) from None
    finally:
        socket.setdefaulttimeout(timeout)
    x = layers.GlobalAveragePooling2D(name="gap")(base.output)
    x = layers.Dropout(0.2, name="head_dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probs")(x)
    return keras.Model(inputs, outputs, name=name)


def _weights_error(name: str, weights: str, exc: BaseException) -> UsageError:
    text = " ".join(str(exc).split())
    if weights == "imagenet":
        return UsageError(f"--weights imagenet: Keras could not download the {name} ImageNet weights (it needs the "
                          f"network: {text[:160]}); offline, use --weights FILE (a weights file of the backbone) or "
                          "--weights none (train from scratch)")
    return UsageError(f"--weights '{weights}' does not fit {name} without its top ({type(exc).__name__}: "
                      f"{text[:160]}); save it with the same architecture and alpha, include_top=False")


def _backbone_builder(name: str) -> Callable[..., Any]:
    return lambda input_size, num_classes, alpha=1.0, weights="none": _backbone_model(
        name, input_size, num_classes, alpha, weights)


MODELS: dict[str, ModelInfo] = {
    "tiny_cnn": ModelInfo("tiny_cnn", "Conv-BN-ReLU-MaxPool x3, global average pool, Dense 64, softmax",
                          _tiny_cnn, (1.0 / 255.0, 0.0)),
    "mobilenet_v2_tiny": ModelInfo(
        "mobilenet_v2_tiny",
        "MobileNetV2-style inverted residual net (ReLU6, BatchNorm), width multiplier alpha",
        _mobilenet_v2_tiny, (1.0 / 127.5, -1.0)),
    **{name: ModelInfo(name, f"keras.applications.{bb.app} backbone (preprocessing '{bb.preprocess}' in the "
                       "graph), global average pool, dropout, softmax; --weights imagenet|none|FILE",
                       _backbone_builder(name), None, bb)
       for name, bb in BACKBONES.items()},
}


def build_model(name: str, input_size: int, num_classes: int, alpha: float = 1.0, weights: str = "none"):
    """Build a registered model; UsageError for an unknown name or an unusable size/alpha/weights."""
    if name not in MODELS:
        raise UsageError(f"unknown model '{name}'; valid: {', '.join(MODELS)}")
    if not MIN_SIZE <= input_size <= MAX_SIZE:
        raise UsageError(f"image size {input_size} is out of range; use {MIN_SIZE}..{MAX_SIZE} pixels")
    if not 0.1 <= alpha <= 4.0:
        raise UsageError(f"alpha {alpha} is out of range; use a width multiplier between 0.1 and 4.0")
    if num_classes < 2:
        raise UsageError(f"{num_classes} class(es): a classifier needs at least 2")
    check_weights(name, weights)
    if MODELS[name].backbone is not None:
        return MODELS[name].build(input_size, num_classes, alpha, weights)
    return MODELS[name].build(input_size, num_classes, alpha)


def in_graph_preprocess(name: str) -> dict[str, Any]:
    """What the graph itself does to the raw pixels (recorded in preprocess.json's `in_graph`)."""
    info = MODELS[name]
    if info.backbone is not None:
        return {"backbone": {"application": info.backbone.app, "preprocessing": info.backbone.preprocess}}
    scale, offset = info.rescale
    return {"rescaling": {"scale": scale, "offset": offset}}


def transfer_plan(name: str, weights: str, epochs: int, lr: float) -> tuple[Phase, ...]:
    """One phase (everything trains) unless a backbone starts from pretrained weights: then the head
    alone first (half the epochs, at least one), then the backbone's top layers too at lr / 10."""
    from functools import partial

    from edgeproof.train.loop import Phase

    def phase(n: int, rate: float, part: str) -> Phase:
        return Phase(n, float(rate), label=part, select=partial(set_trainable, part=part))

    if MODELS[name].backbone is None or weights == "none":
        return (phase(int(epochs), lr, "all"),)
    head_epochs = max(1, int(epochs) // 2)
    plan = [phase(head_epochs, lr, "head")]
    if int(epochs) > head_epochs:
        plan.append(phase(int(epochs) - head_epochs, float(lr) * FINE_TUNE_LR_FACTOR, "top"))
    return tuple(plan)


def set_trainable(model, part: str) -> int:
    """Train `part` of the model: "all", "head" (the new head only) or "top" (the head and the backbone's top
    FINE_TUNE_FRACTION of layers, BatchNorm excluded); returns how many layers with weights train."""
    import keras

    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    backbone = [layer for layer in layers if layer.name not in HEAD_LAYERS and not layer.name.startswith("pre_")]
    top = set(id(layer) for layer in backbone[int(len(backbone) * (1 - FINE_TUNE_FRACTION)):])
    for layer in layers:
        if layer.name.startswith("pre_"):
            layer.trainable = False  # fixed preprocessing
        elif layer.name in HEAD_LAYERS or part == "all":
            layer.trainable = True
        else:  # the Keras guide: BatchNorm stays in inference mode while fine-tuning
            layer.trainable = part == "top" and id(layer) in top \
                and not isinstance(layer, keras.layers.BatchNormalization)
    return sum(1 for layer in layers if layer.trainable and layer.weights)


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
