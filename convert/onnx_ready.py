"""A copy of a Keras 3 model that tf2onnx 1.17 can convert, the same function in other ops (convert.onnx_export).

Two Keras 3 layers trace to TensorFlow ops tf2onnx has no handler for (ConvNeXt has both):
- A grouped Conv2D. Keras 3's TensorFlow backend runs any convolution whose input channels differ from the
  kernel's inside a nested `tf.function(jit_compile=True)` ("grouped convolutions are broken on CPU without XLA",
  keras/src/backend/tensorflow/nn.py), which grappler does not inline: tf2onnx sees a StatefulPartitionedCall
  (onnx/tensorflow-onnx#2099). ConvNeXt's 7x7 "depthwise" convolutions are Conv2D(groups=channels=filters): the
  same computation as DepthwiseConv2D with the kernel (kh, kw, 1, C) laid out as (kh, kw, C, 1).
- The exact GELU. tf.nn.gelu(approximate=False) is written with Erfc since TensorFlow 2.15, and tf2onnx converts
  Erf but not Erfc (onnx/tensorflow-onnx#2347; the rewriter in #2463 is unmerged and needs opset 20). It becomes
  0.5 x (1 + erf(x / sqrt 2)), the same function (erfc(-z) = 1 + erf(z)).
Every other layer is the model's own (shared, not copied)."""

from __future__ import annotations

import math
from typing import Any


def _gelu_erf(x: Any) -> Any:
    from keras import ops

    return 0.5 * x * (1.0 + ops.erf(x / math.sqrt(2.0)))


def _depthwise_of(layer: Any) -> Any | None:
    """The DepthwiseConv2D equal to a grouped Conv2D with one input channel per group and one filter per group."""
    from keras import layers

    if type(layer) is not layers.Conv2D:
        return None
    cfg = layer.get_config()
    channels = layer.input.shape[-1]
    if cfg.get("groups", 1) <= 1 or not cfg["groups"] == cfg["filters"] == channels or \
            cfg.get("data_format") != "channels_last":
        return None
    dw = layers.DepthwiseConv2D(cfg["kernel_size"], strides=cfg["strides"], padding=cfg["padding"],
                                dilation_rate=cfg["dilation_rate"], use_bias=cfg["use_bias"],
                                activation=cfg["activation"], name=cfg["name"])
    dw.build(layer.input.shape)
    weights = layer.get_weights()
    kh, kw = weights[0].shape[:2]
    dw.set_weights([weights[0].reshape(kh, kw, channels, 1), *weights[1:]])
    return dw


def _exact_gelu(layer: Any) -> bool:
    from keras import layers

    return type(layer) is layers.Activation and layer.get_config().get("activation") == "gelu"


def onnx_ready(model: Any) -> tuple[Any, list[str]]:
    """(the model, or its copy with the layers above rewritten; what was rewritten, one line per kind)."""
    import keras
    from keras import layers

    grouped = {layer.name: dw for layer in model.layers if (dw := _depthwise_of(layer)) is not None}
    gelus = {layer.name: layers.Activation(_gelu_erf, name=layer.name) for layer in model.layers
             if _exact_gelu(layer)}
    if not grouped and not gelus:
        return model, []
    replaced = {**grouped, **gelus}  # each replacement built once, with its weights, and handed to the clone

    def clone(layer: Any) -> Any:
        return replaced.get(layer.name, layer)

    notes = [f"{len(grouped)} grouped Conv2D exported as DepthwiseConv2D"] if grouped else []
    notes += [f"{len(gelus)} exact GELU exported with Erf instead of Erfc"] if gelus else []
    return keras.models.clone_model(model, clone_function=clone), notes
